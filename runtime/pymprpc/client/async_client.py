"""`AsyncRPC`: the asyncio client. Many calls in flight on one connection, matched by ID."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, Self, TypeAlias, Unpack

from ..address import Address
from ..context import MessageSizes, Metadata
from ..errors import (
    ConnectionLostError,
    DeadlineExceeded,
    LocalProtocolError,
    MPRPCError,
    ParamError,
)
from ..protocol import (
    CallFailed,
    ClientConnection,
    ClientEvent,
    ConnectionFailed,
    Feature,
    Pong,
    Result,
    State,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from ..protocol.framing import coalesce
from ..readbuffer import ReusedBufferProtocol
from ..schema import INT_MAX, INT_MIN
from .base import (
    BaseRPC,
    ClientOptions,
    Flow,
    Pending,
    StreamBuffer,
    forget_in_forked_children,
)
from .common import CLIENT_DEFAULT
from .interceptors import ClientCallContext

# Calls sent in one loop pass are written together at its end, but a batch goes out as
# soon as it holds this many pieces (a call is one or two): the server starts on the
# first ones while the rest are being made. Batching a whole pass (64 pipelined calls in
# one write) let the two processes settle into taking turns, each idle while the other
# worked on the one big batch: W2 on uvloop ran at 0.8x-0.6x of asyncio, whose timing
# happened to keep two batches in flight (bench/README.md, "uvloop and the typed path").
MAX_BATCH = 16
# A call on a connection with no call in flight, made when no `AsyncRPC` of this process
# has started a call for longer than this (seconds), first checks that connection for
# input the loop has not read (see AsyncRPC._read_first): an idle close or a restart that
# happened while the client's loop was not running (run_until_complete per call). Calls
# made back to back, or many connections' calls, check nothing.
_FRESH: Final = 0.05
# When an AsyncRPC of this process last started a call on a connection with none in
# flight (time.monotonic()).
_last_call = 0.0
_monotonic: Final = time.monotonic
# Loop passes a call gives the loop to read that input: two suffice on asyncio's loop for
# a close; a late reply of a call given up on (a loop pass reads 256 KiB of it) takes
# more. A peer that keeps sending (a stream it was not told to cancel) meets this bound.
_READ_FIRST_PASSES: Final = 256


class _Buffer(StreamBuffer):
    __slots__ = ("expiry", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None  # its deadline (see AsyncStream)

    def finish(self, error: BaseException | None = None) -> None:
        super().finish(error)
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class AsyncStream:
    """Async iterator over a server stream.

    `await stream.aclose()`, `async with stream:`, or dropping the last reference cancels
    the stream on the server (its generator is closed) when `cancel` was negotiated.
    """

    def __init__(
        self,
        client: AsyncRPC,
        id: str,
        method: str,
        buffer: _Buffer,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self._client = client
        self.id = id
        self.method = method
        # The call's deadline (loop time) covers the whole stream: waiting for an item
        # past it cancels the stream and raises DeadlineExceeded.
        self._timeout = timeout
        self._deadline = deadline
        # The client holds only the buffer, so dropping this object can cancel the stream.
        self._buffer = buffer
        loop = client._state.loop
        if deadline is not None and loop is not None and not buffer.done:
            # Items received after the deadline are not returned: at the deadline the
            # stream ends (after the items received before it) and is cancelled, even if
            # nobody is reading it then (a server that does not know the deadline, with
            # `features=()`, keeps sending).
            buffer.expiry = loop.call_at(deadline, _expire, client, id, method, buffer, timeout)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        buffer = self._buffer
        if self._deadline is not None and not buffer.done:
            self._check_deadline()
        while not buffer.items:
            if buffer.error is not None:
                raise self._client._call_error(buffer.error, self.method, self._timeout)
            if buffer.done:
                raise StopAsyncIteration
            client = self._client
            loop = client._state.loop
            if loop is not None and loop.is_closed():
                # Read on a new loop while its connection's loop is gone (no call made
                # here yet, which would notice it): nothing would ever fill it.
                client._leave_closed_loop()  # ends this stream with that error
                if not buffer.done:  # (not the client's to end: already forgotten)
                    buffer.finish(ConnectionLostError(f"{self!r} ended with its event loop"))
                continue
            buffer.waiter = asyncio.get_running_loop().create_future()
            try:
                if self._deadline is None:
                    await buffer.waiter
                else:
                    async with asyncio.timeout_at(self._deadline):
                        await buffer.waiter
            except TimeoutError:
                if buffer.items or buffer.done:
                    continue
                self._close()
                raise self._client._deadline_error(self.method, self._timeout, self.id) from None
            finally:
                buffer.waiter = None
        item, nbytes = buffer.items.popleft()  # StreamBuffer.pop, inline
        buffer.size -= nbytes
        client = self._client
        if client._state.reading_paused:  # (_consumed's own first test, without its frame)
            client._consumed()
        return item

    def _check_deadline(self) -> None:
        """Past the deadline with items still coming (a server that does not know the
        deadline keeps sending): stop the stream; the items received before it are
        still returned, then DeadlineExceeded."""
        loop = self._client._state.loop
        assert self._deadline is not None
        if loop is not None and loop.time() >= self._deadline:
            _expire(self._client, self.id, self.method, self._buffer, self._timeout)

    async def aclose(self) -> None:
        """Stop the stream: the server is told to close its generator (if negotiated)."""
        self._close()

    def _close(self) -> None:
        buffer = self._buffer
        if not buffer.done:
            buffer.finish()
            self._client._cancel(self.id)
        buffer.clear()
        self._client._consumed()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close()

    def __del__(self) -> None:
        # Leaving `async for` early does not close an async iterator; dropping it does,
        # so a stream nobody reads any more is cancelled on the server too.
        if not self._buffer.done:
            loop = self._client._state.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._close)

    def __repr__(self) -> str:
        return f"<AsyncStream {self.method!r} id={self.id}>"


def _expire(client: AsyncRPC, id: str, method: str, buffer: _Buffer, timeout: float | None) -> None:
    """Stream `id` reached its deadline: it ends there, with DeadlineExceeded after the
    items it received in time, and is cancelled on the server."""
    buffer.expiry = None
    if not buffer.done:
        buffer.finish(client._deadline_error(method, timeout, id))
        client._cancel(id)


_READY: Final = State.READY
_FIRST: Final = asyncio.FIRST_COMPLETED
# The keyword arguments of a call that has none (a typed client's): never changed.
_NO_KWARGS: Final[dict[str, Any]] = {}

# A call waiting for its first reply, as the client keeps it by ID: its future and its
# method (a plain tuple: one is made for every call). Once its stream starts, a
# `Pending` with the stream's buffer takes its place.
_Waiting: TypeAlias = tuple[asyncio.Future[Any], str]


class _Outcome:
    """What a call's future holds when its outcome is an event for `BaseRPC._outcome`
    (an error, a stream's start with its buffer, a deprecated result, response
    metadata) rather than a plain value."""

    __slots__ = ("event", "stream")

    def __init__(self, event: ClientEvent, stream: _Buffer | None = None) -> None:
        self.event = event
        self.stream = stream


def _settle(future: asyncio.Future[Any], event: ClientEvent, stream: _Buffer | None = None) -> None:
    """The call waiting on `future` ends with `event` (raised or unwrapped by the call)."""
    if not future.done():
        future.set_result(_Outcome(event, stream))


class _Typed(Protocol):
    """What a typed call brings (`pymprpc.schema.Signature`): its arguments' encoder and
    its result's checker, run by the call itself (no coroutine of its own)."""

    def encode_args(self, *args: Any, method: str = "") -> list[Any]: ...

    # `wire_args`, compiled for the signature's parameters (read per call, not a method).
    @property
    def _wire_args(self) -> Callable[[Sequence[Any]], Sequence[Any]]: ...

    def decode_result(self, value: Any) -> Any: ...

    # The one type a result is returned as it is with (an int within 64 bits), read per
    # call: decode_result's own first test, without its frame. None: anything; otherwise
    # some other object: decode_result decides.
    @property
    def _result_exact(self) -> Any: ...

    def unsendable(self, args: Sequence[Any], method: str = "") -> ParamError | None: ...


class _State:
    """What an `AsyncRPC`'s every call reads or writes, kept in slots: `AsyncRPC` has a
    `__getattr__` (method proxies), and CPython 3.11 never specializes an attribute read
    on such a class (~300 instructions a read; bench/README.md). A call reads the
    client's `_state` once, then these at the cost of a slot. One per client, for its
    whole life; `_reconnect_due` is also the client's (a property). The public `timeout`
    stays a plain attribute of the client (subclasses, `vars()` and copies see it as
    before), read once per call."""

    __slots__ = (
        "batching",
        "loop",
        "outbox",
        "protocol",
        "reading_paused",
        "reconnect_due",
        "transport",
    )

    def __init__(self) -> None:
        # The next call connects again first (see `BaseRPC._lost_connection`).
        self.reconnect_due = False
        # The current connection: its protocol (None once dropped) and transport.
        self.protocol: _Protocol | None = None
        self.transport: asyncio.Transport | None = None
        # The loop the client connected on (None before its first connect).
        self.loop: asyncio.AbstractEventLoop | None = None
        # Messages sent in this loop pass, written at its end (see `AsyncRPC._write`).
        self.outbox: list[bytes] = []
        self.batching = False
        # Reading paused because every stream in flight is full (see `Flow.PAUSE`).
        self.reading_paused = False


class _Protocol(ReusedBufferProtocol):
    """One connection of an `AsyncRPC`, and what its calls read on every call and every
    reply: its core, its loop, the client's map of calls in flight. They are kept here,
    in slots, rather than read off the client: `AsyncRPC` has a `__getattr__` (method
    proxies), and CPython 3.11 never specializes an attribute read on such a class
    (~300 instructions more per read, a dozen reads per call; bench/README.md)."""

    __slots__ = ("client", "conn", "heard", "loop", "measure", "pending")  # one per connection

    def __init__(
        self, client: AsyncRPC, conn: ClientConnection, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.client = client
        # None once the client dropped this connection (`detach`): its late reads are
        # ignored.
        self.conn: ClientConnection | None = conn
        self.loop = loop
        # Something was received since the heartbeat last looked (AsyncRPC._heartbeat).
        self.heard = False
        # The client's map (the same object: the client replaces it only in _fail_all,
        # after dropping its connection) and whether replies' sizes are measured.
        self.pending = client._pending
        self.measure = client._measure

    def detach(self) -> None:
        """The client no longer uses this connection: ignore what it still reads."""
        self.conn = None

    # asyncio reads into the shared buffer and calls buffer_updated, which hands a copy
    # of the bytes to data_received; uvloop calls data_received itself (see readbuffer).
    # The fast path is here, so that both loops take it.
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return  # an earlier connection's late read
        self.heard = True
        client = self.client
        if self.measure:  # an interceptor wants each reply's size: the general path
            client._on_data(data)
            return
        try:
            got = conn.receive_result(data)
        except Exception as exc:  # noqa: BLE001 - never a bare error from the reader
            got = [client._unreadable(conn, exc)]
        if type(got) is tuple:
            # The usual read: one plain result of a call in flight, straight to its future.
            client._received = 0
            waiting = self.pending.pop(got[0], None)
            if type(waiting) is tuple:  # (a stream's Pending gets no plain result)
                future = waiting[0]
                if not future.done():
                    future.set_result(got[1])
            return
        client._on_events(got, len(data))  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._state.protocol is self:  # not an earlier connection closing late
            self.client._on_lost(exc)


class AsyncRPC(BaseRPC):
    """Asyncio MPRPC client: `async with AsyncRPC("tcp://user:pw@host:port") as rpc:`,
    then `await rpc.add(1, 2)`; a stream call returns an `AsyncStream`.

    Options as `BaseRPC` (`loop` is accepted for pymprpc 0.0.3 and ignored: the running
    loop is used). After the server closed an idle connection, the next call connects
    again; a call in flight when the connection ends fails with ConnectionLostError (or
    the server's error).
    """

    _how_to_connect = "use 'async with AsyncRPC(...)' or await connect()"
    _pending: dict[str, _Waiting | Pending]
    _state: _State

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """A client with its per-call state (`_State`) made before any `__init__` runs
        (`BaseRPC.__init__` sets `_reconnect_due` in it)."""
        client = super().__new__(cls)
        client._state = _State()
        return client

    def __init__(
        self,
        addr: str | Address,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(addr, **options)
        self._welcome: asyncio.Future[Welcome] | None = None
        self._pong: asyncio.Future[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[None] | None = None
        # The connect() task close() cancelled (its waiters raise the closed error).
        self._closed_while_connecting: asyncio.Future[None] | None = None
        forget_in_forked_children(self)

    @property
    def _reconnect_due(self) -> bool:
        return self._state.reconnect_due

    @_reconnect_due.setter
    def _reconnect_due(self, value: bool) -> None:
        self._state.reconnect_due = value

    # -- connection ------------------------------------------------------------------

    def _open(self) -> bool:
        return self._state.transport is not None

    async def connect(self) -> AsyncRPC:
        """Open the connection and authenticate (callers arriving meanwhile share it).

        Raises:
            LoginError: the server refused the credentials.
            ConnectionLostError: the server cannot be reached within `connect_timeout`.
            RemoteProtocolError: the server's welcome reply is malformed.
        """
        state = self._state
        if state.loop is not None and state.loop.is_closed():
            self._leave_closed_loop()
        if self.connected:
            return self
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.ensure_future(self._connect())
            # Retrieved here: a caller whose own deadline ended the wait does not.
            task.add_done_callback(_retrieve)
            # Forgotten when it ends, whoever still waits: a waiter cancelled meanwhile
            # must not leave it for the next connect() to await, connecting nothing.
            task.add_done_callback(self._connect_ended)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and self._closed_while_connecting is task:
                raise self._closed_error() from None  # see close()
            raise
        return self

    def _connect_ended(self, task: asyncio.Future[None]) -> None:
        if self._connecting is task:
            self._connecting = None

    async def _connect(self) -> None:
        state = self._state
        loop = state.loop = asyncio.get_running_loop()
        conn = self._new_connection()
        self._welcome = loop.create_future()
        # Its error is raised by this connect when it awaits it; when connecting failed
        # before that (refused, timed out), nobody will: not a "never retrieved" log.
        self._welcome.add_done_callback(_retrieve)
        logging_in = False
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._drop_protocol()  # (dropped already when its connection ended)
                protocol = state.protocol = _Protocol(self, conn, loop)
                opening = loop.create_task(
                    loop.create_connection(
                        lambda: protocol,
                        self.address.host,
                        self.address.port,
                        ssl=self._ssl,
                    )
                )
                try:
                    # close() meanwhile (a TLS handshake can take long) ends it at once:
                    # it fails the welcome future with the error connect() raises.
                    await asyncio.wait((opening, self._welcome), return_when=_FIRST)
                except BaseException:
                    _discard(opening)  # timed out, or cancelled by close()
                    raise
                if not opening.done():
                    _discard(opening)
                    await self._welcome  # raises close()'s error
                transport, _ = opening.result()
                state.transport = transport
                logging_in = True
                conn.start()
                for chunk in conn.chunks_to_send():
                    transport.write(chunk)
                welcome = await self._welcome
        except TimeoutError:
            self._abort()
            raise self._connect_timed_out(logging_in) from None
        except MPRPCError:
            # Failed while logging in: raised as is, like RPC does (ConnectionLostError
            # is an OSError too, but it is not a failure to connect).
            self._abort()
            raise
        except OSError as exc:
            self._abort()
            raise self._connect_failed(exc) from exc
        except GeneratorExit:
            # This coroutine was collected unfinished (its loop ended mid-connect): the
            # client may be connected on another loop by now, which is none of its business.
            if self._conn is conn and state.loop is loop:
                if loop.is_closed():
                    self._leave_closed_loop()
                else:
                    self._abort()
            raise
        except BaseException:
            self._abort()
            raise
        self._welcomed(welcome)
        if self.heart_beat:
            self._heartbeat_task = loop.create_task(self._heartbeat(self.heart_beat))

    def _leave_closed_loop(self) -> None:
        """The loop this client connected on is closed (`asyncio.run` returned, a test's
        loop ended) and another one uses the client: forget that loop's connection
        without calling into it (its transport's socket closes when the transport is
        collected), and connect again on the next call, as after an idle close. Calls
        still pending there have no one awaiting them, and their futures cannot be
        settled on a closed loop."""
        transport = self._state.transport
        if transport is not None:
            # Ended for the server at once (asyncio's transport, a reference cycle, is
            # collected, and its descriptor closed, only by a garbage collection pass).
            sock = transport.get_extra_info("socket")
            # (uvloop's transport socket refuses shutdown() with a TypeError.)
            with contextlib.suppress(AttributeError, OSError, TypeError):
                sock.shutdown(socket.SHUT_RDWR)
        self._forget_connection(f"the event loop the connection to {self.address} ran on is closed")

    def _forked(self) -> None:
        """(In a child process just forked.) The connection and its loop are the parent's:
        forget them as a closed loop's (nothing here may call into that loop: its selector
        is the parent's too), and connect again on the next call, on the child's loop."""
        self._forget_connection(f"the connection to {self.address} belongs to the parent process")

    def _forget_connection(self, why: str) -> None:
        state = self._state
        self._drop_protocol()
        state.transport = None
        state.loop = None
        state.outbox = []
        state.batching = False
        state.reading_paused = False
        self._heartbeat_task = self._connecting = self._welcome = self._pong = None
        error = ConnectionLostError(why)
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            # A stream still held (read later, on the new loop) ends with the error; its
            # waiter was the old loop's. Plain calls' futures were the old loop's too, and
            # their awaiting tasks ended with it.
            if not isinstance(waiting, tuple) and waiting.stream is not None:
                buffer = waiting.stream
                assert isinstance(buffer, _Buffer)
                buffer.waiter = None
                buffer.finish(error)
        self._watched = {}
        self._lost_connection(error)

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionLostError."""
        state = self._state
        if state.loop is not None and state.loop.is_closed():
            self._leave_closed_loop()
        self._abort(by_user=True)  # (no call connects again, whatever ended it before)
        task = self._connecting
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            # A connect() under way ends now, with the closed error, at whatever point
            # it is (not started yet, connecting, logging in), and leaves nothing open.
            self._closed_while_connecting = task
            task.cancel()
        await asyncio.sleep(0)  # let the transport run its connection_lost callback

    async def reconnect(self) -> AsyncRPC:
        """Drop the current connection (if any) and connect again."""
        await self.close()
        return await self.connect()

    def _abort(self, error: MPRPCError | None = None, *, by_user: bool = False) -> None:
        error = error or self._closed_error()
        self._lost_connection(error, by_user=by_user)
        if self._heartbeat_task is not None:
            if self._heartbeat_task is not asyncio.current_task():
                self._heartbeat_task.cancel()
            self._heartbeat_task = None
        self._drop_protocol()  # its connection_lost, arriving later, is not news
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)  # close() while logging in ends connect()
        state = self._state
        if state.transport is not None:
            self._write_now()
            state.transport.close()
            state.transport = None
        state.outbox = []
        self._fail_all(error)

    def _drop_protocol(self) -> None:
        """Stop using the current connection's protocol (its reads are ignored)."""
        state = self._state
        if state.protocol is not None:
            state.protocol.detach()
            state.protocol = None

    async def __aenter__(self) -> AsyncRPC:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- events ----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        events, nbytes = self._receive(data)
        for event in events:
            self._on_event(event, nbytes)

    def _on_events(self, events: list[tuple[str, Any] | ClientEvent], size: int) -> None:
        """Act on `events` (plain results as `(id, value)`), parsed from `size` bytes."""
        events, nbytes = self._charge(events, size)
        pending_calls = self._pending
        limit = self.stream_buffer_size
        for event in events:
            if type(event) is tuple:
                waiting = pending_calls.pop(event[0], None)
                if type(waiting) is tuple:
                    future = waiting[0]
                    if not future.done():
                        future.set_result(event[1])
            elif type(event) is StreamItem:
                # A stream's item (W3: thousands per read): `_file_item` inline, as
                # StreamBuffer.push does it, for a stream that is open and not over its
                # limit after this item; past the limit `_overfull` decides, as there.
                pending = pending_calls.get(event.id)
                buffer = pending.stream if type(pending) is Pending else None
                if buffer is None or buffer.done:
                    self._on_event(event, nbytes)  # dropped (or a subclass's): as before
                    continue
                buffer.items.append((event.value, nbytes))
                buffer.size += nbytes
                waiter = buffer.waiter  # type: ignore[attr-defined]  # (ours: a _Buffer)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                if buffer.size > limit and len(buffer.items) > 1:  # (_full)
                    self._act_on(event.id, self._overfull(event.id, pending, buffer))  # type: ignore[arg-type]
            else:
                self._on_event(event, nbytes)  # type: ignore[arg-type]

    def _on_event(self, event: ClientEvent, nbytes: int) -> None:
        # A call is a `_Waiting` tuple until its stream starts, a `Pending` after: the
        # core sends each event only in the state the protocol allows it in.
        if type(event) is Result:  # the most frequent first
            pending = self._pending.pop(event.id, None)
            if type(pending) is tuple:
                future = pending[0]
                if event.deprecated or event.metadata:
                    _settle(future, event)
                elif not future.done():
                    future.set_result(event.value)
        elif isinstance(event, StreamItem):
            pending = self._pending.get(event.id)
            if isinstance(pending, Pending):
                self._act_on(event.id, self._file_item(event.id, pending, event.value, nbytes))
        elif isinstance(event, StreamStart):
            pending = self._pending.get(event.id)
            if type(pending) is tuple:
                future, method = pending
                started = self._pending[event.id] = Pending(method)
                started.stream = buffer = _Buffer()
                _settle(future, event, buffer)
        elif isinstance(event, StreamEnd):
            pending = self._pending.pop(event.id, None)
            if isinstance(pending, Pending) and pending.stream is not None:
                pending.stream.finish()
        elif isinstance(event, CallFailed):
            pending = self._pending.pop(event.id, None)
            if isinstance(pending, Pending):
                if pending.stream is not None:
                    pending.stream.finish(event.error)
            elif pending is not None:
                _settle(pending[0], event)  # raised by _outcome
        elif isinstance(event, Pong):
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif isinstance(event, Welcome):
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(event)
        elif isinstance(event, ConnectionFailed):
            error = self._server_error(event.error)
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(error)
            self._abort(error)

    def _on_lost(self, exc: Exception | None) -> None:
        self._drop_protocol()
        self._state.transport = None
        error = self._lost_error(exc)
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)
        self._abort(error)

    def _fail_all(self, error: MPRPCError) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if isinstance(p, tuple):
                _settle(p[0], ConnectionFailed(error))  # raised by _outcome
            elif p.stream is not None:
                p.stream.finish(error)
        if self._pong is not None and not self._pong.done():
            self._pong.set_exception(error)
        self._state.reading_paused = False

    def _act_on(self, id: str, flow: Flow) -> None:
        """Do what filing an item of stream `id` asked for (see `Flow`)."""
        state = self._state
        if flow is Flow.PAUSE and state.transport is not None:
            state.transport.pause_reading()
            state.reading_paused = True
        elif flow is Flow.OVERFLOW:
            self._cancel(id)

    def _consumed(self) -> None:
        """A stream was read from or closed: reading paused for it may go on."""
        state = self._state
        if state.reading_paused and self._may_resume():
            state.reading_paused = False
            if state.transport is not None:
                state.transport.resume_reading()

    def _cancel(self, id: str, *, expired: bool = False) -> None:
        """Stop waiting for call `id`, and tell the server (CANCEL) unless `expired`
        (its deadline passed) on a connection where the server was told that deadline:
        it ends the call itself then, and answers 408 as the client raised it (a CANCEL
        racing its timer made its logs say 407)."""
        self._pending.pop(id, None)
        self._unwatch(id)
        conn = self._conn
        if conn is None:
            return
        if expired and Feature.DEADLINE in conn.features:
            conn.send_cancel(id, send=False)
            return
        if self._state.transport is not None and conn.send_cancel(id):
            self._write(conn.chunks_to_send())

    async def _heartbeat(self, interval: float) -> None:
        """Ping when nothing was received for `interval` seconds; end the connection
        when nothing (a pong or anything else) comes within `interval` more: anything
        received shows it alive, as for `RPC`'s reader (docs/protocol.md). A pong can
        wait behind a stream's items the client is still reading."""
        loop = asyncio.get_running_loop()
        while self.connected:
            await asyncio.sleep(interval)
            protocol = self._state.protocol
            if (
                not self.connected
                or self._conn is None
                or self._state.transport is None
                or protocol is None
            ):
                return
            if protocol.heard:
                protocol.heard = False
                continue  # something came within the interval: no need to ask
            if self._state.reading_paused:
                continue  # a pong could not be read; the paused stream shows it is alive
            self._pong = loop.create_future()
            self._conn.send_ping()
            self._write(self._conn.chunks_to_send())
            try:
                async with asyncio.timeout(interval):
                    await self._pong
            except TimeoutError:
                if not self._state.reading_paused and not protocol.heard:
                    self._abort(self._heartbeat_error(interval))
                    return
            except MPRPCError:
                return
            protocol.heard = False  # the next interval counts from the pong (or data)

    # -- calls -----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        returns: bool,
        timeout: float | None,
        metadata: dict[str, str] | None = None,
        oneway: bool = False,
        sizes: MessageSizes | None = None,
    ) -> str:
        state = self._state
        if state.loop is not None and state.loop.is_closed():
            self._leave_closed_loop()
        link = state.protocol
        if (
            link is not None
            and link.conn is not None
            and not state.reconnect_due
            and not link.pending
            and _monotonic() - _last_call > _FRESH
        ):
            await self._read_first(link)
        if state.reconnect_due:
            if timeout is None or timeout >= self.connect_timeout:
                await self.connect()
            else:
                # Connecting again is part of the call: bounded by its deadline.
                try:
                    async with asyncio.timeout(timeout):
                        await self.connect()
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"call {method!r} did not finish within its {timeout}s deadline "
                        f"(connecting again to {self.address})"
                    ) from None
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
        chunks = conn.chunks_to_send()
        if sizes is not None:
            self._watch(id, sizes, chunks, returns)
        self._write(chunks)
        return id

    async def _read_first(self, link: _Protocol) -> bool:
        """Let the loop read what the server sent on `link`'s connection and the loop has
        not read yet, before a call is written on it; whether the connection ended then
        (the next call connects again). A connection quiet for a while may have been
        closed by the server (its idle timeout, a restart) while this client's loop was
        not running (`loop.run_until_complete` per call): written on, such a connection
        fails the call, which connecting again would have served (README: "the next call
        connects again, transparently"). A `poll`, when no call has started for a while
        (`_FRESH`); for calls made back to back, nothing."""
        transport = self._state.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            for _ in range(_READ_FIRST_PASSES):
                if not poller.poll(0):
                    break  # nothing unread
                await asyncio.sleep(0)  # the loop reads it (a pass or two)
                if link.conn is None or self._state.protocol is not link:
                    break
        except (OSError, ValueError):  # closed meanwhile: the call's own path says so
            return False
        return link.conn is None or self._state.reconnect_due

    def _write(self, chunks: list[bytes]) -> None:
        """Send `chunks` now; while other calls are pending, messages sent later in the
        same loop pass are joined into writes of up to `MAX_BATCH` pieces, the last at
        the pass's end (fewer syscalls, and the server starts on a batch early)."""
        state = self._state
        if state.batching:
            outbox = state.outbox
            outbox += chunks
            if len(outbox) >= MAX_BATCH:  # the peer starts on these now (see MAX_BATCH)
                state.outbox = []
                self._write_chunks(outbox)
            return
        if self._pending:  # other calls are in flight: more may be sent in this pass
            state.batching = True
            (state.loop or asyncio.get_running_loop()).call_soon(self._write_now)
        self._write_chunks(chunks)

    def _write_now(self) -> None:
        state = self._state
        state.batching = False
        if state.outbox:
            chunks, state.outbox = state.outbox, []
            self._write_chunks(chunks)

    def _write_chunks(self, chunks: list[bytes]) -> None:
        transport = self._state.transport
        if transport is not None and not transport.is_closing():
            if len(chunks) == 1:
                transport.write(chunks[0])  # the usual case: one call's bytes, as queued
                return
            for chunk in coalesce(chunks):
                transport.write(chunk)

    async def _call(
        self,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] = _NO_KWARGS,
        timeout: float | None = CLIENT_DEFAULT,
        ctx: ClientCallContext | None = None,
        typed: _Typed | None = None,
    ) -> Any:
        global _last_call
        state = self._state  # (read once: see _State)
        if timeout is CLIENT_DEFAULT:
            timeout = self.timeout  # a method proxy's direct call (see _direct_call)
        metadata = None
        sizes = None
        if ctx is not None:
            metadata = ctx.metadata.to_dict() if ctx.metadata else None
            sizes = ctx.sizes
        # The current connection's core, loop and map of calls are read off its protocol.
        link = state.protocol
        conn = None if link is None else link.conn
        transport = state.transport
        if link is None or conn is None or transport is None:
            # Not connected: the loop is the running one (asyncio.get_running_loop()
            # costs a getpid() system call per call on 3.11: not on the usual path).
            loop = state.loop or asyncio.get_running_loop()
            usual = False
        else:
            loop = link.loop
            usual = not state.reconnect_due and conn.state is _READY
            # Connected on a loop that has ended (asyncio.run returned): _send connects
            # again. (400 instructions a call on asyncio's loops, 0.8%; pending calls do
            # not show the loop alive: a stream left open stays pending.)
            if loop.is_closed():
                loop = asyncio.get_running_loop()
                usual = False
            elif usual and not link.pending:  # (calls in flight: the loop is reading)
                now = _monotonic()
                quiet = now - _last_call > _FRESH
                _last_call = now
                if quiet and await self._read_first(link):
                    # The server closed the connection meanwhile: connect again first.
                    return await self._call(method, args, kwargs, timeout, ctx, typed)
        if typed is not None:
            # A typed client's call: its arguments encoded and its result checked here,
            # in the call's own coroutine (a generated method adds no frame of its own).
            if usual and conn is not None and conn.refuses_wide_ints:
                # Packed now, by a packer that refuses an int out of range (the
                # ParamError then comes from `unsendable`, below): types alone here.
                try:
                    args = typed._wire_args(args)
                except ParamError:
                    # Again, for the error to name the method as called (its prefix too).
                    args = typed.encode_args(*args, method=method)
            else:
                # Connecting first, or JSON (which carries any int): checked in full,
                # so that a wrong value is refused before anything else happens.
                args = typed.encode_args(*args, method=method)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            if not usual or link is None or conn is None or transport is None:
                # Connecting again (bounded by the deadline), or failing: _send says how.
                id = await self._send(
                    method, tuple(args), kwargs, True, timeout, metadata, sizes=sizes
                )
                pending = self._pending
            else:
                # The usual call: _send's and _write's work inline, one call to the core.
                id, chunks = conn.send_call_data(
                    method, args, kwargs, deadline=timeout, metadata=metadata
                )
                if sizes is not None:
                    self._watch(id, sizes, chunks)
                pending = link.pending  # the client's _pending
                if state.batching or pending or len(chunks) != 1 or transport.is_closing():
                    self._write(chunks)
                else:
                    transport.write(chunks[0])  # nothing else in flight: at once, as it is
        except LocalProtocolError as exc:
            # Refused by MessagePack: for a typed call, a value inside an `any` argument
            # (the rest was checked): the ParamError a wrong type gets, naming it.
            if typed is None:
                raise
            raise (typed.unsendable(args, method) or exc) from None
        future: asyncio.Future[Any] = loop.create_future()
        pending[id] = (future, method)
        if state.reading_paused:
            self._consumed()  # a call now waits: reading paused for a full stream goes on
        try:
            if deadline is None:
                value = await future
            else:
                async with asyncio.timeout_at(deadline):
                    value = await future
        except TimeoutError:
            self._cancel(id, expired=True)
            raise self._deadline_error(method, timeout, id) from None
        except asyncio.CancelledError:
            self._cancel(id)
            raise
        if type(value) is _Outcome:
            stream = value.stream
            value = self._outcome(method, value.event, timeout, ctx)
            if stream is not None:
                value = AsyncStream(self, id, method, stream, timeout, deadline)
        if typed is not None:
            kind = typed._result_exact
            if kind is None or (
                type(value) is kind and (kind is not int or INT_MIN <= value <= INT_MAX)
            ):
                return value
            return typed.decode_result(value)
        return value

    def _direct_call(self) -> Any:
        # Without interceptors a proxy's call is this client's call, with its defaults.
        return None if self.interceptors else self._call

    async def _reply(self, result: Any, ctx: ClientCallContext) -> Any:
        return await result, Metadata(ctx.response_metadata)

    async def _delay(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> str:
        metadata, sizes = self._sent_with(ctx)
        return await self._send(method, args, kwargs, False, None, metadata, sizes=sizes)

    async def _notify(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> None:
        metadata, sizes = self._sent_with(ctx)
        await self._send(method, args, kwargs, False, None, metadata, oneway=True, sizes=sizes)


def _discard(opening: asyncio.Task[tuple[asyncio.Transport, Any]]) -> None:
    """Give up a `create_connection` task: cancel it, or close what it made."""
    if not opening.done():
        opening.cancel()
    elif not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished connect's (or welcome's) exception as seen (asyncio logs it
    otherwise)."""
    if not future.cancelled():
        future.exception()


__all__ = ["AsyncRPC", "AsyncStream"]
