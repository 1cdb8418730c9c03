"""`RPC`: the blocking client, on plain sockets; threads may share one connection."""

from __future__ import annotations

import collections
import contextlib
import math
import select
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

from ..errors import ConnectionLostError, DeadlineExceeded, LoginError, MPRPCError
from ..protocol import (
    ALL_FEATURES,
    DEFAULT_MAX_MESSAGE_SIZE,
    CallFailed,
    ClientConnection,
    ClientEvent,
    Compression,
    ConnectionFailed,
    Feature,
    Result,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from ..protocol.framing import coalesce
from .common import Address, CallOptions, MethodProxy, parse_compression, warn_deprecated

_RECV_SIZE = 256 * 1024


class _DeadlinePassed(Exception):
    """Our own deadline ran out while waiting (distinct from a server's 504)."""


class RPC:
    """Blocking MPRPC client.

    Same address and options as `AsyncRPC`, without heartbeat (nothing runs between
    calls). A stream call returns a generator; closing it early cancels the stream.

    Threads may share one client and their calls overlap on its connection: one waiting
    thread reads the socket for all and files each reply and stream item under its call,
    every thread within its own deadline. (Over TLS the socket serves one thread at a
    time, as an SSL connection may not read and write from two threads at once.)
    `close()` from another thread fails the calls in progress with ConnectionLostError.
    """

    def __init__(
        self,
        addr: str,
        *,
        debug: bool = False,
        compreser: str | Compression | None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        features: Iterable[Feature | str] = ALL_FEATURES,
    ) -> None:
        self.address = Address.parse(addr)
        self.debug = debug
        self.compression = parse_compression(compreser)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.features = frozenset(Feature(f) for f in features)
        self._ssl = self.address.ssl_context(ssl)
        self._sock: socket.socket | None = None
        self._conn: ClientConnection | None = None
        self._inbox: dict[str, collections.deque[ClientEvent]] = {}
        self.server_info: Welcome | None = None
        # Held while a thread uses the socket and the connection state; reentrant because
        # a lost connection closes the client from inside a read.
        self._lock = threading.RLock()
        self._turn = threading.Condition(self._lock)  # a read finished: look at your inbox
        self._reading = False  # some thread is reading the socket for everyone
        self._deferred_cancels: list[str] = []  # IDs given up while another thread held it

    # -- connection ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is open and authenticated."""
        return self._sock is not None and self._conn is not None and not self._conn.closed

    def connect(self) -> RPC:
        """Open the connection and authenticate (LoginError on bad credentials)."""
        with self._lock:
            return self._connect()

    def _connect(self) -> RPC:
        if self.connected:
            return self
        self._conn = ClientConnection(
            self.address.username,
            self.address.password,
            json=self.debug,
            compression=self.compression,
            features=self.features,
            max_message_size=self.max_message_size,
        )
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.connect_timeout
            )
        except OSError as exc:
            raise ConnectionLostError(f"could not connect to {self.address}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_hostname=self.address.host)
        self._sock = sock
        try:
            sock.sendall(self._conn.start())
            deadline = time.monotonic() + self.connect_timeout
            while self.server_info is None:
                for event in self._read(deadline):
                    if isinstance(event, Welcome):
                        self.server_info = event
        except _DeadlinePassed:
            self.close()
            raise ConnectionLostError(
                f"no welcome reply from {self.address} within {self.connect_timeout}s"
            ) from None
        except BaseException:
            self.close()
            raise
        sock.settimeout(None)
        return self

    def close(self) -> None:
        """Close the connection (from any thread: calls in progress then fail)."""
        sock, self._sock = self._sock, None
        self._inbox.clear()
        self.server_info = None
        if sock is not None:
            # Wakes a thread blocked reading this socket, which close() alone may not.
            with contextlib.suppress(OSError):  # already disconnected
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> RPC:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _lost(self, error: MPRPCError) -> MPRPCError:
        self.close()
        if self._conn is not None:
            self._conn.close(error)
        return error

    def _read(self, deadline: float | None, *, shared: bool = False) -> list[ClientEvent]:
        """Block for the next bytes; return the events they complete.

        `shared`: other threads may send meanwhile, so a plain socket is read without the
        lock, in blocking mode, waiting for the deadline with poll (a socket timeout
        would apply to their sends too). A TLS socket is read holding the lock.
        """
        sock, conn = self._sock, self._conn
        if sock is None or conn is None:
            raise ConnectionLostError(f"not connected to {self.address}")
        unlocked = shared and not isinstance(sock, ssl_module.SSLSocket)
        if not unlocked:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _DeadlinePassed
                sock.settimeout(remaining)
            else:
                sock.settimeout(None)
        try:
            if unlocked:
                self._lock.release()
                try:
                    if deadline is not None and not _wait_readable(sock, deadline):
                        raise _DeadlinePassed
                    data = sock.recv(_RECV_SIZE)
                finally:
                    self._lock.acquire()
            else:
                data = sock.recv(_RECV_SIZE)
        except TimeoutError:  # socket.timeout is TimeoutError
            raise _DeadlinePassed from None
        except OSError as exc:
            if self._sock is not sock:
                raise ConnectionLostError(f"connection to {self.address} closed") from None
            raise self._lost(
                ConnectionLostError(f"connection to {self.address} lost: {exc}")
            ) from exc
        if not data:
            if self._sock is not sock:  # close() was called while we waited
                raise ConnectionLostError(f"connection to {self.address} closed")
            raise self._lost(
                ConnectionLostError(f"connection to {self.address} closed by the server")
            )
        events = conn.receive_data(data)
        for event in events:
            if isinstance(event, ConnectionFailed):
                error = event.error
                if isinstance(error, LoginError):
                    error = LoginError(f"authentication failed for {self.address}: {error}")
                raise self._lost(error)
            id = getattr(event, "id", None)
            box = self._inbox.get(id) if id is not None else None
            if box is not None:
                box.append(event)
        return events

    def _next_event(self, id: str, deadline: float | None) -> ClientEvent:
        """Wait for the connection (within the deadline), then for call `id`'s next event."""
        if deadline is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _DeadlinePassed
        try:
            self._send_deferred_cancels()
            while True:
                box = self._inbox.get(id)
                if box is None:
                    raise ConnectionLostError(f"connection to {self.address} closed")
                if box:
                    return box.popleft()
                if self._reading:
                    # Another thread is reading; it files our events and wakes us.
                    if deadline is None:
                        self._turn.wait()
                    elif not self._turn.wait(max(0.0, deadline - time.monotonic())):
                        raise _DeadlinePassed
                    continue
                self._reading = True
                try:
                    self._read(deadline, shared=True)
                finally:
                    self._reading = False
                    self._turn.notify_all()
        finally:
            self._lock.release()

    # -- calls -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> MethodProxy[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        proxy = self.method(name)
        # Kept as an instance attribute: the next `rpc.name` is a plain lookup, where
        # falling back to __getattr__ and building a proxy cost more than a small call.
        self.__dict__[name] = proxy
        return proxy

    def method(self, name: str) -> MethodProxy[Any]:
        """The remote method `name`, to call or to give options.

        Any name works, dotted or not an identifier:
        `rpc.method("add").with_options(timeout=2)(1, 2)`.
        """
        return MethodProxy(self._invoke, name)

    def _invoke(
        self,
        method: str,
        options: CallOptions | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        timeout = self.timeout if options is None else options.timeout
        return self._call(method, args, kwargs, timeout)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` by name; a stream returns a generator."""
        return self._call(method, args, kwargs, self.timeout)

    def _send(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        returns: bool,
        timeout: float | None,
    ) -> str:
        if timeout is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=timeout):
            raise DeadlineExceeded(f"call {method!r} could not be sent within {timeout}s")
        try:
            self._send_deferred_cancels()
            sock, conn = self._sock, self._conn
            if not self.connected or sock is None or conn is None:
                raise ConnectionLostError(
                    f"not connected to {self.address}: use 'with RPC(...)' or call connect()"
                )
            id, data = conn.send_call(method, args, kwargs, returns=returns, deadline=timeout)
            if returns:
                self._inbox[id] = collections.deque()  # before any thread can read the reply
            try:
                for chunk in coalesce(data):
                    sock.sendall(chunk)
            except OSError as exc:
                self._inbox.pop(id, None)
                raise self._lost(
                    ConnectionLostError(f"connection to {self.address} lost: {exc}")
                ) from exc
            return id
        finally:
            self._lock.release()

    def _call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        deadline = time.monotonic() + timeout if timeout is not None else None
        id = self._send(method, args, kwargs, True, timeout)
        try:
            event = self._next_event(id, deadline)
        except _DeadlinePassed:
            self._cancel(id)
            raise DeadlineExceeded(
                f"call {method!r} did not finish within its {timeout}s deadline", id=id
            ) from None
        except BaseException:
            self._cancel(id)
            raise
        if isinstance(event, Result):
            del self._inbox[id]
            if event.deprecated:
                warn_deprecated(method, stream=False, stacklevel=5)
            return event.value
        if isinstance(event, CallFailed):
            del self._inbox[id]
            raise event.error
        assert isinstance(event, StreamStart)
        if event.deprecated:
            warn_deprecated(method, stream=True, stacklevel=5)
        return self._stream(id)

    def _stream(self, id: str) -> Generator[Any, None, None]:
        finished = False
        try:
            while True:
                event = self._next_event(id, None)
                if isinstance(event, StreamItem):
                    yield event.value
                elif isinstance(event, StreamEnd):
                    finished = True
                    return
                elif isinstance(event, CallFailed):
                    finished = True
                    raise event.error
        finally:
            if not finished:
                self._cancel(id)
            self._inbox.pop(id, None)

    def _cancel(self, id: str) -> None:
        self._inbox.pop(id, None)
        if not self._lock.acquire(blocking=False):
            # Another thread holds the connection: whoever takes it next sends the cancel,
            # so a call past its deadline does not wait for that thread.
            self._deferred_cancels.append(id)
            return
        try:
            self._send_cancel(id)
        finally:
            self._lock.release()

    def _send_deferred_cancels(self) -> None:
        while self._deferred_cancels:
            self._send_cancel(self._deferred_cancels.pop())

    def _send_cancel(self, id: str) -> None:
        if self._conn is None or self._sock is None:
            return
        data = self._conn.send_cancel(id)
        if data:
            try:
                self._sock.sendall(data)
            except OSError:
                self.close()

    def delay(self, method: str, *args: Any, **kwargs: Any) -> str:
        """Run `method` without waiting (RETURN false); fetch with `system.getresult(id)`."""
        return self._send(method, args, kwargs, False, None)


def _wait_readable(sock: socket.socket, deadline: float) -> bool:
    """Whether `sock` has something to read (data, end of file, error) before `deadline`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(math.ceil(remaining * 1000)))
        return bool(select.select([sock], [], [], remaining)[0])
    except (OSError, ValueError):
        return True  # closed meanwhile: the read reports it
