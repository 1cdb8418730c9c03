"""`RPC`: the blocking client; threads may share one connection and their calls overlap."""

from __future__ import annotations

import contextlib
import errno
import inspect
import socket
import threading
import time
import weakref
from collections.abc import Generator
from typing import Any, Unpack

from ..address import Address
from ..context import MessageSizes
from ..errors import ConnectionLostError, DeadlineExceeded, MPRPCError
from ..protocol import (
    CallFailed,
    ClientConnection,
    ClientEvent,
    ConnectionFailed,
    Pong,
    Result,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from .base import (
    BaseRPC,
    ClientOptions,
    Flow,
    Pending,
    StreamBuffer,
    forget_in_forked_children,
)
from .interceptors import ClientCallContext
from .sync_io import SocketIO, wait_time


class _DeadlinePassed(Exception):
    """Our own deadline ran out while waiting (distinct from a server's 504)."""


class _Buffer(StreamBuffer):
    __slots__ = ("cond",)

    def __init__(self, cond: threading.Condition) -> None:
        super().__init__()
        self.cond = cond

    def wake(self) -> None:
        self.cond.notify()  # the client's lock is held: items are filed under it


class _Call(Pending):
    __slots__ = ("answered", "deadline", "event", "timeout")

    def __init__(
        self, method: str, deadline: float | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(method)
        self.deadline = deadline  # time.monotonic(): a stream's items after it are dropped
        self.timeout = timeout
        self.event: ClientEvent | None = None  # the first reply: result, error, stream start
        # Held until `event` is set: the caller waits by acquiring it (cheaper than a
        # Condition, and the caller needs no other lock to wait).
        self.answered = threading.Lock()
        self.answered.acquire()

    def answer(self, event: ClientEvent) -> None:
        """Give the call its first reply (once; holding the client's lock)."""
        if self.event is None:
            self.event = event
            self.answered.release()


class RPC(BaseRPC):
    """Blocking MPRPC client: `with RPC("tcp://user:pw@host:port") as rpc: rpc.add(1, 2)`.

    Options as `BaseRPC`. A stream call returns a generator; closing it early cancels the
    stream. Threads may share one client and their calls overlap on its connection: a
    reader thread files each reply and stream item under its call, and every thread
    waits within its own deadline; `heart_beat` pings from that thread too. `close()`
    from another thread fails the calls in progress with ConnectionLostError. After the
    server closed an idle connection, the next call connects again; a call in flight
    when the connection ends fails with ConnectionLostError (or the server's error).
    """

    _pending: dict[str, _Call]

    def __init__(self, addr: str | Address, **options: Unpack[ClientOptions]) -> None:
        for interceptor in options.get("interceptors", ()):
            # An async interceptor here would make every call return an unawaited
            # coroutine and send nothing: refuse it where the mistake is made.
            call = getattr(type(interceptor), "__call__", None)  # noqa: B004 (an object)
            if inspect.iscoroutinefunction(interceptor) or inspect.iscoroutinefunction(call):
                raise TypeError(
                    f"RPC(interceptors=...): {interceptor!r} is async; the blocking client "
                    "takes plain functions (def (ctx, call_next)); for ClientTelemetry "
                    "pass its .sync"
                )
        super().__init__(addr, **options)
        self._io: SocketIO | None = None
        # Guards the connection state, the pending calls and their buffers: held briefly,
        # never while waiting for the network.
        self._lock = threading.Lock()
        self._connecting = threading.Lock()  # one connect at a time
        # The socket of a login in progress: close() from another thread shuts it down.
        self._login_io: SocketIO | None = None
        self._opening: list[socket.socket] | None = None  # see _connect
        self._paused = False  # the reader waits: every call in flight is a full stream
        self._resume = threading.Condition(self._lock)
        forget_in_forked_children(self)

    # -- connection ------------------------------------------------------------------

    def _open(self) -> bool:
        return self._io is not None

    def connect(self) -> RPC:
        """Open the connection and authenticate.

        Raises:
            LoginError: the server refused the credentials.
            ConnectionLostError: the server cannot be reached within `connect_timeout`.
            RemoteProtocolError: the server's welcome reply is malformed.
        """
        with self._connecting:
            self._connect(self.connect_timeout)
        return self

    def _reconnect(self, method: str, deadline: float | None, timeout: float | None) -> None:
        """Connect again inside a call: within the call's deadline, if it ends before
        `connect_timeout` (DeadlineExceeded then)."""
        if deadline is None or deadline - time.monotonic() >= self.connect_timeout:
            self.connect()
            return
        expired = DeadlineExceeded(
            f"call {method!r} did not finish within its {timeout}s deadline "
            f"(connecting again to {self.address})"
        )
        if not self._connecting.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise expired
        try:
            self._connect(max(0.0, deadline - time.monotonic()), expired)
        finally:
            self._connecting.release()

    def _connect(self, limit: float, expired: MPRPCError | None = None) -> None:
        """Connect and log in within `limit` seconds (holding `_connecting`); past it,
        raise `expired` (default: "could not connect within connect_timeout")."""
        if self.connected:
            return
        if limit <= 0:  # a socket timeout of 0 would mean "non-blocking", not "expired"
            raise expired or self._connect_timed_out()
        deadline = time.monotonic() + limit
        # The socket once connected, for close() to end a TLS handshake with (see close).
        opening: list[socket.socket] = []
        with self._lock:
            conn = self._new_connection()
            self._opening = opening
        try:
            io = SocketIO.open(
                self.address.host, self.address.port, limit, self._ssl, opening.append
            )
        except OSError as exc:
            with self._lock:
                by_user = self._opening is not opening  # close() took it meanwhile
                self._opening = None
            if by_user:
                raise self._closed_error() from None
            if isinstance(exc, TimeoutError):
                raise expired or self._connect_timed_out() from None
            raise self._connect_failed(exc) from exc
        with self._lock:
            if self._opening is not opening:  # close() came as the handshake ended
                io.close()
                raise self._closed_error()
            self._opening = None
            self._login_io = io
        try:
            welcome = self._log_in(io, conn, deadline, expired)
        except BaseException as exc:
            io.close()
            with self._lock:
                by_user = self._login_io is not io  # close() took it meanwhile
                self._login_io = None
                self._lost_connection(self._closed_error(), by_user=by_user)
            if by_user and isinstance(exc, ConnectionLostError | OSError):
                raise self._closed_error() from None
            raise
        with self._lock:
            if self._login_io is not io:  # close() came just after the welcome
                io.close()
                self._lost_connection(self._closed_error(), by_user=True)
                raise self._closed_error()
            self._login_io = None
            self._io = io
            self._welcomed(welcome)
            threading.Thread(
                target=_read_until_closed,
                args=(weakref.ref(self), io, conn, self.heart_beat),
                name=f"pymprpc reader for {self.address}",
                daemon=True,
            ).start()

    def _log_in(
        self,
        io: SocketIO,
        conn: ClientConnection,
        deadline: float,
        expired: MPRPCError | None,
    ) -> Welcome:
        """Send the auth request and wait for the welcome reply, in this thread."""
        try:
            conn.start()
            io.write(conn.chunks_to_send())
            while True:
                if not io.readable(deadline - time.monotonic()):
                    raise expired or self._connect_timed_out(logging_in=True)
                data = io.recv()
                if not data:
                    raise self._lost_error()
                events, _ = self._receive(data)
                for event in events:
                    if isinstance(event, Welcome):
                        return event
                    if isinstance(event, ConnectionFailed):
                        raise self._server_error(event.error)
        except MPRPCError:
            raise  # ConnectionLostError is an OSError too: not wrapped twice
        except OSError as exc:
            raise self._lost_error(exc) from exc

    def close(self) -> None:
        """Close the connection (from any thread: calls in progress then fail)."""
        with self._lock:
            io = self._io
            if io is not None:
                self._drop(io, self._closed_error(), by_user=True)
            else:  # ended already (an idle close, a fork): it stays closed all the same
                self._lost_connection(self._closed_error(), by_user=True)
            login_io, self._login_io = self._login_io, None
            opening, self._opening = self._opening, None
        if io is not None:
            io.close()
        if login_io is not None:
            login_io.close()  # the connecting thread wakes and raises ConnectionLostError
        for sock in opening or ():
            # Its TLS handshake (in the connecting thread) wakes, and connect() raises
            # ConnectionLostError; the connecting thread closes the socket.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self, io: SocketIO, error: MPRPCError, *, by_user: bool = False) -> None:
        """Fail every call in flight on `io` with `error` (holding the lock)."""
        if io is not self._io:
            return  # already dropped
        self._lost_connection(error, by_user=by_user)
        self._io = None
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.stream is not None:
                call.stream.finish(error)
            else:
                call.answer(ConnectionFailed(error))
        self._paused = False
        self._resume.notify_all()

    def _forked(self) -> None:
        """(In a child process just forked.) The connection, its reader thread and the
        calls in flight are the parent's: leave its socket to it, forget the calls, and
        connect again on the next call, as after the server closed an idle connection.

        The locks are made anew: a thread of the parent (which does not exist here) may
        have held one when the process forked.
        """
        self._lock = threading.Lock()
        self._connecting = threading.Lock()
        self._resume = threading.Condition(self._lock)
        io, self._io = self._io, None
        login_io, self._login_io = self._login_io, None
        self._opening = None
        for each in (io, login_io):
            if each is not None:
                each.abandon()
        error = ConnectionLostError(
            f"the connection to {self.address} belongs to the parent process; this "
            "process connects again on its next call"
        )
        pending, self._pending = self._pending, {}
        with self._lock:
            for call in pending.values():
                # A stream opened before the fork (a generator this thread holds) ends with
                # the error; its condition was on the parent's lock. Other calls were the
                # parent's threads': nobody here waits for them.
                buffer = call.stream
                if buffer is not None:
                    assert isinstance(buffer, _Buffer)
                    buffer.cond = threading.Condition(self._lock)
                    buffer.finish(error)
        self._watched = {}
        self._received = 0
        self._paused = False
        if io is not None:
            self._lost_connection(error)

    def __enter__(self) -> RPC:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the reader thread -----------------------------------------------------------

    def _on_data(self, io: SocketIO, data: bytes) -> MPRPCError | None:
        """(The reader thread.) File what `data` completes; the error that ends the
        connection, if any. Waits here while reading is paused for full streams."""
        with self._lock:
            if io is not self._io:
                return self._closed_error()  # closed meanwhile
            events, nbytes = self._receive(data)
            error = None
            for event in events:
                if type(event) is not Pong:
                    error = self._file(io, event, nbytes) or error
            while self._paused and io is self._io:
                self._resume.wait()
            return error

    def _ping(self, io: SocketIO, conn: ClientConnection) -> None:
        chunks: list[bytes] = []
        with self._lock:
            if not conn.closed:
                conn.send_ping()
                chunks = conn.chunks_to_send()
        if chunks:
            io.send_soon(chunks)

    def _end(self, io: SocketIO, error: MPRPCError) -> None:
        with self._lock:
            self._drop(io, error)

    def __del__(self) -> None:
        # Dropped without close(): the reader thread holds only a weak reference, so
        # this runs; closing the socket ends that thread.
        io = self.__dict__.get("_io")
        if io is not None:
            io.close()

    def _file(self, io: SocketIO, event: ClientEvent, nbytes: int) -> MPRPCError | None:
        """File one event under its call (holding the lock); the error that ends the
        connection, if it is one."""
        if type(event) is StreamItem:
            call = self._pending.get(event.id)
            if call is not None:
                if call.deadline is not None and time.monotonic() >= call.deadline:
                    # Received after its deadline (a server that does not know it, with
                    # features=(), keeps sending): not returned. The stream ends there,
                    # after the items received in time, and is cancelled.
                    self._expire(event.id, call.stream, call.method, call.timeout)
                    return None
                flow = self._file_item(event.id, call, event.value, nbytes)
                if flow is Flow.PAUSE:
                    self._paused = True
                elif flow is Flow.OVERFLOW:
                    self._send_cancel(io, event.id)  # queued: the reader does not wait
        elif type(event) is StreamStart:
            call = self._pending.get(event.id)
            if call is not None:
                call.stream = _Buffer(threading.Condition(self._lock))
                call.answer(event)
        elif isinstance(event, Result | CallFailed | StreamEnd):
            call = self._pending.pop(event.id, None)
            if call is None:
                return None
            if call.stream is not None:
                call.stream.finish(event.error if isinstance(event, CallFailed) else None)
            else:
                call.answer(event)
        elif isinstance(event, ConnectionFailed):
            return self._server_error(event.error)
        return None

    def _expire(
        self, id: str, buffer: StreamBuffer | None, method: str, timeout: float | None
    ) -> None:
        """(Holding the lock.) Stream `id` reached its deadline: it ends there, with
        DeadlineExceeded after the items received in time, and is cancelled."""
        if buffer is not None:
            buffer.finish(self._deadline_error(method, timeout, id))
        if self._io is not None:
            self._send_cancel(self._io, id)

    def _send_cancel(self, io: SocketIO, id: str) -> None:
        """Tell the server to stop call `id` (holding the lock; does not wait)."""
        self._pending.pop(id, None)
        self._unwatch(id)
        conn = self._conn
        if conn is not None and conn.send_cancel(id):
            io.send_soon(conn.chunks_to_send())

    def _consumed(self) -> None:
        """(Holding the lock.) A call started or a stream was read: a reader paused for
        full streams may go on."""
        if self._paused and self._may_resume():
            self._paused = False
            self._resume.notify_all()

    # -- calls -----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        returns: bool,
        timeout: float | None,
        metadata: dict[str, str] | None = None,
        oneway: bool = False,
        deadline: float | None = None,
        sizes: MessageSizes | None = None,
    ) -> tuple[str, _Call | None]:
        if self._reconnect_due:
            self._reconnect(method, deadline, timeout)
        io = self._io
        if io is None:
            self._check_call()  # raises, saying how to connect
            raise AssertionError("unreachable")
        left = None if deadline is None else deadline - time.monotonic()
        if not io.acquire(left):
            # Other threads' sends held the connection past the deadline: the error any
            # call past its deadline gets (no ID yet: nothing was sent).
            raise self._deadline_error(method, timeout, None)
        try:
            with self._lock:
                if io is not self._io:
                    raise self._closed_error()
                conn = self._check_call()
                id = conn.send_call(
                    method,
                    args,
                    kwargs,
                    returns=returns,
                    deadline=timeout,
                    metadata=metadata,
                    oneway=oneway,
                )
                data = conn.chunks_to_send()  # with the call: nothing else is queued
                if sizes is not None:
                    self._watch(id, sizes, data, returns)
                call = None
                if returns:
                    call = self._pending[id] = _Call(method, deadline, timeout)
                    self._consumed()
            try:
                # Up to the deadline: past it (a peer not reading a large request) the
                # rest goes before the next message, and the call's wait, already past
                # its deadline, cancels the call and raises DeadlineExceeded.
                io.write(data, deadline)
            except OSError as exc:
                with self._lock:
                    if io is self._io:
                        error: MPRPCError = self._lost_error(exc)
                        self._drop(io, error)
                    else:
                        # Dropped while this call was being sent (close() from another
                        # thread, or the reader saw the end): failed as the calls that
                        # were waiting were, not with the closed socket's own error.
                        event = call.event if call is not None else None
                        if isinstance(event, ConnectionFailed):
                            error = event.error
                        elif exc.errno == errno.EBADF:  # its socket closed under it
                            error = self._closed_error()
                        else:
                            error = self._lost_error(exc)
                io.close()
                raise error from exc
        finally:
            io.release()
        return id, call

    def _call(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        ctx: ClientCallContext | None = None,
    ) -> Any:
        deadline = time.monotonic() + timeout if timeout is not None else None
        metadata = None
        sizes = None
        if ctx is not None:
            metadata = ctx.metadata.to_dict() if ctx.metadata else None
            sizes = ctx.sizes
        id, call = self._send(
            method, args, kwargs, True, timeout, metadata, deadline=deadline, sizes=sizes
        )
        assert call is not None
        if timeout is not None and timeout <= 0:
            # Expired before it was sent (a budget already spent): never its value, even
            # if the reply were there by now, as with AsyncRPC.
            self._cancel(id)
            raise self._deadline_error(method, timeout, id)
        try:
            event = self._wait(call, deadline)
        except _DeadlinePassed:
            self._cancel(id)
            raise self._deadline_error(method, timeout, id) from None
        except BaseException:
            self._cancel(id)
            raise
        value = self._outcome(method, event, timeout, ctx)
        if isinstance(call.stream, _Buffer):
            stream = self._stream(id, call.stream, method, timeout, deadline)
            next(stream)  # to its first step: closing or dropping it now cancels the stream
            return stream
        return value

    def _wait(self, call: _Call, deadline: float | None) -> ClientEvent:
        if deadline is None:
            call.answered.acquire()
        else:
            while not call.answered.acquire(timeout=wait_time(deadline - time.monotonic())):
                if time.monotonic() >= deadline:  # (else a long deadline, waited in steps)
                    raise _DeadlinePassed
        assert call.event is not None
        return call.event

    def _stream(
        self,
        id: str,
        buffer: _Buffer,
        method: str,
        timeout: float | None,
        deadline: float | None,
    ) -> Generator[Any, None, None]:
        """The items of stream `id`, after one None for `_call` to take (run to there, the
        generator's `finally` runs when it is closed or dropped before its first item,
        which cancels the stream; a generator never started runs nothing). The call's
        deadline covers the whole stream: waiting for an item past it cancels the stream
        and raises DeadlineExceeded."""
        finished = False
        try:
            yield None
            while True:
                with self._lock:
                    if deadline is not None and not buffer.done and time.monotonic() >= deadline:
                        # Past the deadline with items still coming (a server that does not
                        # know the deadline keeps sending): stop the stream; the items
                        # received before it are still returned, then the error.
                        self._expire(id, buffer, method, timeout)
                    while not buffer.items and not buffer.done:
                        if deadline is None:
                            buffer.cond.wait()
                        elif (
                            not buffer.cond.wait(wait_time(deadline - time.monotonic()))
                            and time.monotonic() >= deadline
                        ):
                            if buffer.items or buffer.done:
                                break
                            raise self._deadline_error(method, timeout, id)
                    if not buffer.items:
                        finished = True
                        if buffer.error is not None:
                            raise self._call_error(buffer.error, method, timeout)
                        return
                    item = buffer.pop()
                    self._consumed()
                yield item
        finally:
            if not finished:
                self._cancel(id)

    def _cancel(self, id: str) -> None:
        with self._lock:
            io = self._io
            if io is None:
                self._pending.pop(id, None)
                self._unwatch(id)
            else:
                self._send_cancel(io, id)
            self._consumed()

    def _delay(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> str:
        metadata, sizes = self._sent_with(ctx)
        return self._send(method, args, kwargs, False, None, metadata, sizes=sizes)[0]

    def _notify(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> None:
        metadata, sizes = self._sent_with(ctx)
        self._send(method, args, kwargs, False, None, metadata, oneway=True, sizes=sizes)


def _read_until_closed(
    ref: weakref.ref[RPC], io: SocketIO, conn: ClientConnection, interval: float | None
) -> None:
    """The reader thread of one connection: reads replies and files them under their
    calls until the connection ends; with `interval`, pings when nothing came for that
    long and ends the connection when nothing answers within it. It holds the client only
    while filing, so a client dropped without close() is collected and its socket closed."""
    alive_until = time.monotonic() + (interval or 0)  # next ping, or the pong's deadline
    pinged = False
    while True:
        failure: OSError | None = None
        data = b""
        try:
            if interval is not None and not io.readable(alive_until - time.monotonic()):
                client = ref()
                if client is None:
                    break
                if pinged:
                    client._end(io, client._heartbeat_error(interval))
                    break
                client._ping(io, conn)
                del client
                pinged, alive_until = True, time.monotonic() + interval
                continue
            data = io.recv()
        except OSError as exc:
            failure = exc
        client = ref()
        if client is None:
            break
        if not data:
            client._end(io, client._lost_error(failure))
            break
        error = client._on_data(io, data)
        del client
        io.flush()  # a cancel or ping the socket had no room for
        if error is not None:
            ref_client = ref()
            if ref_client is not None:
                ref_client._end(io, error)
            break
        # Anything received shows the connection alive (a pong among it).
        pinged, alive_until = False, time.monotonic() + (interval or 0)
    io.close()
