"""`BaseRPC`: everything a client does that is not I/O, shared by `AsyncRPC` and `RPC`.

Options, method proxies, call/delay, building the connection, turning events into values
or errors, the text of every error, deprecation warnings, per-stream buffer limits and
when to reconnect live here once; the two shells only move bytes and wait (httpx's
`BaseClient` with its `Client`/`AsyncClient` twins is the model).
"""

from __future__ import annotations

import collections
import enum
import os
import ssl as ssl_module
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict, TypeVar

from ..address import Address
from ..context import MessageSizes, Metadata
from ..errors import (
    SERVER_DEADLINE_TEXT,
    ConnectionLostError,
    DeadlineExceeded,
    LoginError,
    MPRPCError,
    RemoteProtocolError,
    ResultLimitError,
)
from ..options import check_count, check_seconds
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
    State,
    StreamEnd,
    StreamStart,
    Welcome,
)
from ..protocol.constants import shared_features
from .common import (
    CLIENT_DEFAULT,
    CallOptions,
    MethodProxy,
    parse_compression,
    parse_features,
    warn_deprecated,
)
from .interceptors import ClientCallContext, ClientInterceptor, compose_client

E = TypeVar("E")

# Unread stream items a client keeps per stream, in bytes as received.
DEFAULT_STREAM_BUFFER_SIZE = 16 * 1024 * 1024
# What a buffered item costs beyond its bytes (its Python objects): many tiny items must
# not slip under a limit counted in bytes.
_ITEM_OVERHEAD = 64
# Read on every blocking call (`connected`): a module constant costs less than an enum
# member's lookup.
_READY = State.READY


class StreamBuffer:
    """Items received for one stream and not yet read, with their size in bytes."""

    __slots__ = ("done", "error", "items", "size")

    def __init__(self) -> None:
        self.items: collections.deque[tuple[Any, int]] = collections.deque()
        self.size = 0
        self.done = False
        self.error: BaseException | None = None

    def wake(self) -> None:
        """Called after an item or the end arrived: the shell wakes the reader."""

    def push(self, item: Any, nbytes: int) -> None:
        """Buffer an item that took `nbytes` on the wire (dropped once the stream is done)."""
        if not self.done:
            self.items.append((item, nbytes))
            self.size += nbytes
            self.wake()

    def pop(self) -> Any:
        """The oldest buffered item (IndexError when none)."""
        item, nbytes = self.items.popleft()
        self.size -= nbytes
        return item

    def clear(self) -> None:
        """Drop every buffered item."""
        self.items.clear()
        self.size = 0

    def finish(self, error: BaseException | None = None) -> None:
        """No more items: the stream ended (or failed with `error`, raised after them)."""
        if not self.done:
            self.done = True
            self.error = error
        self.wake()


class Pending:
    """A call waiting for its outcome; `stream` once the server started a stream."""

    __slots__ = ("method", "stream")

    def __init__(self, method: str) -> None:
        self.method = method
        self.stream: StreamBuffer | None = None


class Flow(enum.Enum):
    """What a shell does after filing a stream item (see `BaseRPC._file_item`)."""

    GO_ON = "go on"
    PAUSE = "pause"  # stop reading the connection until `_may_resume()`
    OVERFLOW = "overflow"  # the stream was failed: cancel it on the server


class ClientOptions(TypedDict, total=False):
    """The keyword options of both clients (see `BaseRPC`)."""

    debug: bool
    compression: str | Compression | None
    compreser: str | Compression | None
    heart_beat: float | None
    timeout: float | None
    connect_timeout: float
    ssl: ssl_module.SSLContext | None
    max_message_size: int
    features: Iterable[Feature | str]
    stream_buffer_size: int
    interceptors: Sequence[ClientInterceptor]


class BaseRPC:
    """What `AsyncRPC` and `RPC` share.

    `addr` is `tcp://user:password@host:port` (`tls://` for TLS with default
    verification, or pass `ssl=`). Options: `debug` sends JSON; `compression` ("zlib",
    "bz2" or "lzma"; `compreser` is its 0.0.3 spelling) compresses every message;
    `heart_beat` pings when nothing was received for N seconds and fails every pending
    call if nothing (a pong or anything else) comes within N more seconds; `timeout` is
    the default per-call deadline in seconds (`rpc.name.with_options(timeout=...)`
    overrides it); `connect_timeout` bounds connecting and logging in;
    `max_message_size` bounds a message either way;
    `features` are the extensions to ask for; `stream_buffer_size` bounds the unread
    items kept per stream, in bytes (see the README); `interceptors` run around every
    call (`rpc.name(...)`, `rpc.call(...)`, typed clients' methods; not `delay`), the
    first outermost: `async def` ones for `AsyncRPC`, plain functions for `RPC` (see
    `pymprpc.client.interceptors`).

    Raises:
        ValueError: a malformed address or an unknown option value, a number of seconds
            that is negative or not finite (0 too for `heart_beat` and
            `connect_timeout`), a size below 1.
        TypeError: a numeric option of another type (seconds: `int` or `float`; sizes:
            `int`), e.g. a `str` read from the environment.
    """

    # How to open the connection, for "not connected" errors.
    _how_to_connect = "use 'with RPC(...)' or call connect()"

    def __init__(
        self,
        addr: str | Address,
        *,
        debug: bool = False,
        compression: str | Compression | None = None,
        compreser: str | Compression | None = None,
        heart_beat: float | None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        features: Iterable[Feature | str] = ALL_FEATURES,
        stream_buffer_size: int = DEFAULT_STREAM_BUFFER_SIZE,
        interceptors: Sequence[ClientInterceptor] = (),
    ) -> None:
        if not isinstance(addr, str | Address):
            raise TypeError(
                f"addr must be an address string 'tcp://[user:password@]host:port' (or "
                f"an Address), not {type(addr).__name__}"
                + (": is the variable it was read from set?" if addr is None else "")
            )
        self.address = Address.parse(addr)
        self.debug = debug
        if compression is not None and compreser is not None and compression != compreser:
            raise ValueError(
                "give compression= or its 0.0.3 spelling compreser=, not both: "
                f"got {compression!r} and {compreser!r}"
            )
        if compression is not None:
            self.compression = parse_compression(compression)
        else:
            self.compression = parse_compression(compreser, option="compreser")
        check_seconds("heart_beat", heart_beat, none=True, positive=True)
        check_seconds("timeout", timeout, none=True)
        check_seconds("connect_timeout", connect_timeout, positive=True)
        check_count("max_message_size", max_message_size, minimum=1)
        check_count("stream_buffer_size", stream_buffer_size, minimum=1)
        self.heart_beat = heart_beat
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.stream_buffer_size = stream_buffer_size
        self.features = shared_features(parse_features(features))
        self.interceptors = tuple(interceptors)
        self._chain = compose_client(self.interceptors, self._call_in)
        # delay() and notify() go through the same interceptors (kind "delay"/"notify").
        self._kept_chain = compose_client(self.interceptors, self._kept_in)
        # Message sizes are measured only for an interceptor that asks (see MessageSizes):
        # then the calls being measured, by ID, get the sizes of their replies.
        self._measure = any(getattr(i, "message_sizes", False) for i in self.interceptors)
        self._watched: dict[str, MessageSizes] = {}
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(
                f"ssl must be an ssl.SSLContext (or None), not {type(ssl).__name__}: "
                "make one with ssl.create_default_context()"
            )
        self._ssl = self.address.ssl_context(ssl)
        self._conn: ClientConnection | None = None
        self._pending: dict[str, Any] = {}  # ID -> the shell's Pending subclass
        self.server_info: Welcome | None = None  # what the current connection runs with
        self._received = 0  # bytes received that no event has been charged with yet
        # Set when the connection ended with no call in flight, not by close(): the
        # next call connects again (the server closes idle connections).
        self._reconnect_due = False
        self._ended = True  # no connection yet

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
        """The remote method `name` (any name, dotted or not an identifier), to call or
        to give options: `rpc.method("add").with_options(timeout=2)(1, 2)`."""
        return MethodProxy(self._invoke, name, None, self._direct_call())

    def _direct_call(self) -> Any:
        """A call taking (method, args, kwargs) with the client's defaults that a method
        proxy may call instead of `_invoke` (None: always `_invoke`)."""
        return None

    def _invoke(
        self,
        method: str,
        options: CallOptions | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if options is None and not self.interceptors:
            return self._call(method, args, kwargs, self.timeout)  # the usual call
        timeout = self.timeout
        if options is not None and options.timeout is not CLIENT_DEFAULT:
            timeout = options.timeout
        plain = options is None or (not options.metadata and not options.reply)
        if plain and not self.interceptors:
            return self._call(method, args, kwargs, timeout)
        ctx = ClientCallContext(
            method,
            args,
            kwargs,
            timeout,
            options.metadata if options is not None else Metadata(),
            self.address,
            MessageSizes() if self._measure else None,
        )
        result = self._chain(ctx)
        if options is not None and options.reply:
            return self._reply(result, ctx)
        return result

    def _call_in(self, ctx: ClientCallContext) -> Any:
        """The end of the interceptor chain: make the call `ctx` describes."""
        return self._call(ctx.method, ctx.args, ctx.kwargs, ctx.timeout, ctx)

    def _reply(self, result: Any, ctx: ClientCallContext) -> Any:
        """`(value, response metadata)` for `call_with_metadata` (the async shell awaits)."""
        return result, Metadata(ctx.response_metadata)

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call `method` by name with the client's default deadline (`timeout`).

        `method` is positional-only, so the method's own parameters may have any name
        (`rpc.call("move", method="fast")`)."""
        if self.interceptors:
            return self._invoke(method, None, args, kwargs)
        return self._call(method, args, kwargs, self.timeout)

    def delay(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run `method` without waiting (RETURN false): its ID, for `system.getresult(id)`.
        Client interceptors see it with `ctx.kind == "delay"`."""
        if self.interceptors:
            return self._kept_chain(self._kept_context(method, args, kwargs, "delay"))
        return self._delay(method, args, kwargs)

    def notify(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run `method` and forget it: nothing comes back. With a server that negotiates
        `oneway` nothing is kept for it either; older servers get RETURN false. Client
        interceptors see it with `ctx.kind == "notify"`."""
        if self.interceptors:
            return self._kept_chain(self._kept_context(method, args, kwargs, "notify"))
        return self._notify(method, args, kwargs)

    def _notify_with(self, method: str, args: tuple[Any, ...], metadata: Metadata) -> Any:
        """`notify(method, *args)` sending `metadata` with it (a typed client view's
        `with_options(metadata=...)`), through the interceptors as `notify` goes."""
        ctx = self._kept_context(method, args, {}, "notify", metadata)
        if self.interceptors:
            return self._kept_chain(ctx)
        return self._notify(method, args, {}, ctx)

    def _kept_context(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        kind: str,
        metadata: Metadata | None = None,
    ) -> ClientCallContext:
        """The interceptors' view of a `delay()` or `notify()` (no deadline: nothing is
        awaited)."""
        sizes = MessageSizes() if self._measure else None
        return ClientCallContext(
            method, args, kwargs, None, metadata or Metadata(), self.address, sizes, kind=kind
        )

    @staticmethod
    def _sent_with(
        ctx: ClientCallContext | None,
    ) -> tuple[dict[str, str] | None, MessageSizes | None]:
        """The metadata and the size recorder an interceptor chain left on `ctx`."""
        if ctx is None:
            return None, None
        return (ctx.metadata.to_dict() if ctx.metadata else None), ctx.sizes

    def _kept_in(self, ctx: ClientCallContext) -> Any:
        """The end of the interceptor chain for `delay()` and `notify()`."""
        if ctx.kind == "notify":
            return self._notify(ctx.method, ctx.args, ctx.kwargs, ctx)
        return self._delay(ctx.method, ctx.args, ctx.kwargs, ctx)

    def _call(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        ctx: ClientCallContext | None = None,
    ) -> Any:
        raise NotImplementedError

    def _notify(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> Any:
        raise NotImplementedError

    def _delay(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: ClientCallContext | None = None,
    ) -> Any:
        raise NotImplementedError

    # -- the connection, without I/O ---------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is open and authenticated."""
        # READY, not merely "not closed": while it logs in, a connect() arriving waits for
        # the login in progress, and a call made then is not sent to a connection that
        # would refuse it as authenticating.
        return self._conn is not None and self._conn.state is _READY and self._open()

    def _open(self) -> bool:
        raise NotImplementedError

    def _new_connection(self) -> ClientConnection:
        self._ended = False
        self._received = 0
        self.server_info = None
        self._conn = ClientConnection(
            self.address.username,
            self.address.password,
            json=self.debug,
            compression=self.compression,
            features=self.features,
            max_message_size=self.max_message_size,
        )
        if self._measure:
            self._watched.clear()  # calls of an earlier connection get no more replies
            self._conn.measure_sizes()
        return self._conn

    def _welcomed(self, welcome: Welcome) -> None:
        """The connection is ready: `server_info` says what it runs with."""
        self.server_info = welcome
        self._reconnect_due = False

    def _receive(self, data: bytes) -> tuple[list[ClientEvent], int]:
        """The events `data` completes, and the bytes charged to each: the bytes received
        since the last event, shared among the events they complete."""
        conn = self._conn
        if conn is None:
            return [], 0
        try:
            events = conn.receive_data(data)
        except Exception as exc:  # noqa: BLE001 - never a bare error from the reader
            events = [self._unreadable(conn, exc)]
        if self._measure:  # one test per read, not per call; nothing else unless asked
            self._report_sizes(conn, events)
        return self._charge(events, len(data))

    @staticmethod
    def _unreadable(conn: ClientConnection, exc: Exception) -> ClientEvent:
        # The core raises nothing for bytes; a bug there still ends only this connection.
        return conn.close(RemoteProtocolError(f"unreadable reply: {exc!r}"))

    def _charge(self, events: list[E], nbytes: int) -> tuple[list[E], int]:
        """`events`, parsed from `nbytes` received, and the bytes charged to each."""
        self._received += nbytes
        if not events:
            return events, 0
        share = self._received // len(events)
        self._received = 0
        return events, share + _ITEM_OVERHEAD

    def _report_sizes(self, conn: ClientConnection, events: list[ClientEvent]) -> None:
        """Report each reply's size to its call's `MessageSizes` (for a client whose
        interceptors asked for sizes)."""
        watched = self._watched
        # strict=False: a ConnectionFailed for unreadable bytes, last, has no size.
        for event, size in zip(events, conn.take_sizes(), strict=False):
            id: str | None = getattr(event, "id", None)
            sizes = watched.get(id) if id is not None else None
            if sizes is not None and id is not None:
                if isinstance(event, Result | CallFailed | StreamEnd):
                    del watched[id]  # the call's last reply
                sizes.responded(size)

    def _watch(
        self, id: str, sizes: MessageSizes, chunks: list[bytes], replies: bool = True
    ) -> None:
        """Call `id` was sent as `chunks`: note its size; report its replies' sizes
        (unless none will come: a delay()'s result is fetched by another call)."""
        sizes.request = sum(len(chunk) for chunk in chunks)
        if replies:
            self._watched[id] = sizes

    def _unwatch(self, id: str) -> None:
        """Call `id` is cancelled or abandoned: no more sizes for it."""
        if self._watched:
            self._watched.pop(id, None)

    def _check_call(self) -> ClientConnection:
        """The connection to send a call on; ConnectionLostError if there is none."""
        conn = self._conn
        if conn is None or not self.connected:
            raise ConnectionLostError(f"not connected to {self.address}: {self._how_to_connect}")
        return conn

    def _forked(self) -> None:
        """(In a child process just forked; see `_after_fork_in_child`.) Stop using the
        parent's connection without a word to the server, and connect again on the next
        call: each shell overrides this, knowing what its connection holds."""

    def _lost_connection(self, error: MPRPCError, *, by_user: bool = False) -> None:
        """Note that the connection ended; a call made next connects again when nothing
        was in flight (the server closed an idle connection, or went away between calls)."""
        if by_user:
            # Closed by the user, even after the connection had ended (the server closed
            # it idle): no call connects again until connect().
            self._reconnect_due = False
        if self._ended:
            return  # decided when it ended; closing the socket reports it again
        self._ended = True
        if not by_user and self.server_info is not None and not self._pending:
            self._reconnect_due = True
        # Otherwise unchanged: a failed reconnection is tried again by the next call.
        if self._conn is not None and not self._conn.closed:
            self._conn.close(error)

    def _outcome(
        self,
        method: str,
        event: ClientEvent,
        timeout: float | None,
        ctx: ClientCallContext | None = None,
    ) -> Any:
        """The value of a call's first event (None for a stream start, whose stream the
        shell builds); raises the call's error. Warns if the method is deprecated. The
        response metadata goes to `ctx`."""
        if ctx is not None and isinstance(event, Result | StreamStart) and event.metadata:
            ctx.response_metadata.update(event.metadata)
        if type(event) is Result:
            if event.deprecated:
                warn_deprecated(method, stream=False)
            return event.value
        if isinstance(event, CallFailed | ConnectionFailed):
            raise self._call_error(event.error, method, timeout)
        if isinstance(event, StreamStart):
            if event.deprecated:
                warn_deprecated(method, stream=True)
            return None
        raise RemoteProtocolError(f"unexpected {event} for call {method!r}")

    # -- streams ---------------------------------------------------------------------

    def _file_item(self, id: str, pending: Pending, item: Any, nbytes: int) -> Flow:
        """File a stream item; past the stream's buffer limit, either pause reading (when
        every call in flight is a stream that is full: pausing starves nobody and TCP flow
        control slows the server) or fail this stream, which the shell then cancels."""
        buffer = pending.stream
        if buffer is None or buffer.done:
            return Flow.GO_ON
        buffer.push(item, nbytes)
        if not self._full(buffer):
            return Flow.GO_ON
        return self._overfull(id, pending, buffer)

    def _overfull(self, id: str, pending: Pending, buffer: StreamBuffer) -> Flow:
        """What `_file_item` does once an item took `buffer` past its limit (`_full`):
        pause reading, or fail the stream (Flow.OVERFLOW: the shell cancels it)."""
        # A shell may keep calls whose stream has not started as other objects than
        # Pending (AsyncRPC: tuples), hence getattr.
        streams = [getattr(p, "stream", None) for p in self._pending.values()]
        if all(s is not None and self._full(s) for s in streams):
            return Flow.PAUSE
        del self._pending[id]
        buffer.finish(
            ResultLimitError(
                f"stream {pending.method!r} was cancelled: more than "
                f"{self.stream_buffer_size} bytes of its items were not read while other "
                "calls used the connection; read it as it comes, give it a client of its "
                "own, or raise stream_buffer_size",
                id=id,
            )
        )
        return Flow.OVERFLOW

    def _full(self, buffer: StreamBuffer) -> bool:
        # At least one item is always kept, however large.
        return buffer.size > self.stream_buffer_size and len(buffer.items) > 1

    def _may_resume(self) -> bool:
        """Whether reading paused by `Flow.PAUSE` may go on: nothing is in flight any more
        (the full stream was closed), some call waits, or a stream was read down to half
        its limit (not less, so reading does not pause and resume with every item)."""
        half = self.stream_buffer_size // 2
        streams = [getattr(p, "stream", None) for p in self._pending.values()]  # see _file_item
        return not streams or any(s is None or s.size <= half for s in streams)

    # -- errors: the same text from both clients ----------------------------------------

    def _server_error(self, error: MPRPCError) -> MPRPCError:
        """The error for a connection-level failure the server reported."""
        if isinstance(error, LoginError):
            text = error.message
            if text.startswith("authentication failed"):  # say it once
                text = text.removeprefix("authentication failed").lstrip(": ")
            return LoginError(
                f"authentication failed for {self.address}: "
                f"{text or 'check the user name and password in the address'}",
                exception=error.exception,
                data=error.data,
            )
        return error

    def _connect_failed(self, exc: OSError) -> ConnectionLostError:
        reason = str(exc)
        if exc.errno and exc.errno > 0 and not isinstance(exc, ssl_module.SSLError):
            # The system's words: asyncio rewords them ("Connect call failed (...)").
            reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
        elif not reason:
            # asyncio's reset during a TLS handshake says nothing: what RPC says then.
            reason = (
                "the server closed the connection during TLS"
                if self._ssl is not None and isinstance(exc, ConnectionError)
                else type(exc).__name__
            )
        return ConnectionLostError(f"could not connect to {self.address}: {reason}")

    def _connect_timed_out(self, logging_in: bool = False) -> ConnectionLostError:
        """`logging_in`: the connection was made, the server's login reply never came."""
        if logging_in:
            return ConnectionLostError(
                f"{self.address} accepted the connection but did not answer the login "
                f"within {self.connect_timeout}s: check that it is an MPRPC server, "
                "and that both sides use TLS or neither does"
            )
        return ConnectionLostError(
            f"could not connect to {self.address} within {self.connect_timeout}s"
        )

    def _lost_error(self, exc: BaseException | None = None) -> ConnectionLostError:
        if exc is None:
            return ConnectionLostError(f"connection to {self.address} closed by the server")
        return ConnectionLostError(f"connection to {self.address} lost: {exc}")

    def _closed_error(self) -> ConnectionLostError:
        return ConnectionLostError(f"connection to {self.address} closed")

    def _call_error(
        self, error: BaseException, method: str, timeout: float | None
    ) -> BaseException:
        """`error`, which failed call (or stream) `method`, as the caller gets it: the
        server's 408 for the call's own deadline reads as the client's own would."""
        if (
            isinstance(error, DeadlineExceeded)
            and error.id is not None
            and timeout is not None
            and str(error).startswith(SERVER_DEADLINE_TEXT)
        ):
            # The server's clock for our deadline ran out first: the same error as if
            # ours had, whichever side's clock won. (A 408 the handler raised itself, say
            # for its own call to another service, keeps its words.)
            own = self._deadline_error(method, timeout, error.id)
            own.__cause__ = error
            return own
        return error

    def _deadline_error(
        self, method: str, timeout: float | None, id: str | None
    ) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"call {method!r} did not finish within its {timeout}s deadline", id=id
        )

    def _heartbeat_error(self, interval: float) -> ConnectionLostError:
        return ConnectionLostError(
            f"no heartbeat reply from {self.address} within {interval}s: connection considered dead"
        )


# The clients of this process: a child process forked while one is connected must not use
# the parent's connection (its requests would go out on the parent's socket, the replies
# to whichever process reads first; the blocking client's reader thread and the async
# client's loop are the parent's), nor end it.
_clients: weakref.WeakSet[BaseRPC] = weakref.WeakSet()


def forget_in_forked_children(client: BaseRPC) -> None:
    """Have `client._forked()` run in every child process forked from now on (called by
    each shell once its `__init__` made everything `_forked` reads)."""
    _clients.add(client)


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forked()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
