"""`AsyncRPC`: the asyncio client. Many calls in flight on one connection, matched by ID."""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any

from ..errors import (
    ConnectionLostError,
    DeadlineExceeded,
    LoginError,
    MPRPCError,
)
from ..protocol import (
    ALL_FEATURES,
    DEFAULT_MAX_MESSAGE_SIZE,
    CallFailed,
    ClientConnection,
    ClientEvent,
    Compression,
    ConnectionFailed,
    Feature,
    Pong,
    Result,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from ..protocol.framing import coalesce
from .common import Address, CallOptions, MethodProxy, parse_compression, warn_deprecated

# Stream items buffered in the client before it stops reading the socket, which lets
# TCP flow control pause the server's generator (and resumes below the low mark).
_STREAM_HIGH_WATER = 10_000
_STREAM_LOW_WATER = 1_000


class _StreamBuffer:
    """Items received for one stream; the client feeds it, the AsyncStream drains it."""

    __slots__ = ("done", "error", "items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def feed(self, item: Any) -> None:
        if not self.done:
            self.items.append(item)
            self.wake()

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.error = error
        self.wake()


class AsyncStream:
    """Async iterator over a server stream.

    `await stream.aclose()`, `async with stream:`, or dropping the last reference cancels
    the stream on the server (its generator is closed) when `cancel` was negotiated.
    """

    def __init__(self, client: AsyncRPC, id: str, method: str, buffer: _StreamBuffer) -> None:
        self._client = client
        self.id = id
        self.method = method
        # The client holds only the buffer, so dropping this object can cancel the stream.
        self._buffer = buffer

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        buffer = self._buffer
        while not buffer.items:
            if buffer.error is not None:
                raise buffer.error
            if buffer.done:
                raise StopAsyncIteration
            buffer.waiter = asyncio.get_running_loop().create_future()
            try:
                await buffer.waiter
            finally:
                buffer.waiter = None
        item = buffer.items.popleft()
        self._client._consumed(1)
        return item

    async def aclose(self) -> None:
        """Stop the stream: the server is told to close its generator (if negotiated)."""
        self._close()

    def _close(self) -> None:
        buffer = self._buffer
        if not buffer.done:
            buffer.done = True
            self._client._cancel(self.id)
        self._client._consumed(len(buffer.items))
        buffer.items.clear()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close()

    def __del__(self) -> None:
        # Leaving `async for` early does not close an async iterator; dropping it does,
        # so a stream nobody reads any more is cancelled on the server too.
        if not self._buffer.done:
            loop = self._client._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._close)

    def __repr__(self) -> str:
        return f"<AsyncStream {self.method!r} id={self.id}>"


class _Pending:
    __slots__ = ("future", "method", "stream")

    def __init__(self, method: str, future: asyncio.Future[Any]) -> None:
        self.method = method
        self.future = future
        self.stream: _StreamBuffer | None = None


class _Protocol(asyncio.Protocol):
    def __init__(self, client: AsyncRPC) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._on_lost(exc)


class AsyncRPC:
    """Asyncio MPRPC client.

    `addr` is `tcp://user:password@host:port` (`tls://` for TLS with default
    verification, or pass `ssl=`). `debug` sends JSON, `compreser` compresses with
    "zlib", "bz2" or "lzma", `heart_beat` pings every N seconds and fails every pending
    call if a pong does not come back within N seconds. `timeout` is the default
    per-call deadline in seconds; `rpc.name.with_options(timeout=...)` overrides it.
    """

    def __init__(
        self,
        addr: str,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        debug: bool = False,
        compreser: str | Compression | None = None,
        heart_beat: float | None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        features: Iterable[Feature | str] = ALL_FEATURES,
    ) -> None:
        self.address = Address.parse(addr)
        self.debug = debug
        self.compression = parse_compression(compreser)
        self.heart_beat = heart_beat
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.features = frozenset(Feature(f) for f in features)
        self._ssl = self.address.ssl_context(ssl)
        self._conn: ClientConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._welcome: asyncio.Future[Welcome] | None = None
        self._pong: asyncio.Future[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._buffered = 0
        self._reading_paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[bytes] = []
        self._batching = False
        self.server_info: Welcome | None = None

    # -- connection ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is open and authenticated."""
        return self._conn is not None and not self._conn.closed and self._transport is not None

    async def connect(self) -> AsyncRPC:
        """Open the connection and authenticate (LoginError on bad credentials)."""
        if self.connected:
            return self
        loop = self._loop = asyncio.get_running_loop()
        self._conn = ClientConnection(
            self.address.username,
            self.address.password,
            json=self.debug,
            compression=self.compression,
            features=self.features,
            max_message_size=self.max_message_size,
        )
        self._welcome = loop.create_future()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self),
                    self.address.host,
                    self.address.port,
                    ssl=self._ssl,
                )
                self._transport = transport
                self._transport.write(self._conn.start())
                self.server_info = await self._welcome
        except TimeoutError:
            self._abort()
            raise ConnectionLostError(
                f"could not connect to {self.address} within {self.connect_timeout}s"
            ) from None
        except OSError as exc:
            self._abort()
            raise ConnectionLostError(f"could not connect to {self.address}: {exc}") from exc
        except BaseException:
            self._abort()
            raise
        if self.heart_beat:
            self._heartbeat_task = loop.create_task(self._heartbeat(self.heart_beat))
        return self

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionLostError."""
        self._abort()
        await asyncio.sleep(0)  # let the transport run its connection_lost callback

    async def reconnect(self) -> AsyncRPC:
        """Drop the current connection (if any) and connect again."""
        await self.close()
        return await self.connect()

    def _abort(self, error: MPRPCError | None = None) -> None:
        if self._heartbeat_task is not None:
            if self._heartbeat_task is not asyncio.current_task():
                self._heartbeat_task.cancel()
            self._heartbeat_task = None
        if self._transport is not None:
            self._write_now()
            self._transport.close()
            self._transport = None
        self._outbox = []
        self._fail_all(error or ConnectionLostError(f"connection to {self.address} closed"))

    async def __aenter__(self) -> AsyncRPC:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- events ----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        for event in conn.receive_data(data):
            self._on_event(event)
        if conn.closed and self._transport is not None:
            self._abort(conn.error)

    def _on_event(self, event: ClientEvent) -> None:
        if type(event) is Result:  # the most frequent first
            pending = self._pending.pop(event.id, None)
            if pending is not None and not pending.future.done():
                pending.future.set_result(event)
        elif isinstance(event, StreamItem):
            pending = self._pending.get(event.id)
            if pending is not None and pending.stream is not None:
                pending.stream.feed(event.value)
                self._buffered += 1
                if (
                    self._buffered > _STREAM_HIGH_WATER
                    and self._transport
                    and not self._reading_paused
                ):
                    self._transport.pause_reading()
                    self._reading_paused = True
        elif isinstance(event, StreamStart):
            pending = self._pending.get(event.id)
            if pending is not None:
                pending.stream = _StreamBuffer()
                if not pending.future.done():
                    pending.future.set_result(event)
        elif isinstance(event, StreamEnd):
            pending = self._pending.pop(event.id, None)
            if pending is not None and pending.stream is not None:
                pending.stream.finish()
        elif isinstance(event, CallFailed):
            pending = self._pending.pop(event.id, None)
            if pending is not None:
                if pending.stream is not None:
                    pending.stream.finish(event.error)
                elif not pending.future.done():
                    pending.future.set_exception(event.error)
        elif isinstance(event, Pong):
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif isinstance(event, Welcome):
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(event)
        elif isinstance(event, ConnectionFailed):
            error = event.error
            if isinstance(error, LoginError) and not error.message.startswith("authentication"):
                error = LoginError(f"authentication failed for {self.address}: {error}")
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(error)
            self._abort(error)

    def _on_lost(self, exc: Exception | None) -> None:
        self._transport = None
        text = f"connection to {self.address} lost"
        error = ConnectionLostError(f"{text}: {exc}" if exc else text)
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)
        self._abort(error)

    def _fail_all(self, error: MPRPCError) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.stream is not None:
                p.stream.finish(error)
            elif not p.future.done():
                p.future.set_exception(error)
        if self._pong is not None and not self._pong.done():
            self._pong.set_exception(error)
        self._buffered = 0
        self._reading_paused = False

    def _consumed(self, count: int) -> None:
        self._buffered = max(0, self._buffered - count)
        if self._reading_paused and self._buffered < _STREAM_LOW_WATER:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    def _cancel(self, id: str) -> None:
        self._pending.pop(id, None)
        if self._conn is not None and self._transport is not None and not self._conn.closed:
            data = self._conn.send_cancel(id)
            if data:
                self._write([data])

    async def _heartbeat(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while self.connected:
            await asyncio.sleep(interval)
            if not self.connected or self._conn is None or self._transport is None:
                return
            self._pong = loop.create_future()
            self._write([self._conn.send_ping()])
            try:
                async with asyncio.timeout(interval):
                    await self._pong
            except TimeoutError:
                self._abort(
                    ConnectionLostError(
                        f"no heartbeat reply from {self.address} within {interval}s: "
                        "connection considered dead"
                    )
                )
                return
            except MPRPCError:
                return

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

    def call(self, method: str, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Call `method` by name (await it); a stream returns an `AsyncStream`."""
        return self._call(method, args, kwargs, self.timeout)

    def _send(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        returns: bool,
        timeout: float | None,
    ) -> str:
        if not self.connected or self._conn is None or self._transport is None:
            raise ConnectionLostError(
                f"not connected to {self.address}: "
                "use 'async with AsyncRPC(...)' or await connect()"
            )
        id, data = self._conn.send_call(method, args, kwargs, returns=returns, deadline=timeout)
        self._write(data)
        return id

    def _write(self, chunks: list[bytes]) -> None:
        """Send `chunks` now, or join them to this loop pass's batch.

        While other calls are pending, messages sent later in the same loop pass are
        joined into one write at its end (fewer syscalls).
        """
        if self._batching:
            self._outbox += chunks
            return
        if self._pending:  # other calls are in flight: more may be sent in this pass
            self._batching = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._write_now)
        self._write_chunks(chunks)

    def _write_now(self) -> None:
        self._batching = False
        if self._outbox:
            chunks, self._outbox = self._outbox, []
            self._write_chunks(chunks)

    def _write_chunks(self, chunks: list[bytes]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            for chunk in coalesce(chunks):
                transport.write(chunk)

    async def _call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        id = self._send(method, args, kwargs, True, timeout)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = _Pending(method, future)
        self._pending[id] = pending
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            if deadline is None:
                event = await future
            else:
                async with deadline:
                    event = await future
        except TimeoutError:
            if deadline is None or not deadline.expired():
                raise  # a TimeoutError from the server (504), not our deadline
            self._cancel(id)
            raise DeadlineExceeded(
                f"call {method!r} did not finish within its {timeout}s deadline", id=id
            ) from None
        except asyncio.CancelledError:
            self._cancel(id)
            raise
        if isinstance(event, Result):
            if event.deprecated:
                warn_deprecated(method, stream=False, stacklevel=3)
            return event.value
        if event.deprecated:
            warn_deprecated(method, stream=True, stacklevel=3)
        assert pending.stream is not None
        return AsyncStream(self, id, method, pending.stream)

    async def delay(self, method: str, *args: Any, **kwargs: Any) -> str:
        """Run `method` without waiting (RETURN false); fetch with `system.getresult(id)`."""
        return self._send(method, args, kwargs, False, None)


__all__ = ["AsyncRPC", "AsyncStream"]
