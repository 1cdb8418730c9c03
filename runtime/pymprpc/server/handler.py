"""The asyncio I/O shell around one `ServerConnection`: reads, runs calls, writes, times out."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from ..errors import (
    CancelledError,
    DeadlineExceeded,
    MPRPCError,
    ResultLimitError,
    RpcUnavailableException,
    TimeoutException,
)
from ..protocol import (
    Authenticated,
    CallRequest,
    CancelRequest,
    Feature,
    ServerConnection,
    State,
)
from .dispatch import as_call_error, is_stream
from .eager import start_task
from .kept_results import KeptOutcome

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("pymprpc.server")

# A stream writes and yields to the loop at least this often (bytes / items).
_STREAM_BATCH_BYTES = 64 * 1024
_STREAM_BATCH_ITEMS = 256


class ConnectionHandler(asyncio.Protocol):
    """Serves one client connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = ServerConnection(server.settings, server.credentials)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._last_activity = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._abort_error: MPRPCError | None = None
        self._flush_scheduled = False
        self._reading = False  # in data_received: replies wait for its single write

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        limit = self.server.max_connections
        if limit and len(self.server.handlers) >= limit:
            log.warning("refusing %s: max_connections=%d reached", self.peer, limit)
            self.conn.fail(RpcUnavailableException("too many connections"))
            self._flush_now()
            self.transport.close()
            return
        self.server.handlers.add(self)
        if self.server.auth_timeout:
            self._timer = self.loop.call_later(self.server.auth_timeout, self._auth_expired)

    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        self._reading = True
        try:
            for event in self.conn.receive_data(data):
                if type(event) is CallRequest:
                    self._start_call(event)
                elif isinstance(event, CancelRequest):
                    task = self.tasks.get(event.id)
                    if task is not None:
                        self._cancel(event.id, task)
                elif isinstance(event, Authenticated):
                    self._on_authenticated(event)
        finally:
            self._reading = False
        if self.conn.pending_bytes:
            self._flush_now()
        if self.conn.closed:
            if self.conn.error is not None:
                log.info("closing %s: %s", self.peer, self.conn.error)
            self._close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.handlers.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        # Cancelling closes running coroutines and the async generators of streams.
        for id, task in list(self.tasks.items()):
            self._cancel(id, task)
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- helpers ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what is queued now; while other calls run, also once more at the end of
        this loop pass, so their replies share one write (fewer syscalls). Calls answered
        within a read are written together when the read is handled."""
        if self._flush_scheduled or self._reading:
            return
        if len(self.tasks) > 1:  # others may finish in this pass too: batch them
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_now)
        self._write_out()

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        self._write_out()

    def _write_out(self) -> None:
        chunks = self.conn.chunks_to_send()
        transport = self.transport
        if chunks and transport is not None and not transport.is_closing():
            for chunk in chunks:
                transport.write(chunk)

    def close(self) -> None:
        """Send what is queued, then close the connection."""
        self._flush_now()
        self._close_transport()

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def fail(self, error: MPRPCError) -> None:
        """Send a connection-level error and close."""
        self.conn.fail(error)
        self._flush_now()
        self._close_transport()

    def _on_authenticated(self, event: Authenticated) -> None:
        log.debug("%s authenticated as %r, features %s", self.peer, event.username, event.features)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self.server.settings.idle_timeout
        if timeout:
            self._timer = self.loop.call_later(timeout, self._check_idle)

    def _auth_expired(self) -> None:
        self._timer = None
        if self.conn.state is State.AUTHENTICATING:
            self.fail(
                TimeoutException(f"authentication not completed within {self.server.auth_timeout}s")
            )

    def _check_idle(self) -> None:
        timeout = self.server.settings.idle_timeout or 0.0
        now = self.loop.time()
        idle_for = now - self._last_activity
        if self.tasks:
            # A connection with a call still running is not idle.
            self._timer = self.loop.call_later(timeout, self._check_idle)
        elif idle_for >= timeout:
            self._timer = None
            log.info("closing %s: idle for %.1fs", self.peer, idle_for)
            self.fail(TimeoutException("idle connection closed"))
        else:
            self._timer = self.loop.call_later(timeout - idle_for, self._check_idle)

    # -- calls -----------------------------------------------------------------------

    def _start_call(self, request: CallRequest) -> None:
        refusal = None
        if self.server.draining:
            refusal = RpcUnavailableException("the server is shutting down", id=request.id)
        elif self.server.max_inflight and len(self.tasks) >= self.server.max_inflight:
            refusal = RpcUnavailableException(
                f"too many calls in flight on this connection "
                f"(max_inflight={self.server.max_inflight}); retry when some finish",
                id=request.id,
            )
        if refusal is not None:
            self.conn.send_error(request.id, refusal)
            return
        task = start_task(self.loop, self._run_call(request))
        if task is not None:  # None: the call finished within its first step
            self.tasks[request.id] = task
            self.server.tasks.add(task)

    def _call_done(self, id: str, task: asyncio.Task[None] | None) -> None:
        """Forget a finished call (idempotent)."""
        if task is None:
            return
        if self.tasks.get(id) is task:
            del self.tasks[id]
        self.server.tasks.discard(task)
        self._last_activity = self.loop.time()

    def _cancel(self, id: str, task: asyncio.Task[None]) -> None:
        task.cancel()
        # A task cancelled before its first step never runs _run_call's finally, which
        # normally forgets it (a done callback per call would cost a loop pass each).
        task.add_done_callback(functools.partial(self._call_done, id))

    async def _run_call(self, request: CallRequest) -> None:
        kept: KeptOutcome | None = None
        try:
            if not request.returns:
                kept = self.server.kept.open(request.id)
            if request.deadline is None:
                await self._execute(request, kept)
            else:
                deadline = asyncio.timeout(request.deadline)
                try:
                    async with deadline:
                        await self._execute(request, kept)
                except TimeoutError:
                    if deadline.expired():
                        raise DeadlineExceeded(
                            f"deadline of {request.deadline}s exceeded", id=request.id
                        ) from None
                    raise
        except asyncio.CancelledError:
            if self._abort_error is None:
                raise  # the client went away or cancelled: nobody to answer
            self._report(request, kept, self._abort_error, "")
        except Exception as exc:
            error, frame = as_call_error(exc, request)
            if not isinstance(exc, MPRPCError):
                log.debug("call %s(%s) raised", request.method, request.id, exc_info=exc)
            self._report(request, kept, error, frame)
        finally:
            if not request.returns:
                self.conn.release(request.id)
            self._flush()
            self._call_done(request.id, asyncio.current_task())

    def _report(
        self, request: CallRequest, kept: KeptOutcome | None, error: MPRPCError, frame: str
    ) -> None:
        if kept is not None:
            kept.set_error(error, self.server.kept.clock())
        else:
            self.conn.send_error(request.id, error, frame=frame)

    async def _execute(self, request: CallRequest, kept: KeptOutcome | None) -> None:
        dispatcher = self.server.dispatcher
        method, args, kwargs = dispatcher.prepare(request)
        result = await dispatcher.run(method, args, kwargs)
        if kept is not None:
            if is_stream(result):
                items: list[Any] = []
                async for item in _closing(result):
                    if len(items) >= self.server.kept.max_stream_items:
                        raise ResultLimitError(
                            f"a kept stream may hold {self.server.kept.max_stream_items} items "
                            "(RETURN false); call the stream directly to read more"
                        )
                    items.append(item)
                kept.set_items(items, self.server.kept.clock())
            else:
                kept.set_value(result, self.server.kept.clock())
        elif is_stream(result):
            await self._stream(request.id, result, method.deprecated)
        else:
            self.conn.send_result(request.id, result, deprecated=method.deprecated)

    async def _stream(self, id: str, agen: AsyncIterator[Any], deprecated: bool) -> None:
        conn = self.conn
        try:
            if not conn.send_stream_start(id, deprecated=deprecated):
                return
            self._flush()
            sent = 0
            async for item in agen:
                if not conn.send_stream_item(id, item):
                    return  # cancelled, or the item could not be delivered (405 sent)
                sent += 1
                if conn.pending_bytes < _STREAM_BATCH_BYTES and sent % _STREAM_BATCH_ITEMS:
                    # Written at the end of this loop pass with the items that follow
                    # (a write per item cost more than the item itself).
                    if not self._flush_scheduled and not self._reading:
                        self._flush_scheduled = True
                        self.loop.call_soon(self._flush_now)
                else:
                    # A generator that never awaits would hold the loop: write, then yield.
                    self._flush_now()
                    if self._writable.is_set():
                        await asyncio.sleep(0)
                if not self._writable.is_set():
                    # Back-pressure: the client reads slower than we produce.
                    await self._writable.wait()
            conn.send_stream_end(id)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    def abort_calls(self) -> None:
        """Cancel running calls at shutdown, answering each with 407 or 503."""
        if Feature.CANCEL in self.conn.features:
            self._abort_error = CancelledError("the server cancelled the call: shutting down")
        else:
            self._abort_error = RpcUnavailableException("the server is shutting down")
        for id, task in list(self.tasks.items()):
            self._cancel(id, task)


async def _closing(agen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for item in agen:
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()
