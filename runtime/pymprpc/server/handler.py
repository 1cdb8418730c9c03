"""The asyncio I/O shell around one `ServerConnection`: reads, runs calls, writes, times out.

Flow control, both ways: reading pauses while the server-wide budget of buffered input
is exhausted (`InputBudget`). Calls read while the replies waiting for this client exceed
`max_output_buffer` wait to start until it drains, and once `max_inflight` of them wait,
reading this client pauses too. A client that pipelines calls and never reads their
results thus pins about that much, not every result.

Reading is deliberately *not* paused as soon as the transport is over its high-water
mark: the blocking client sends a request while holding the connection its reading
thread waits for, so a server that stopped reading it then would wait for a client that
waits for the server (test_a_large_request_while_another_thread_reads_a_fast_stream).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Sequence
from typing import Any, Final, Protocol, cast

from ..codes import Code
from ..context import (
    EMPTY_METADATA,
    CallContext,
    MessageSizes,
    Metadata,
    _current,
    end_call,
    set_current,
    untraced,
)
from ..errors import (
    SERVER_DEADLINE_TEXT,
    CancelledError,
    DeadlineExceeded,
    MPRPCError,
    RPCRuntimeError,
    RpcUnavailableException,
    TimeoutException,
    exception_text,
    printable,
    text_of,
    traceback_text,
    type_name,
)
from ..interceptors.chain import compose_call
from ..protocol import (
    Authenticated,
    CallRequest,
    CancelRequest,
    Credentials,
    Feature,
    PlainCall,
    ServerConnection,
    ServerEvent,
    ServerSettings,
    State,
)
from ..readbuffer import ReusedBufferProtocol
from ..schema import INT_MAX as _INT_MAX
from ..schema import INT_MIN as _INT_MIN
from .config import ServerConfig
from .dispatch import PLAIN_RESULTS as _PLAIN
from .dispatch import Dispatcher, UnsentResult, as_call_error, is_stream, worker_failure
from .eager import start_task
from .executors import ExecutorKind, RemoteFunctionError
from .flow import InputBudget
from .kept_results import KeptOutcome, KeptResults, current_scope, fetched_call
from .logins import LoginThrottle, ThrottledCredentials
from .registry import Kind, Method
from .shares import current_owner

log = logging.getLogger(__name__)
_encode_result = Dispatcher.encode_result  # a typed result, as `Dispatcher.run` encodes it

_STREAM: Final = Kind.STREAM  # read per call: a module constant costs less
# The server (its core) whose call runs in this context, set in every call's context (once
# per connection, see _calls_context): Server.close() awaited by one of its own calls
# must not wait for that call to end.
serving_core: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "pymprpc_serving_core", default=None
)

_COROUTINE: Final = Kind.COROUTINE
_PROCESS: Final = ExecutorKind.PROCESS
_CLOSED: Final = State.CLOSED
_set_current: Final = _current.set  # set_current, without its frame
# A call's context, kept where the handler and the call's own code both find it: [0] the
# `CallContext` once built (None until then); [1], present once the call has ended
# before it was built, the outcome it ended with (a context built later is born ended).
CallCell = list[Any]

# Seconds a closed plain connection may go without its peer reading any of what is left
# to send before it is aborted (a TLS one is bounded by its close_notify wait alike).
CLOSE_STALL_TIMEOUT: Final = 2.0
# A stream writes and yields to the loop at least this often (bytes / items).
_STREAM_BATCH_BYTES = 64 * 1024
_STREAM_BATCH_ITEMS = 256


def _no_backlog() -> int:
    return 0


class HandlerHost(Protocol):
    """What a connection handler needs of its server, and nothing else."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def settings(self) -> ServerSettings: ...

    @property
    def credentials(self) -> Credentials: ...

    @property
    def logins(self) -> LoginThrottle: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    @property
    def kept(self) -> KeptResults: ...

    @property
    def timer_context(self) -> contextvars.Context:
        """The context the connections' timers run in (shared: they read none)."""

    @property
    def input_budget(self) -> InputBudget:
        """Bytes of partial frames all connections together may buffer."""

    @property
    def draining(self) -> bool:
        """The server is shutting down: new calls get 503."""

    @property
    def aborting(self) -> bool:
        """The grace period is over: running calls are being cancelled."""

    def admit(self, handler: ConnectionHandler) -> bool:
        """Count a new connection in; False if max_connections is reached."""

    def closing(self, handler: ConnectionHandler) -> None:
        """The server closed the connection: it no longer counts under max_connections
        (a TLS connection may wait for its peer's close_notify a while yet)."""

    def forget(self, handler: ConnectionHandler) -> None:
        """The connection is gone."""

    def detach(self, task: asyncio.Task[None], kind: str) -> bool:
        """Let a call (a `kind`) of a gone connection run on: a oneway call, or a
        RETURN-false call of an anonymous connection; False if `kept_results` such calls
        already do (it is then cancelled)."""

    def call_started(self, task: asyncio.Task[None]) -> None: ...

    def call_finished(self, task: asyncio.Task[None]) -> None: ...

    @property
    def pass_writes(self) -> PassWrites:
        """The server's replies held for the end of the loop pass."""

    @property
    def connections(self) -> Collection[ConnectionHandler]:
        """The connections admitted and not yet gone."""


class PassWrites:
    """Replies held until the end of the event-loop pass that read their calls, on a
    server with more than one connection open.

    The replies of every call answered within the read that brought it are written
    together when the loop gets to `flush` (scheduled by the pass's first such read), as
    a task per call would write them. A client reading many connections then finds
    several replies ready at each wake-up instead of waking for each: fewer wake-ups,
    and less CPU, on both sides. A server with one connection writes at once (a lone
    client, as in W1, waits for no loop pass).
    """

    __slots__ = ("handlers",)

    def __init__(self) -> None:
        self.handlers: list[ConnectionHandler] = []

    def flush(self) -> None:
        """Write every held reply (connections in the order read)."""
        handlers = self.handlers
        self.handlers = []
        for handler in handlers:
            # handler._write_out(), without its frame (one per call answered).
            transport = handler.transport
            chunks = handler.conn.chunks_to_send()
            if chunks and transport is not None and not transport.is_closing():
                for chunk in chunks:
                    transport.write(chunk)


class ConnectionHandler(ReusedBufferProtocol):
    """Serves one client connection (reads land in the thread's shared buffer)."""

    # A server holds one per connection, most of them idle: slots instead of a dict,
    # and what only some connections need (a waiter for a full output, sets of calls
    # owed no reply) made on first use. Memory per held connection and the objects a
    # full garbage collection walks both scale with it (see bench/README.md, fan-in).
    __slots__ = (
        "_admitted",
        "_buffered",
        "_call_vars",
        "_cancelled",
        "_clock",
        "_connections",
        "_contexts",
        "_credentials",
        "_deferred",
        "_drained",
        "_eof",
        "_executors",
        "_flush_scheduled",
        "_host",
        "_interceptors",
        "_last_activity",
        "_lost",
        "_max_inflight",
        "_max_waiting",
        "_measure",
        "_methods",
        "_no_reply",
        "_output_limit",
        "_owner",
        "_pass",
        "_paused_for",
        "_plain_calls",
        "_reading",
        "_reported",
        "_scope",
        "_timer",
        "_write_paused",
        "conn",
        "loop",
        "peer",
        "tasks",
        "transport",
        "user",
    )

    def __init__(self, host: HandlerHost) -> None:
        self._host = host
        self._credentials = ThrottledCredentials(host.credentials, host.logins)
        self.conn = ServerConnection(host.settings, self._credentials)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.user: str | None = None  # the authenticated user (None: anonymous)
        self._admitted = False  # counted in (not refused over max_connections)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Calls that owe no reply (RETURN false, and ONEWAY: True) run to completion even
        # if the client goes away. Shared empty until the first such call.
        self._no_reply: dict[str, bool] = _NONE
        # Who owns this connection's kept results: its account, or (anonymous) itself.
        self._scope: Hashable = object()
        self._owner = object()  # this connection, for its share of the thread pool
        # The context each call's task starts from (a copy per call): see _calls_context.
        self._call_vars: contextvars.Context | None = None
        # Tasks of calls cancelled by their client (CANCEL) or the connection's end, until
        # they finish: they answer nothing, even if a new call has taken their ID since.
        self._cancelled: set[asyncio.Task[None]] | None = None
        # The loop's clock: time.monotonic itself on asyncio's loops (whose time() just
        # calls it), read on every read without a frame of the loop's method.
        self._clock: Callable[[], float] = (
            time.monotonic
            if getattr(type(self.loop), "time", None) is asyncio.BaseEventLoop.time
            else self.loop.time
        )
        self._last_activity = self._clock()
        self._timer: asyncio.TimerHandle | None = None
        # The transport asked us to stop writing; streams then wait on `_drained` (made
        # by the first one that waits).
        self._write_paused = False
        self._drained: asyncio.Event | None = None
        self._flush_scheduled = False
        self._reading = False  # in data_received: replies wait for its single write
        self._eof = False  # the client half-closed: close once the calls are answered
        self._lost = False  # the connection is gone: its cancelled calls are owed nothing
        self._interceptors = host.config.interceptors
        # Message sizes are measured only for an interceptor that asks (see MessageSizes).
        self._measure = any(getattr(i, "message_sizes", False) for i in self._interceptors)
        if self._measure:
            self.conn.measure_sizes()
        # Contexts of measured calls (an interceptor asked for sizes), by call ID, for
        # _report's error reply; calls without interceptors keep theirs in a cell.
        self._contexts: dict[str, CallContext] = {}
        self._reported: MPRPCError | None = None  # see _settle_failure
        self._buffered = 0  # input bytes of a partial frame, as counted by the budget
        self._paused_for: tuple[str, ...] = ()  # why reading is paused: "input", "output"
        # Calls read while the output was over max_output_buffer, started once it drains.
        self._deferred: dict[str, CallRequest] = {}
        self._output_limit = host.config.max_output_buffer
        self._max_inflight = host.config.max_inflight
        self._max_waiting = self._max_inflight or 1000
        # Plain calls take the fast lane (receive_call, _run_plain) unless interceptors
        # need every call's context up front. False: every call takes the general path.
        self._plain_calls = not self._interceptors
        self._methods = host.dispatcher.registry.methods
        self._executors = host.dispatcher.executors
        self._pass = host.pass_writes
        self._connections = host.connections  # the server's open connections

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        if isinstance(self.peer, tuple) and self.peer:
            self._credentials.peer = str(self.peer[0])
        if not self._host.admit(self):
            limit = self._host.config.max_connections
            log.warning("refusing %s: max_connections=%d reached", self.peer, limit)
            self.conn.fail(RpcUnavailableException("too many connections"))
            self._flush_now()
            self.transport.close()
            return
        self._admitted = True
        log.info("connection from %s accepted", _peer_text(self.peer))
        auth_timeout = self._host.config.auth_timeout
        if auth_timeout:
            self._timer = self._later(auth_timeout, self._auth_expired)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        queued = conn.pending_bytes
        transport = self.transport
        if not (
            self._plain_calls
            and not self._deferred
            and transport is not None
            and (
                not self._output_limit
                or queued + transport.get_write_buffer_size() <= self._output_limit
            )
        ):
            self._received(conn.receive_data(data), queued)
            return
        # The fast lane: a read of exactly one plain call (ServerConnection.receive_call)
        # comes back as a tuple and is started here as _received would start it (nothing
        # in the way: no calls waiting for the output, which is under its limit); any
        # other read comes back as the events receive_data gives, handled by _received.
        self._reading = True
        try:
            received = conn.receive_call(data)
            if type(received) is tuple:
                self._last_activity = self._clock()
                max_inflight = self._max_inflight
                if self._host.draining or (max_inflight and len(self.tasks) >= max_inflight):
                    self._start_call(CallRequest(*received))  # refused there
                else:
                    base = self._call_vars or self._calls_context()
                    task = start_task(self.loop, self._run_plain(*received), base.copy())
                    if task is not None:  # None: the call finished within its first step
                        self.tasks[received[0]] = task
                        self._host.call_started(task)
        finally:
            self._reading = False
        if type(received) is not tuple:
            self._received(cast(Sequence[ServerEvent | PlainCall], received), queued)
            return
        # A whole frame was read, so nothing is buffered: no input budget to update.
        if conn.state is _CLOSED:  # (conn.closed, without its frame)
            self._flush_now()
            self._protocol_closed()
        elif conn.pending_bytes:
            if len(self._connections) > 1:  # see PassWrites
                held = self._pass.handlers
                if not held:
                    self.loop.call_soon(self._pass.flush)
                held.append(self)
                return
            self._flush_scheduled = False  # what _received's _flush_now does
            if not transport.is_closing():
                for chunk in conn.chunks_to_send():
                    transport.write(chunk)

    def _received(self, events: Sequence[ServerEvent | PlainCall], queued: int) -> None:
        """Act on the events of one read (`queued`: bytes queued before it)."""
        self._reading = True
        try:
            if events or self.conn.pending_bytes != queued:
                # A complete message (bytes of a partial frame do not keep a peer alive).
                self._last_activity = self._clock()
            for event in events:
                if type(event) is tuple:  # a plain call (ServerConnection.receive_call)
                    if self._deferred or (self._output_limit and self._output_full()):
                        self._defer(CallRequest(*event))
                    else:
                        self._start_plain(event)
                elif type(event) is CallRequest:
                    if self._deferred or (self._output_limit and self._output_full()):
                        self._defer(event)
                    else:
                        self._start_call(event)
                elif isinstance(event, CancelRequest):
                    task = self.tasks.get(event.id)
                    if task is not None:
                        self._cancel(event.id, task)
                        if self._no_reply:  # its ID is retired: a new call may take it
                            self._no_reply.pop(event.id, None)
                    self._deferred.pop(event.id, None)
                elif isinstance(event, Authenticated):
                    self._on_authenticated(event)
            self.conn.settle()  # a bad message after these: close, after their replies
        finally:
            self._reading = False
            buffered = self.conn.buffered_bytes
            if buffered != self._buffered:
                self._buffered = buffered
                self._host.input_budget.update(self, buffered)
        if self.conn.pending_bytes:
            self._flush_now()
            transport = self.transport
            if (
                self._write_paused
                and self._output_limit
                and transport is not None
                and transport.get_write_buffer_size() > self._output_limit
            ):
                # Replies the protocol queued itself (pongs, 400s for malformed calls) to a
                # client that does not read: read no more until it does, as for calls.
                self._pause_reading("replies")
        if self.conn.closed:
            self._protocol_closed()

    def _protocol_closed(self) -> None:
        """The protocol closed the connection (its error reply is sent): close it."""
        if self.conn.error is not None:
            log.info("closing %s: %s", self.peer, self.conn.error)
        self._close_transport()

    def eof_received(self) -> bool:
        """The client half-closed, or is gone: answer the calls already received within
        `half_close_timeout`, then close (TLS cannot half-close: there it closes at once).

        TCP shows a client that shut down its sending side and one that closed its
        socket the same way, by an EOF; only writing to it tells them apart (a gone one
        answers with a reset, and the next write fails). A call that sends nothing would
        therefore hold a gone client's connection for ever: the timeout bounds that.
        """
        if self.conn.pending_bytes:
            # Replies held for the end of this loop pass (PassWrites): uvloop reads on
            # until a read comes short, so a client's calls and its EOF can arrive in one
            # pass, and returning False below closes the transport before that write.
            self._write_out()
        tls = self.transport is not None and self.transport.get_extra_info("sslcontext")
        owed = len(self.tasks) > len(self._no_reply) or self._deferred
        timeout = self._host.config.half_close_timeout
        if owed and not self.conn.closed and not tls and timeout > 0:
            self._eof = True
            if self._timer is not None:
                self._timer.cancel()  # idle: replaced by the half-close bound
            self._timer = self._later(timeout, self._half_close_expired)
            return True  # keep the transport open for the replies
        return False  # nothing owed (RETURN-false calls run on without it): close

    def _half_close_expired(self) -> None:
        self._timer = None
        log.info(
            "closing %s: %d call(s) still running %.1fs after the client's EOF",
            self.peer,
            len(self.tasks) - len(self._no_reply),
            self._host.config.half_close_timeout,
        )
        self.close()  # connection_lost then cancels the calls (RETURN false run on)

    @property
    def gone(self) -> bool:
        """Whether the connection has ended (its socket is closed)."""
        return self._lost

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            log.info(
                "connection from %s closed%s",
                _peer_text(self.peer),
                f": {exc}" if exc is not None else "",
            )
        self._lost = True
        self._host.forget(self)
        self._host.input_budget.forget(self)
        self._buffered = 0
        self._deferred.clear()
        if self._timer is not None:
            self._timer.cancel()
        # Cancelling closes running coroutines and the async generators of streams. Calls
        # with RETURN false run on: their outcome is kept for system.getresult.
        anonymous = not isinstance(self._scope, str)
        no_reply = self._no_reply
        for id, task in list(self.tasks.items()):
            oneway = no_reply.get(id)
            if oneway is None:
                pass  # its client is gone: nobody to answer
            elif oneway:
                if self._host.detach(task, "oneway call"):
                    continue  # fire-and-forget: runs on, at most kept_results server-wide
            elif not anonymous:
                continue  # RETURN false: an account's are bounded by its kept_results quota
            elif self._host.detach(task, "RETURN-false call of an anonymous connection"):
                continue  # nobody can fetch its outcome, yet it runs on, bounded likewise
            self._cancel(id, task)
        if anonymous:
            self._host.kept.drop_scope(self._scope)  # nobody can fetch them any more
        self._set_writable()

    def pause_writing(self) -> None:
        # Streams wait; calls wait once over max_output_buffer.
        self._write_paused = True
        if self._drained is not None:
            self._drained.clear()

    def resume_writing(self) -> None:
        self._set_writable()
        self._resume_reading("replies")
        if self._deferred:
            # Not from inside the transport's write callback: start them on the next pass.
            self.loop.call_soon(self._start_deferred)

    # -- flow control ----------------------------------------------------------------

    def pause_input(self) -> None:
        """The server's input budget is exhausted: stop reading (see `InputBudget`)."""
        self._pause_reading("input")

    def resume_input(self) -> None:
        """The server's input budget has room again."""
        self._resume_reading("input")

    def _set_writable(self) -> None:
        self._write_paused = False
        if self._drained is not None:
            self._drained.set()

    async def _wait_writable(self) -> None:
        """Until the transport takes writes again (or the connection is gone)."""
        if self._drained is None:
            self._drained = asyncio.Event()
        if self._write_paused:
            await self._drained.wait()

    def _pause_reading(self, reason: str) -> None:
        transport = self.transport
        if not self._paused_for and transport is not None and not transport.is_closing():
            transport.pause_reading()
        if reason not in self._paused_for:
            self._paused_for += (reason,)

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._paused_for:
            return
        self._paused_for = tuple(r for r in self._paused_for if r != reason)
        transport = self.transport
        if not self._paused_for and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _output_full(self) -> bool:
        """Whether the bytes waiting for this client exceed `max_output_buffer`."""
        transport = self.transport
        if not self._output_limit or transport is None:
            return False
        if self.conn.pending_bytes + transport.get_write_buffer_size() <= self._output_limit:
            return False
        # Over the limit: hand the queue to the transport, which sends what the socket
        # takes; only what it cannot send counts (and then it has paused writing).
        self._flush_now()
        return self._write_paused and transport.get_write_buffer_size() > self._output_limit

    def _defer(self, request: CallRequest) -> None:
        self._deferred[request.id] = request
        if len(self._deferred) >= self._max_waiting:
            # A client that pipelines this many calls without reading: stop reading it.
            self._pause_reading("output")

    def _start_deferred(self) -> None:
        while self._deferred and not self.conn.closed:
            if self._write_paused or self._output_full():
                break  # resume_writing calls us again
            id = next(iter(self._deferred))
            self._start_call(self._deferred.pop(id))
        if self.conn.closed:
            self._deferred.clear()
        if len(self._deferred) < self._max_waiting:
            self._resume_reading("output")
        self._flush()
        if self._eof and not self._deferred and len(self.tasks) <= len(self._no_reply):
            self.close()  # half-closed by the client, and every call answered

    # -- helpers ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what is queued now; while other calls run, also once more at the end of
        this loop pass, so their replies share one write (fewer syscalls). Calls answered
        within a read are written together when the read is handled (with more than one
        connection open, at the end of the pass: see PassWrites)."""
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
        """Send what is queued, then close the connection.

        Calls read but still waiting for the output to drain are answered 503 (never run).
        """
        deferred, self._deferred = self._deferred, {}
        for id in deferred:
            self.conn.send_error(id, RpcUnavailableException("the server is shutting down", id=id))
        self._flush_now()
        self._close_transport()

    def answer_abandoned(self, stuck: Collection[asyncio.Task[Any]]) -> None:
        """Answer this connection's calls whose tasks are in `stuck` (they ignored their
        cancellation past the grace period and are abandoned) as the calls that took it
        were: 407, or 503 without `cancel`. Their connection closes next; without this a
        client could not tell them from a crash. Should one end later, its reply is not
        owed any more, and is not sent."""
        for id, task in list(self.tasks.items()):
            if task in stuck and self.conn.awaits_reply(id):
                self.conn.send_error(id, self._abort_error())

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_extra_info("sslcontext") is not None:
                # A TLS close waits at most 2 s for the peer's close_notify: it no longer
                # counts as open.
                self._host.closing(self)
            else:
                # A plain one waits for its peer to read what is queued: for as long as
                # it reads, but not for ever if it stops (a peer keeping its window shut
                # would hold the bytes, the descriptor and a place under
                # max_connections).
                self._watch_close(transport.get_write_buffer_size())

    def _watch_close(self, left: int) -> None:
        if self._timer is not None:
            self._timer.cancel()  # the idle or login timer: the connection is closing
            self._timer = None
        if left:
            self._timer = self._later(
                CLOSE_STALL_TIMEOUT, functools.partial(self._close_stalled, left)
            )

    def _close_stalled(self, left: int) -> None:
        """`CLOSE_STALL_TIMEOUT` after a close with `left` bytes still to send."""
        self._timer = None
        transport = self.transport
        if self._lost or transport is None:
            return
        now = transport.get_write_buffer_size()
        if now and now >= left:
            log.info(
                "closing %s: its peer read none of the last %d bytes for %.0fs",
                _peer_text(self.peer),
                now,
                CLOSE_STALL_TIMEOUT,
            )
            transport.abort()
        else:
            self._watch_close(now)  # it reads: wait on

    def fail(self, error: MPRPCError) -> None:
        """Send a connection-level error and close."""
        self.conn.fail(error)
        self._flush_now()
        self._close_transport()

    def _on_authenticated(self, event: Authenticated) -> None:
        log.debug("%s authenticated as %r, features %s", self.peer, event.username, event.features)
        if event.username:
            self._scope = event.username
            self.user = event.username
            self._call_vars = None  # built again, with the new scope, for the first call
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self._host.settings.idle_timeout
        if timeout:
            self._timer = self._later(timeout, self._check_idle)

    def _later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, context=self._host.timer_context)

    def _auth_expired(self) -> None:
        self._timer = None
        if self.conn.state is State.AUTHENTICATING:
            self.fail(
                TimeoutException(
                    f"authentication not completed within {self._host.config.auth_timeout}s"
                )
            )

    def _check_idle(self) -> None:
        timeout = self._host.settings.idle_timeout or 0.0
        now = self._clock()
        idle_for = now - self._last_activity
        if self.tasks:
            # A connection with a call still running is not idle.
            self._timer = self._later(timeout, self._check_idle)
        elif idle_for >= timeout:
            self._timer = None
            log.info("closing %s: idle for %.1fs", self.peer, idle_for)
            self.fail(TimeoutException("idle connection closed"))
        else:
            self._timer = self._later(timeout - idle_for, self._check_idle)

    # -- calls -----------------------------------------------------------------------

    def _start_call(self, request: CallRequest) -> None:
        refusal = None
        max_inflight = self._max_inflight
        if self._host.draining and request.method != HEALTH_METHOD:
            refusal = RpcUnavailableException("the server is shutting down", id=request.id)
        elif max_inflight and len(self.tasks) >= max_inflight:
            refusal = RpcUnavailableException(
                f"too many calls in flight on this connection "
                f"(max_inflight={max_inflight}); retry when some finish",
                id=request.id,
            )
        if refusal is not None:
            self.conn.send_error(request.id, refusal)
            return
        base = self._call_vars or self._calls_context()
        task = start_task(self.loop, self._run_call(request), base.copy())
        if task is not None:  # None: the call finished within its first step
            self.tasks[request.id] = task
            if not request.returns or request.oneway:
                if self._no_reply is _NONE:
                    self._no_reply = {}
                self._no_reply[request.id] = request.oneway
            self._host.call_started(task)

    def _start_plain(self, call: PlainCall) -> None:
        """`_start_call(CallRequest(*call))` for a plain call, through `_run_plain` (what
        data_received's fast lane does for a read of one call)."""
        max_inflight = self._max_inflight
        if self._host.draining or (max_inflight and len(self.tasks) >= max_inflight):
            self._start_call(CallRequest(*call))  # refused there
            return
        base = self._call_vars or self._calls_context()
        task = start_task(self.loop, self._run_plain(*call), base.copy())
        if task is not None:  # None: the call finished within its first step
            self.tasks[call[0]] = task
            self._host.call_started(task)

    def _calls_context(self) -> contextvars.Context:
        """The context this connection's calls start from, each in a copy of its own: the
        one reading runs in (what a task started here would copy), with the connection's
        kept-results scope (read by getresult) and thread-pool owner (see shares) set.
        Set once here rather than in every call's task: two context-variable stores per
        call fewer, and a call sees the same values either way."""
        ctx = contextvars.copy_context()
        ctx.run(current_scope.set, self._scope)
        ctx.run(current_owner.set, self._owner)
        ctx.run(serving_core.set, self._host)
        self._call_vars = ctx
        return ctx

    def _call_done(self, id: str, task: asyncio.Task[None] | None) -> None:
        """Forget a finished call (idempotent)."""
        if task is None:
            return
        if self.tasks.get(id) is task:
            del self.tasks[id]
            if self._no_reply:
                self._no_reply.pop(id, None)
        if self._cancelled:
            self._cancelled.discard(task)
        self._host.call_finished(task)
        self._last_activity = self._clock()
        if self._eof and len(self.tasks) <= len(self._no_reply) and not self._deferred:
            self.close()  # half-closed by the client, and every call answered

    def _withdrawn(self) -> bool:
        """Whether the running call was cancelled by its client (CANCEL) or by the end of
        its connection: then it answers nothing, whatever it does next. Its ID is retired
        and may be a new call's by now, whose reply its own would take."""
        cancelled = self._cancelled
        return cancelled is not None and asyncio.current_task(self.loop) in cancelled

    def _cancel(self, id: str, task: asyncio.Task[None]) -> None:
        task.cancel()
        if self._contexts:
            # Its context, kept while it runs for its sizes (see _execute): forgotten now,
            # while `id` is still this call's (_run_call leaves a withdrawn call's alone).
            self._contexts.pop(id, None)
        if self._cancelled is None:
            self._cancelled = set()
        self._cancelled.add(task)
        # A task cancelled before its first step never runs _run_call's finally, which
        # normally forgets it (a done callback per call would cost a loop pass each).
        task.add_done_callback(functools.partial(self._call_done, id))

    async def _run_call(self, request: CallRequest) -> None:
        kept: KeptOutcome | None = None
        deadline: asyncio.Timeout | None = None
        failing: CallCell = [None]  # the context of a call that raised
        try:
            if not request.returns and not request.oneway:
                kept = self._host.kept.open(self._scope, request.id, request.method)
            if request.deadline is None:
                await self._execute(request, kept, None, failing)
            else:
                deadline = asyncio.timeout(request.deadline)
                deadline_at = time.monotonic() + request.deadline
                try:
                    async with deadline:
                        await self._execute(request, kept, deadline_at, failing)
                except TimeoutError:
                    if deadline.expired():
                        raise DeadlineExceeded(
                            f"{SERVER_DEADLINE_TEXT}{request.deadline}s exceeded", id=request.id
                        ) from None
                    raise
        except BaseException as exc:
            if not self._settle_failure(request, kept, exc, failing):
                raise  # the client went away or cancelled: nobody to answer
        finally:
            # A cancelled task keeps its CancelledError, whose traceback keeps this frame:
            # no local of it may lead back to the task (the Timeout does), or the cycle
            # keeps the handler's frames and locals alive until the garbage collector runs.
            deadline = None
            # A call cancelled by its client has its ID retired already (a new call's, it
            # may be): not to be forgotten or released again here.
            withdrawn = bool(self._cancelled) and self._withdrawn()
            if self._contexts and not withdrawn:  # a measured call's (see _execute)
                self._contexts.pop(request.id, None)
            if not request.returns and not withdrawn:
                self.conn.release(request.id)
            self._flush()
            # A call answered within its eager first step was never registered (see
            # _start_call): nothing to forget, and the read that brought it has just
            # counted as activity. With the loop given, current_task() skips
            # get_running_loop() (a getpid() system call on 3.11).
            if request.id in self.tasks:
                self._call_done(request.id, asyncio.current_task(self.loop))

    async def _run_plain(self, id: str, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """`_run_call(CallRequest(id, name, args, kwargs))` with the general layers left
        out where they have nothing to do: a coroutine method, or a plain function run on
        the process pool, called by its exact name, with arguments that fit, and no
        interceptors. Any other call goes through `_execute`; failures through `_failed`;
        so the outcome is the same."""
        # The call's context once built (by _execute, or lazily for the handler here):
        # ended once the call is answered.
        cell: CallCell = [None]
        try:
            method = self._methods.get(name)
            arity = None if method is None else method.plain_arity
            if (
                method is None
                or arity is None
                or kwargs
                or not arity[0] <= len(args) <= arity[1]
                or (
                    method.kind is not _COROUTINE
                    and (method.executor or self._executors.default) is not _PROCESS
                )
                or (method.schema is not None and not method.schema._fits_unpacked(args))
            ):
                await self._execute(CallRequest(id, name, args, kwargs), None, None, cell)
                return
            # What _execute does for such a call (its context built only if asked for).
            source = functools.partial(self._plain_context, cell, id, name, args, kwargs)
            _set_current(source)
            if method.kind is _COROUTINE:
                result = await method.func(*args)
            else:
                # What Dispatcher.run and Executors.run do for it, without their frames
                # (each one more to pass through when the worker's result resumes it).
                try:
                    result = await self._executors.process.run(
                        method.name, method.key, method.path, args, kwargs, source
                    )
                except RemoteFunctionError as exc:
                    error = worker_failure(method, exc)
                    if error is exc:
                        raise
                    raise error from None
            if method.schema is not None:
                # As _execute encodes it; a result of the declared plain type (its usual
                # case) is sent as it is without that frame, as encode_result's own test.
                kind: Any = method.plain_result
                if type(result) is not kind or (kind is int and not _INT_MIN <= result <= _INT_MAX):
                    result = _encode_result(method, result)
            # (A context the handler asked for is ended once its reply is queued.)
            ctx = cell[0]
            metadata = ctx.response_metadata if ctx is not None else None
            if self._cancelled and self._withdrawn():
                # Returned although its client cancelled it (it swallowed the cancellation).
                aclose = getattr(result, "aclose", None) if is_stream(result) else None
                if aclose is not None:
                    await aclose()
                if ctx is not None:
                    end_call(ctx, None)
            elif type(result) in _PLAIN or not is_stream(result):
                conn = self.conn
                conn.send_result(
                    id, result, deprecated=method.deprecated, metadata=metadata, method=name
                )
                if conn.refused is not None:
                    refused = self._log_refused(name, id)
                    if ctx is not None:
                        end_call(ctx, refused)
                elif ctx is not None:
                    end_call(ctx, None)
            else:
                refused = await self._stream(id, result, method.deprecated, metadata, name=name)
                end_call(cell[0], refused)  # (built while it streamed, maybe)
        except BaseException as exc:
            if not self._settle_failure(CallRequest(id, name, args, kwargs), None, exc, cell):
                raise  # the client went away or cancelled: nobody to answer
        finally:
            if not self._reading:  # else data_received writes it
                self._flush()
            if id in self.tasks:  # see _run_call
                self._call_done(id, asyncio.current_task(self.loop))

    def _plain_context(
        self,
        cell: CallCell,
        id: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> CallContext:
        ctx: CallContext | None = cell[0]
        if ctx is None:
            ctx = cell[0] = self.call_context(CallRequest(id, name, args, kwargs), None, False)
            if len(cell) > 1:  # asked for after its call ended (see _settle_failure)
                end_call(ctx, cell[1])
        return ctx

    def _settle_failure(
        self,
        request: CallRequest,
        kept: KeptOutcome | None,
        exc: BaseException,
        failing: CallCell | None = None,
    ) -> bool:
        """`_failed`, and if even that raises (user code ran: an exception whose class
        lies about itself, say), a plain 404 naming what can be named: every call that
        fails is answered. Then the call's context (`failing[0]`, if one was built) is
        ended with the error its client was answered with (kept, logged), or `exc` when
        nobody was to be answered."""
        self._reported = None
        try:
            return self._failed(request, kept, exc)
        except Exception as err:  # noqa: BLE001 - nothing may leave a call unanswered
            name = type_name(exc)
            log.error(
                "call %s id=%s from %s raised %s, which could not be described (%s: %s)",
                printable(request.method),
                printable(request.id),
                _peer_text(self.peer),
                name,
                type_name(err),
                exception_text(err),
            )
            error = RPCRuntimeError(
                f"the method raised {name}, which the server could not describe",
                exception=name,
            )
            self._report(request, kept, as_call_error(error, request, frame=False)[0], "")
            return True
        finally:
            # _report ran within this same step (no await since): its error is this call's.
            # Not kept: it may hold a traceback, and its frames this handler.
            reported, self._reported = self._reported, None
            if failing is not None:
                outcome = reported if reported is not None else exc
                if failing[0] is None:
                    # Not built yet: a handler still running in a thread may ask for it
                    # (after its call was cancelled), and gets it ended (see _lazy_context).
                    failing.append(untraced(outcome))
                else:
                    end_call(failing[0], outcome)

    def _failed(self, request: CallRequest, kept: KeptOutcome | None, exc: BaseException) -> bool:
        """Settle a call that raised `exc`: answer (or keep) its error and return True,
        or return False if it was cancelled and nobody is to be answered (re-raise)."""
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled by its client or the connection's end: nobody waits for its reply
            # (its ID may already be a new call's, which this must not answer).
            asked = not self._withdrawn()
            if asked and self._host.aborting and _being_cancelled():
                self._report(request, kept, self._abort_error(), "")
            elif asked and not self._lost and self.conn.awaits_reply(request.id):
                # Not cancelled by its client (CANCEL retires the ID) nor by the end of
                # its connection: raised by the handler itself (say, awaiting an inner
                # task that was cancelled), or its task cancelled by the application.
                # The client still waits for this ID: answer it.
                self._report(
                    request,
                    kept,
                    *as_call_error(
                        self._cancelled_error(), request, frame=self.conn.settings.debug
                    ),
                )
            else:
                if kept is not None:
                    kept.set_error(CancelledError("the call was cancelled", id=request.id))
                return False
        elif self._cancelled and self._withdrawn():
            # What a call cancelled by its client did instead of ending (it swallowed
            # the cancellation, then raised): nobody is to be answered, as for the above.
            if kept is not None:
                kept.set_error(CancelledError("the call was cancelled", id=request.id))
        elif isinstance(exc, Exception):
            if type(exc) is UnsentResult:
                # What a worker returned that cannot be sent: as the connection refuses it.
                self._log_refused(request.method, request.id, exc)
                self._report(request, kept, exc, None)
                return True
            error, frame = as_call_error(exc, request, frame=self.conn.settings.debug)
            if not isinstance(exc, MPRPCError):
                self._log_failure(request, exc)
            self._report(request, kept, error, frame)
        elif (
            isinstance(exc, GeneratorExit)
            and self._host.aborting
            and asyncio.current_task(self.loop) is None
        ):
            # Its coroutine closed from outside any task, after it ignored cancellation past
            # the grace period (server._end_abandoned): nobody waits for it any more. (A
            # handler raising GeneratorExit itself runs in its task: answered below.)
            if kept is not None:
                kept.set_error(CancelledError("the call was cancelled", id=request.id))
            return False
        else:  # SystemExit, GeneratorExit, custom subclasses
            # A handler must not stop the server, nor leave its call (or a kept outcome)
            # unsettled: only its own call fails. Returning is allowed even for a
            # GeneratorExit thrown by close(): this coroutine awaits nothing more.
            name = type_name(exc)
            tail, with_traceback = _traceback_for_log(exc)
            log.error(
                "call %s id=%s from %s raised %s: the call failed, the server keeps serving%s",
                printable(request.method),
                printable(request.id),
                _peer_text(self.peer),
                name,
                tail,
                **with_traceback,
            )
            error = RPCRuntimeError(f"the method raised {name}({_args_text(exc)})", exception=name)
            frame = _format(exc) if self.conn.settings.debug else ""
            self._report(request, kept, as_call_error(error, request, frame=False)[0], frame)
        return True

    def _log_refused(
        self, method: str, id: str, error: MPRPCError | None = None
    ) -> MPRPCError | None:
        """The connection answered 405 for what call `id` returned or a stream yielded
        (`conn.refused`, cleared here), or a kept call's value could not be encoded
        (`error`): a bug of the handler's, logged once at ERROR, as an exception it raised
        is. Returns that error."""
        if error is None:
            error, self.conn.refused = self.conn.refused, None
        fetched = fetched_call.get() if method == GETRESULT_METHOD else None
        if fetched is not None:
            # A kept value fetched now (too large for this reply, say): the method that
            # returned it is the one to name, with its ID, not the fetch.
            log.error(
                "call %s id=%s from %s (fetched by %s id=%s): what it returned cannot be "
                "sent, answered 405: %s",
                printable(fetched[0]),
                printable(fetched[1]),
                _peer_text(self.peer),
                GETRESULT_METHOD,
                printable(id),
                error,
            )
            return error
        log.error(
            "call %s id=%s from %s: what it returned cannot be sent, answered 405: %s",
            printable(method),
            printable(id),
            _peer_text(self.peer),
            error,
        )
        return error

    def _log_failure(self, request: CallRequest, exc: Exception) -> None:
        """An application error: logged once, at ERROR, with its traceback and the call."""
        peer = _peer_text(self.peer)
        if isinstance(exc, RemoteFunctionError):  # its traceback is the worker's text
            log.error(
                "call %s id=%s from %s raised %s: %s\n%s",
                printable(request.method),
                printable(request.id),
                peer,
                exc.type_name,
                exc,
                exc.frame.rstrip(),
            )
        else:
            tail, with_traceback = _traceback_for_log(exc)
            log.error(
                "call %s id=%s from %s raised %s: %s%s",
                printable(request.method),
                printable(request.id),
                peer,
                type_name(exc),
                exception_text(exc),  # (logging would print its own error for a bad str)
                tail,
                **with_traceback,
            )

    # -- the call context -------------------------------------------------------------

    def _lazy_context(
        self,
        cell: CallCell,
        request: CallRequest,
        deadline_at: float | None,
        streaming: bool,
    ) -> CallContext:
        """The context of a call run without interceptors, built on first use and kept in
        `cell`, which belongs to this call alone (the reply takes its response metadata
        from there). Not kept by the connection under the call's ID: a context asked for
        after the reply (from a callback or a task the handler left behind) would stay
        there, and the next call reusing that ID would find it as its own."""
        ctx: CallContext | None = cell[0]
        if ctx is None:
            ctx = cell[0] = self.call_context(request, deadline_at, streaming)
            if len(cell) > 1:  # asked for after its call ended (see _settle_failure)
                end_call(ctx, cell[1])
        return ctx

    def call_context(
        self,
        request: CallRequest,
        deadline_at: float | None,
        streaming: bool,
    ) -> CallContext:
        """The `CallContext` of `request` on this connection."""
        raw_peer = self.peer
        peer = None
        if isinstance(raw_peer, tuple) and len(raw_peer) >= 2:
            peer = (str(raw_peer[0]), int(raw_peer[1]))
        cert = None
        if self.transport is not None and self.transport.get_extra_info("sslcontext"):
            cert = self.transport.get_extra_info("peercert") or None
        raw = request.metadata
        return CallContext(
            id=request.id,
            method=request.method,
            peer=peer,
            user=self.user,
            peer_certificate=cert,
            deadline=deadline_at,
            metadata=EMPTY_METADATA if not raw else Metadata(raw),
            returns=request.returns,
            streaming=streaming,
            sizes=MessageSizes(request.size) if self._measure else None,
        )

    def _cancelled_error(self) -> MPRPCError:
        message = "the method raised CancelledError without its call being cancelled"
        if Feature.CANCEL in self.conn.features:
            return CancelledError(message)
        return RPCRuntimeError(message, exception="CancelledError")

    def _abort_error(self) -> MPRPCError:
        """How a call cancelled at shutdown is answered: 407 or (no CANCEL) 503."""
        if Feature.CANCEL in self.conn.features:
            return CancelledError("the server cancelled the call: shutting down")
        return RpcUnavailableException("the server is shutting down")

    def _report(
        self,
        request: CallRequest,
        kept: KeptOutcome | None,
        error: MPRPCError,
        frame: str | None,
    ) -> None:
        code = error.code
        if (code == Code.CANCELLED and Feature.CANCEL not in self.conn.features) or (
            code == Code.DEADLINE_EXCEEDED and Feature.DEADLINE not in self.conn.features
        ):
            # A peer that did not negotiate the feature (a pymprpc 0.0.3 client) never
            # gets its code: a handler raising one fails its call with 404 naming it.
            unknown = RPCRuntimeError(str(error), exception=type_name(error), id=error.id)
            unknown.data = error.data
            error = unknown
        self._reported = error  # for _settle_failure, which ends the call's context with it
        if request.oneway:  # nobody to tell: the server's log is the only witness
            log.info(
                "oneway call %s(%s) failed: %s",
                printable(request.method),
                printable(request.id),
                printable(str(error), 1024),
            )
        elif kept is not None:
            kept.set_error(error)
        else:
            ctx = self._contexts.get(request.id) if self._contexts else None
            if ctx is not None and ctx.sizes is not None:
                _MeasuredConnection(self.conn, ctx.sizes).send_error(request.id, error, frame=frame)
            else:
                self.conn.send_error(request.id, error, frame=frame)

    async def _execute(
        self,
        request: CallRequest,
        kept: KeptOutcome | None,
        deadline_at: float | None,
        failing: CallCell,
    ) -> None:
        """Run call `request` (its context built now if interceptors need it, else when
        the handler asks), and send or keep what it returns. If it raises, its context,
        if built, goes in `failing[0]`: the caller answers the error, then ends it."""
        dispatcher = self._host.dispatcher
        method = dispatcher.registry.resolve(request.method)  # 401 comes before any chain
        interceptors = self._interceptors
        if not interceptors:
            # Nobody needs the context up front: build it only if the handler asks (in
            # `failing`, where the caller finds it to end if the call raises).
            streaming = method.kind is _STREAM
            _set_current(
                functools.partial(self._lazy_context, failing, request, deadline_at, streaming)
            )
            args, kwargs = method.bind(request.args, request.kwargs)
            if method.kind is _COROUTINE and method.schema is not None:
                # A typed coroutine: awaited here and its result encoded as `run` would,
                # without the dispatcher's coroutine frame around it.
                result = dispatcher.encode_result(method, await method.func(*args, **kwargs))
            else:
                result = await dispatcher.run(method, args, kwargs)
            refusal = await self._deliver(request, kept, method, result, failing[0])
            end_call(failing[0], refusal)  # (if the handler asked for it)
            return
        ctx = self.call_context(request, deadline_at, method.kind is _STREAM)
        if ctx.sizes is not None:
            # Found by _report for an error reply; forgotten by _run_call's finally.
            self._contexts[request.id] = ctx
        set_current(ctx)
        chain = compose_call(
            interceptors, functools.partial(self._terminal, method, request, ctx), ctx
        )
        try:
            result = await chain(ctx)
            refusal = await self._deliver(request, kept, method, result, ctx)
        except BaseException:
            failing[0] = ctx
            raise
        # Interceptors learn the call's end from its context (add_done_callback): what
        # `call_next` returned may still be refused by the connection (405).
        end_call(ctx, refusal)

    async def _deliver(
        self,
        request: CallRequest,
        kept: KeptOutcome | None,
        method: Method,
        result: Any,
        ctx: CallContext | None,
    ) -> MPRPCError | None:
        """Send (or keep) what call `request` returned: the error the connection answered
        instead (405: the value, or a stream's item, cannot be sent), or None."""
        metadata = ctx.response_metadata if ctx is not None else None
        if self._cancelled and self._withdrawn():
            # Returned although its client cancelled it (it swallowed the cancellation).
            aclose = getattr(result, "aclose", None) if is_stream(result) else None
            if aclose is not None:
                await aclose()
            if kept is not None:
                kept.set_error(CancelledError("the call was cancelled", id=request.id))
            return None
        if request.oneway:
            aclose = getattr(result, "aclose", None) if is_stream(result) else None
            if aclose is not None:
                await aclose()  # a stream called oneway: nobody reads it, close at once
            return None
        if kept is not None:
            if is_stream(result):
                async for item in _closing(result):
                    kept.add_item(item)  # ResultLimitError past kept_results_bytes
                kept.end_stream()
            else:
                unencodable = kept.set_value(result)
                if unencodable is not None:
                    self._log_refused(request.method, request.id, unencodable)
            return kept.error  # what its fetch will get: 405 if it could not be kept
        if is_stream(result):
            return await self._stream(
                request.id, result, method.deprecated, metadata, ctx, name=request.method
            )
        sender: ServerConnection | _MeasuredConnection = self.conn
        if ctx is not None and ctx.sizes is not None:
            sender = _MeasuredConnection(self.conn, ctx.sizes)
        sender.send_result(
            request.id,
            result,
            deprecated=method.deprecated,
            metadata=metadata,
            method=request.method,
        )
        if self.conn.refused is not None:
            return self._log_refused(request.method, request.id)
        return None

    async def _terminal(
        self, method: Method, request: CallRequest, first: CallContext, ctx: CallContext
    ) -> Any:
        """The end of the interceptor chain: bind (402) and run the method with `ctx`
        (`first`'s, or a copy an interceptor passed on)."""
        set_current(ctx)  # an interceptor may have replaced it (say, its metadata)
        if ctx._ending is not first._ending:
            # A context an interceptor built afresh: its done callbacks run with the
            # call's own (the handler ends `first`).
            first._ending.follow(ctx._ending)
        args, kwargs = method.bind(request.args, request.kwargs)
        return await self._host.dispatcher.run(method, args, kwargs)

    async def _stream(
        self,
        id: str,
        agen: AsyncIterator[Any],
        deprecated: bool,
        metadata: dict[str, str] | None = None,
        ctx: CallContext | None = None,
        *,
        name: str = "",
    ) -> MPRPCError | None:
        """Send stream `id`'s start, items and end: the error answered instead of its
        start or of an item the connection refused (405, which ends it), or None."""
        conn: ServerConnection | _MeasuredConnection = self.conn
        if ctx is not None and ctx.sizes is not None:
            conn = _MeasuredConnection(self.conn, ctx.sizes)
        try:
            if not conn.send_stream_start(id, deprecated=deprecated, metadata=metadata):
                if self.conn.refused is not None:
                    return self._log_refused(name, id)
                return None
            self._flush()
            sent = 0
            transport = self.transport
            # Bytes the transport holds count against the batch: it pauses us only once its
            # own buffer passes the high-water mark, so a batch written into a buffer just
            # under it would otherwise hold up to twice that for a client that reads nothing.
            backlog = transport.get_write_buffer_size if transport is not None else _no_backlog
            async for item in agen:
                if self._cancelled and self._withdrawn():
                    return None  # cancelled by its client, yet it yielded again: ID retired
                if not conn.send_stream_item(id, item, name):
                    # Cancelled, or the item could not be delivered (405 sent).
                    if self.conn.refused is not None:
                        return self._log_refused(name, id)
                    return None
                sent += 1
                if (
                    conn.pending_bytes + backlog() < _STREAM_BATCH_BYTES
                    and sent % _STREAM_BATCH_ITEMS
                ):
                    # Written at the end of this loop pass with the items that follow
                    # (a write per item cost more than the item itself).
                    if not self._flush_scheduled and not self._reading:
                        self._flush_scheduled = True
                        self.loop.call_soon(self._flush_now)
                else:
                    # A generator that never awaits would hold the loop: write, then yield.
                    self._flush_now()
                    if not self._write_paused:
                        await asyncio.sleep(0)
                if self._write_paused:
                    # Back-pressure: the client reads slower than we produce.
                    await self._wait_writable()
            conn.send_stream_end(id)
            return None
        finally:
            aclose = getattr(agen, "aclose", None)
            # A generator still running cannot be closed (aclose() raises RuntimeError):
            # its `finally` ignored the shutdown's cancellation and this coroutine is being
            # closed now (server._end_abandoned); the loop's end deals with it.
            if aclose is not None and not getattr(agen, "ag_running", False):
                await aclose()


HEALTH_METHOD = "system.health"
GETRESULT_METHOD = "system.getresult"
# The calls owed no reply of a connection that has had none (never written to).
_NONE: Final[dict[str, bool]] = {}  # answered while draining, when other calls get 503


class _MeasuredConnection:
    """A `ServerConnection`'s reply methods, each reporting the bytes it queued to a
    call's `MessageSizes` (used only for calls whose interceptors asked for sizes)."""

    __slots__ = ("_conn", "_sizes")

    def __init__(self, conn: ServerConnection, sizes: MessageSizes) -> None:
        self._conn = conn
        self._sizes = sizes

    @property
    def pending_bytes(self) -> int:
        return self._conn.pending_bytes

    def _report(self, before: int) -> None:
        size = self._conn.pending_bytes - before
        if size > 0:  # nothing was queued for a call no longer in flight
            self._sizes.responded(size)

    def send_result(
        self,
        id: str,
        value: Any,
        *,
        deprecated: bool,
        metadata: dict[str, str] | None,
        method: str = "",
    ) -> None:
        before = self._conn.pending_bytes
        self._conn.send_result(id, value, deprecated=deprecated, metadata=metadata, method=method)
        self._report(before)

    def send_error(self, id: str, error: MPRPCError, *, frame: str | None) -> None:
        before = self._conn.pending_bytes
        self._conn.send_error(id, error, frame=frame)
        self._report(before)

    def send_stream_start(
        self, id: str, *, deprecated: bool, metadata: dict[str, str] | None
    ) -> bool:
        before = self._conn.pending_bytes
        started = self._conn.send_stream_start(id, deprecated=deprecated, metadata=metadata)
        self._report(before)
        return started

    def send_stream_item(self, id: str, value: Any, method: str = "") -> bool:
        before = self._conn.pending_bytes
        sent = self._conn.send_stream_item(id, value, method)
        self._report(before)
        return sent

    def send_stream_end(self, id: str) -> None:
        before = self._conn.pending_bytes
        self._conn.send_stream_end(id)
        self._report(before)


def refusal_bytes(host: HandlerHost) -> bytes:
    """What a connection refused over max_connections before it said anything is sent:
    the 503 `connection_made` sends (the listener refuses a flood with it before making
    connections of the sockets it accepts)."""
    conn = ServerConnection(host.settings, host.credentials)
    conn.fail(RpcUnavailableException("too many connections"))
    return b"".join(conn.chunks_to_send())


def _being_cancelled() -> bool:
    """Whether the current task has been asked to cancel (not just a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _args_text(exc: BaseException) -> str:
    """`exc`'s arguments as its repr shows them (a description for one whose repr
    raises: answering the call must not fail)."""
    return ", ".join(text_of(arg, repr) for arg in exc.args)


def _traceback_for_log(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """The last argument and the keywords of a `log.error` that ends with `exc`'s
    traceback: as `exc_info` (what handlers such as error trackers read) when logging can
    format it, else as text (a class that cannot be named: see `errors.type_name`), so
    that logging does not print an error of its own on stderr."""
    try:
        traceback.format_exception(exc)  # what the log formatter will do (chain included)
    except Exception:  # noqa: BLE001 - user code ran while formatting
        return "\n" + traceback_text(exc).rstrip(), {}
    return "", {"exc_info": exc}


def _format(exc: BaseException) -> str:
    return traceback_text(exc)


async def _closing(agen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for item in agen:
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()
