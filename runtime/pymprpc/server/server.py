"""`Server`: registration API, lifecycle (sync and async), graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import signal
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlsplit

from ..address import Address
from ..interceptors.chain import ServerInterceptor
from ..protocol import (
    ALL_FEATURES,
    DEFAULT_MAX_AUTH_MESSAGE_SIZE,
    DEFAULT_MAX_COLLECTION_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    Credentials,
    Feature,
)
from ..schema import Signature
from ..services import ServiceInfo
from .config import (
    DEFAULT_MAX_BUFFERED_INPUT,
    DEFAULT_MAX_OUTPUT_BUFFER,
    FD_RESERVE,
    MiB,
    ServerConfig,
    default_max_connections,
)
from .dispatch import Dispatcher
from .executors import ExecutorChoice, ExecutorKind, Executors, executor_choice
from .flow import InputBudget
from .handler import (
    GETRESULT_METHOD,
    HEALTH_METHOD,
    ConnectionHandler,
    PassWrites,
    refusal_bytes,
    serving_core,
)
from .health import Health
from .introspection import getresult_method, health_method, system_methods
from .kept_results import KeptResults
from .listener import TLS_SHUTDOWN_TIMEOUT, Listener
from .logins import LoginThrottle
from .registry import Method, Registry, make_method
from .tls import check_server_context
from .workers.pool import importing_main_for_a_child

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
HostPort = tuple[str, int]
_UNSET: Any = object()
# run_forever's last waits: for tasks cancelled at exit, async generators, the executor.
_LOOP_CLOSE_WAIT = 1.0


def _spin_window(value: object) -> float:
    """`worker_spin` as the float a worker times its spin with.

    Raises:
        ValueError: not a finite number of seconds, 0 or more.
    """
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        window = float(value)  # OverflowError for an int past float range
    except (TypeError, OverflowError):
        window = math.nan
    if not 0.0 <= window < math.inf:  # NaN fails too
        raise ValueError(
            f"worker_spin must be a finite number of seconds, 0 or more (0 disables it), "
            f"not {value!r}"
        )
    return window


def _parse_address(addr: Address | HostPort | str) -> HostPort:
    if isinstance(addr, Address):
        return addr.host, addr.port
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    parts = urlsplit(addr if "://" in addr else f"tcp://{addr}")
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        raise ValueError(
            f"server address must look like ('host', port) or 'tcp://host:port': {addr!r}"
        )
    return parts.hostname, parts.port


class _Core:
    """The state a server shares with its connections and its introspection methods.

    Implements `HandlerHost` (for connections) and `ServerView` (for `system.*`); nothing
    outside the server package touches it.
    """

    def __init__(self, config: ServerConfig, credentials: Credentials) -> None:
        self.config = config
        self.settings = config.settings()
        self.credentials = credentials
        self.logins = LoginThrottle(config.login_attempts, config.login_backoff)
        if config.executor is None:
            # Functions keep the usage page's process pool; stateful callables share state.
            self.registry = Registry(ExecutorKind.PROCESS, ExecutorKind.THREAD)
            default: ExecutorChoice = ExecutorKind.PROCESS
        else:
            default = config.executor
            self.registry = Registry(default, default)
        self.executors = Executors(
            default, config.max_workers, self.registry.targets, config.worker_spin
        )
        self.dispatcher = Dispatcher(self.registry, self.executors)
        self.kept = KeptResults(
            config.kept_results, config.kept_results_ttl, max_bytes=config.kept_results_bytes
        )
        self.health = Health()
        self.input_budget = InputBudget(config.max_buffered_input)
        self.connections: set[ConnectionHandler] = set()
        # Closed by the server, not gone yet (a TLS one waits for its peer's close_notify).
        self.closed: set[ConnectionHandler] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # RETURN-false calls running on after their anonymous connection closed.
        self.detached: set[asyncio.Task[None]] = set()
        self.draining = False
        self.aborting = False
        # The context the connections' timers run in (idle, login and half-close
        # deadlines): one, not a copy per connection (call_later's default), as they read
        # no context variables. This server's loop runs them one at a time.
        self.timer_context = contextvars.Context()
        # Replies held for the end of a loop pass (see PassWrites).
        self.pass_writes = PassWrites()

    # HandlerHost

    def admit(self, handler: ConnectionHandler) -> bool:
        limit = self.config.max_connections
        if limit and len(self.connections) >= limit:
            return False
        self.connections.add(handler)
        return True

    def closing(self, handler: ConnectionHandler) -> None:
        if handler in self.connections:
            self.connections.discard(handler)
            self.closed.add(handler)

    def forget(self, handler: ConnectionHandler) -> None:
        self.connections.discard(handler)
        self.closed.discard(handler)

    def detach(self, task: asyncio.Task[None], kind: str) -> bool:
        if len(self.detached) >= self.config.kept_results:
            log.warning(
                "cancelling a %s whose connection closed: %d calls of closed connections "
                "already run (kept_results)",
                kind,
                len(self.detached),
            )
            return False
        self.detached.add(task)
        task.add_done_callback(self.detached.discard)
        return True

    def call_started(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)

    def call_finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)

    # ServerView

    def method_names(self) -> list[str]:
        return self.registry.names()

    def method(self, name: str) -> Method | None:
        return self.registry.get(name)

    def services(self) -> list[ServiceInfo]:
        return self.registry.services()

    def connection_count(self) -> int:
        return len(self.connections)

    def running_calls(self) -> int:
        # A call is registered only once its eager first step suspends: count the
        # calling one (still in that step) too.
        return len(self.tasks) + (asyncio.current_task() not in self.tasks)


def _async_interceptors(interceptors: Iterable[ServerInterceptor]) -> tuple[ServerInterceptor, ...]:
    """`interceptors`, each checked to be `async`: a plain one would make every call fail
    (404, "can't be used in 'await' expression") or, if it returns `call_next(ctx)`, work
    by accident. Refused where the mistake is made, as `RPC` refuses an async one."""
    checked = tuple(interceptors)
    for interceptor in checked:
        call = getattr(type(interceptor), "__call__", None)  # noqa: B004 (an object)
        if not (inspect.iscoroutinefunction(interceptor) or inspect.iscoroutinefunction(call)):
            raise TypeError(
                f"Server(interceptors=...): {interceptor!r} is not async; a server "
                "interceptor is `async def interceptor(ctx, call_next)` returning "
                "`await call_next(ctx)` (plain functions are for the blocking RPC client)"
            )
    return checked


class Server:
    """An MPRPC server.

    Register methods, then either block in `run_forever()` (stops on SIGINT/SIGTERM) or,
    inside a running event loop, `await start()` / `await serve_forever()` /
    `await close()` (or `async with`). The class docstring of a subclass becomes the
    service description sent to clients.

    Plain functions run in a forked process pool by default, so CPU work cannot block the
    event loop. Bound methods (a servicer's, or those of an instance given to
    `register_instance`) and other callables that hold state run in the thread pool by
    default, so every call sees and changes the one instance; a worker process would
    change its own copy. `executor=` ("process", "thread", "inline") sets one executor for
    every plain callable of this server; `register_function(executor=...)` sets it per
    function. See `pymprpc.server.executors` for the trade-offs.

    Every limit below is also described, with what the client sees when it is reached,
    in docs/protocol.md ("Limits").

    Args:
        addr: where to listen: `("host", port)` or `"tcp://host:port"`; port 0 picks a
            free port (read it back from `address`).
        auth: accepted `(user, password)` pairs, compared in constant time; None accepts
            only anonymous logins.
        idle_timeout: seconds without a complete message after which a connection gets
            504 and is closed (a connection with a call running is not idle); 0 or None
            disables it. Default 180.
        timeout: the pymprpc 0.0.3 spelling of `idle_timeout` (give one of them).
        debug: send tracebacks (`FRAME`) with call errors.
        ssl: an `ssl.SSLContext` to serve TLS (server-side, its certificate loaded). The
            TLS handshake counts as logging in (`auth_timeout`); a connection the server
            closes waits at most 2 s for the client's close_notify.
        executor: where every plain callable runs by default: "process", "thread",
            "inline" or a `concurrent.futures.Executor` of yours (not shut down by the
            server); None: functions in the process pool, bound methods in threads.
        max_workers: size of the process pool (default: the CPUs this process may use)
            and of the thread pool (default: that plus 4, at most 32).
        worker_spin: seconds a process-pool worker whose calls arrive back to back
            polls for the next one before it sleeps: it saves each call two process
            wake-ups, and a worker spends that CPU while its next call is on its way.
            A worker whose calls arrive further apart sleeps at once. None (default):
            0.0003, or 0 (off) where this process may use one CPU only.
        version: the server's version, sent in the welcome reply (each service's own
            version is listed by `system.listServices()`: see `register_service`).
        description: the service description sent in the welcome reply (default: the
            docstring of a `Server` subclass).
        max_message_size: the largest message either way, also after decompression.
        max_auth_message_size: the largest message before the client has authenticated,
            on the wire and after decompression (505 and close).
        max_collection_len: the longest MessagePack array or map in a received message,
            refused from its header before it is built (505 and close).
        max_buffered_input: bytes of partial frames all connections together may
            buffer; past it, connections adding to it pause reading (one always reads
            on). 0 disables it.
        max_output_buffer: bytes of replies waiting for one client past which its
            further calls wait to start; once `max_inflight` wait, it is no longer read
            (at once, when the replies are the server's own: pongs, 400s). 0 disables it.
        max_connections: open connections beyond which a new one gets 503 and is closed.
            Default: 10,000, or fewer if the file-descriptor limit (raised towards its
            hard limit at construction) cannot hold them.
        max_inflight: calls running per connection; beyond it a call gets 503. 0
            disables it.
        auth_timeout: seconds a client has to authenticate. 0 disables it: a connection
            may then wait to log in for ever (the idle timeout starts once logged in), so
            keep it on where untrusted peers connect.
        half_close_timeout: seconds the calls of a client that sent EOF (half-closed, or
            gone: TCP cannot tell them apart) may still run to be answered; then they are
            cancelled and the connection closes. 0: none (EOF closes at once).
        kept_results: outcomes of RETURN-false calls kept per account (per connection
            when anonymous) for `system.getresult`; when full, the oldest finished one
            not yet fetched goes, and with all still running a new call gets 405. Also the
            server-wide number of such calls left running by closed anonymous
            connections (beyond it they are cancelled).
        kept_results_bytes: bytes (MessagePack-encoded) kept per account the same way; a
            kept result or stream that cannot fit fails with 405.
        kept_results_ttl: seconds a finished kept outcome waits to be fetched.
        grace_period: seconds shutdown waits for running calls before cancelling them.
        features: extensions offered to clients that announce them.
        reuse_port: set SO_REUSEPORT so several server processes can share the port.
        backlog: the listen backlog (capped by the kernel's somaxconn).
        login_attempts: failed logins in a row allowed per peer address and per user
            before back-off starts.
        login_backoff: seconds the first back-off lasts (doubling with each further
            failure, at most 300 s); 0 disables back-off.
        interceptors: server interceptors run around every call, the first outermost
            (`pymprpc.interceptors`: access control, rate limit, access log; and
            `pymprpc.otel.ServerTelemetry`). An unknown method is refused (401) before
            them; argument binding (402) happens inside them.
        loop: ignored (pymprpc 0.0.3 compatibility): the running loop is used.

    Raises:
        ValueError: a malformed `addr`, an unknown `executor` or feature, a number of
            seconds that is negative or not finite (a `worker_spin`, a timeout), a size or
            count below its least (0; 1 for `max_message_size`, `max_auth_message_size`,
            `max_collection_len`, `max_connections`, `max_workers`), an `ssl` context
            that cannot serve (a client-side one, or one with no certificate).
        TypeError: a numeric option of another type (seconds: `int` or `float`; sizes
            and counts: `int`), an `auth` that is not a list of `(user, password)` pairs
            of `str`, both `idle_timeout` and `timeout` given, or an interceptor that is
            not `async` (a plain function or a class whose `__call__` is not async).
    """

    def __init__(
        self,
        addr: Address | HostPort | str = ("127.0.0.1", 5000),
        *,
        auth: Iterable[tuple[str, str]] | None = None,
        idle_timeout: float | None = _UNSET,
        timeout: float | None = _UNSET,
        debug: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        executor: ExecutorKind | str | Executor | None = None,
        max_workers: int | None = None,
        worker_spin: float | None = None,
        version: str | None = None,
        description: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_auth_message_size: int = DEFAULT_MAX_AUTH_MESSAGE_SIZE,
        max_collection_len: int = DEFAULT_MAX_COLLECTION_LEN,
        max_buffered_input: int = DEFAULT_MAX_BUFFERED_INPUT,
        max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
        max_connections: int | None = None,
        max_inflight: int = 1_000,
        auth_timeout: float = 10.0,
        half_close_timeout: float = 30.0,
        kept_results: int = 1_000,
        kept_results_bytes: int = 64 * MiB,
        kept_results_ttl: float = 600.0,
        grace_period: float = 10.0,
        features: Iterable[Feature | str] = ALL_FEATURES,
        reuse_port: bool = False,
        backlog: int = 1024,
        login_attempts: int = 5,
        login_backoff: float = 1.0,
        interceptors: Iterable[ServerInterceptor] = (),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if loop is not None:
            # Accepted for compatibility with pymprpc 0.0.3; the running loop is used.
            log.debug("Server(loop=...) is ignored: the running event loop is used")
        if idle_timeout is not _UNSET and timeout is not _UNSET:
            raise TypeError("give idle_timeout or its old spelling timeout, not both")
        if idle_timeout is _UNSET:
            idle_timeout = 180.0 if timeout is _UNSET else timeout
        if worker_spin is not None:
            worker_spin = _spin_window(worker_spin)
        host, port = _parse_address(addr)
        if ssl is not None:
            check_server_context(ssl)
        if description is None and type(self) is not Server and type(self).__doc__:
            description = type(self).__doc__
        self._config = ServerConfig(
            host=host,
            port=port,
            idle_timeout=idle_timeout,
            debug=debug,
            ssl=ssl,
            executor=None if executor is None else executor_choice(executor),
            max_workers=max_workers,
            worker_spin=worker_spin,
            version=version,
            description=description,
            max_message_size=max_message_size,
            max_auth_message_size=max_auth_message_size,
            max_collection_len=max_collection_len,
            max_buffered_input=max_buffered_input,
            max_output_buffer=max_output_buffer,
            max_connections=(
                default_max_connections() if max_connections is None else max_connections
            ),
            max_inflight=max_inflight,
            auth_timeout=auth_timeout,
            half_close_timeout=half_close_timeout,
            kept_results=kept_results,
            kept_results_bytes=kept_results_bytes,
            kept_results_ttl=kept_results_ttl,
            grace_period=grace_period,
            features=frozenset(Feature(f) for f in features),
            reuse_port=reuse_port,
            backlog=backlog,
            login_attempts=login_attempts,
            login_backoff=login_backoff,
            interceptors=_async_interceptors(interceptors),
        )
        self._core = _Core(self._config, Credentials(auth))
        self._port = port
        self._sock: socket.socket | None = None
        self._listener: Listener | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Calls that ignored cancellation at shutdown, already reported and left behind.
        self._abandoned: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None  # a close() a call started
        self._core.registry.add_function(getresult_method(self._core), GETRESULT_METHOD)
        self._core.registry.add_function(health_method(self._core.health), HEALTH_METHOD)

    @property
    def config(self) -> ServerConfig:
        """The options this server was made with (read-only)."""
        return self._config

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        return self._core.connection_count()

    @property
    def draining(self) -> bool:
        """True once shutdown has begun (new calls get 503)."""
        return self._core.draining

    @property
    def running(self) -> bool:
        """True while the server accepts connections (between `start` and `close`)."""
        return self._listener is not None

    @property
    def health(self) -> Health:
        """What `system.health(service)` answers: `server.health.set("billing",
        "NOT_SERVING")`; every name answers NOT_SERVING while the server shuts down."""
        return self._core.health

    @property
    def running_call_count(self) -> int:
        """Calls running now (a call answered within its first step is never counted)."""
        return len(self._core.tasks)

    # -- registration ----------------------------------------------------------------

    @overload
    def register_function(self, func: F, /) -> F: ...

    @overload
    def register_function(
        self,
        name: str | None = None,
        *,
        executor: ExecutorKind | str | Executor | None = None,
        deprecated: bool = False,
        signature: str | None = None,
        doc: str | None = None,
        schema: Signature[Any] | None = None,
        replace: bool = False,
    ) -> Callable[[F], F]: ...

    def register_function(
        self,
        name: Any = None,
        *,
        executor: ExecutorKind | str | Executor | None = None,
        deprecated: bool = False,
        signature: str | None = None,
        doc: str | None = None,
        schema: Signature[Any] | None = None,
        replace: bool = False,
    ) -> Any:
        """Decorator registering a function, coroutine function or async generator function.

        `@server.register_function()` uses the function's name; pass `name` to choose
        another, `executor` ("process", "thread", "inline") to override the server's
        default for a plain function (a bound method defaults to "thread", so calls share
        its instance; with "process" each worker holds its own copy, logged at INFO),
        `deprecated=True` to answer 300/301, and `signature`/`doc` to override what
        introspection reports. A `schema`
        (`pymprpc.schema.Signature`, as mprpcgen generates) declares parameter and result
        types: arguments are checked and converted before the function runs (402 naming
        the bad value otherwise), and results are checked and encoded for the wire (404,
        `ValidationError` naming the method, for a result not of the declared type).

        A name that is already registered is refused (`DuplicateMethodError`, naming
        both) unless `replace=True`: two services with a method of the same name must
        not silently answer for each other; serve one under a prefix instead.

        Raises:
            TypeError: `name` is not a non-empty string; the decorated object is not
                callable, or is a (sync) generator function.
            ValueError: no name was given and the callable has none of its own (a
                lambda, say).
            DuplicateMethodError: the name is taken (and `replace` is false).
        """
        kind = executor_choice(executor) if executor is not None else None
        if name is not None and not callable(name) and (not isinstance(name, str) or not name):
            raise TypeError(
                f"register_function: name must be a non-empty string, got {name!r}; "
                "leave it out to use the function's own name"
            )

        def decorator(func: F) -> F:
            if not callable(func):
                raise TypeError(
                    f"register_function: {func!r} is not callable; register a function, "
                    "a method or an object with __call__"
                )
            self._core.registry.add_function(
                func,
                name if isinstance(name, str) else None,
                executor=kind,
                deprecated=deprecated,
                signature=signature,
                doc=doc,
                schema=schema,
                replace=replace,
            )
            return func

        if callable(name):
            return decorator(name)
        return decorator

    def atomic_registration(self) -> contextlib.AbstractContextManager[None]:
        """A block in which registrations are all-or-nothing.

        If the block raises, every method and service registered (or replaced) inside it
        is removed (or put back) before the exception propagates, so a service is never
        left half-served. The `register_<service>()` functions mprpcgen generates run in
        one; use it for a hand-written service registered in several steps::

            with server.atomic_registration():
                server.register_function(name="orders.get")(get_order)
                server.register_function(name="orders.put")(put_order)
                server.register_service("Orders", ["get", "put"], prefix="orders.")

        Blocks may nest; each undoes what happened inside it.
        """
        return self._core.registry.atomic()

    def register_instance(
        self,
        obj: Any,
        allow_dotted_names: bool = False,
        *,
        executor: ExecutorKind | str | Executor | None = None,
        replace: bool = False,
    ) -> None:
        """Register every public method of `obj` under its own name (one already
        registered is refused with `DuplicateMethodError` unless `replace=True`).

        Plain methods run on the thread pool unless the server was given another
        `executor=`, so every call shares `obj`. `executor="process"` runs them in the
        process pool instead, where each worker holds its own copy of `obj` (logged at
        INFO once per method): use it only for methods that do not keep state.

        With `allow_dotted_names=True`, `a.b.c` is resolved through `obj`'s public
        attributes at call time (only do this for objects you fully trust).

        Raises:
            TypeError: `obj` is a class (pass an instance of it) or a plain value (an
                int, str, list, dict...).
            DuplicateMethodError: one of its method names is taken (and `replace` is
                false).
        """
        kind = executor_choice(executor) if executor is not None else None
        self._core.registry.add_instance(obj, allow_dotted_names, executor=kind, replace=replace)

    def register_service(
        self,
        name: str,
        methods: Iterable[str],
        *,
        version: str | None = None,
        prefix: str = "",
        doc: str = "",
        replace: bool = False,
    ) -> ServiceInfo:
        """Record that the methods `methods`, registered under `prefix`, form service
        `name`, so that `system.listServices()` lists it with its `version`.

        The `register_<service>()` functions mprpcgen generates call it (with the
        interface file's version and doc comment); call it for a hand-written service
        after registering its methods. A service may be registered several times under
        different prefixes. It does not change `system.health`: a service is SERVING
        once the application says so (`server.health.set(name, "SERVING")`).

        Args:
            name: the service's name, as clients look it up (`service_info(client)`
                compares it with a generated client's `SERVICE`).
            methods: its method names without the prefix; each `prefix + method` must be
                registered already.
            version: the version of its interface, or None.
            prefix: the prefix its methods were registered under ("" for none).
            doc: what the service is for (cleaned like a docstring).
            replace: replace an entry of the same name and prefix.

        Returns:
            The entry recorded.

        Raises:
            ValueError: a method is not registered (or named twice), or `name` is empty.
            TypeError: `methods` is a string, not a list of names; or `name`, `prefix`,
                `doc`, `version` (unless None) or a method name is not a string.
            DuplicateServiceError: `name` is already registered under `prefix` (a
                `ValueError`), and `replace` is false.
        """
        if isinstance(methods, str):
            raise TypeError(f"methods must be a list of names, not the string {methods!r}")
        # Checked here, not when a client reads the table: one entry that is not the
        # documented wire form would make every client's list_services() fail.
        for what, value, kinds in (
            ("name", name, (str,)),
            ("version", version, (str, type(None))),
            ("prefix", prefix, (str,)),
            ("doc", doc, (str,)),
        ):
            if not isinstance(value, kinds):
                wanted = "a string or None" if what == "version" else "a string"
                raise TypeError(
                    f"register_service(): {what} must be {wanted}, got "
                    f"{type(value).__name__} {value!r}"
                )
        names = tuple(methods)
        bad = [m for m in names if not isinstance(m, str)]
        if bad:
            raise TypeError(
                f"register_service({name!r}): method names must be strings, got {bad[0]!r}"
            )
        info = ServiceInfo(
            name=name,
            version=version,
            prefix=prefix,
            methods=names,
            doc=inspect.cleandoc(doc),
        )
        return self._core.registry.add_service(info, replace=replace)

    @property
    def services(self) -> tuple[ServiceInfo, ...]:
        """The services registered with `register_service` (what
        `system.listServices()` answers), by name then prefix."""
        return tuple(self._core.registry.services())

    def register_introspection_functions(self) -> None:
        """Register the `system.*` introspection methods (`system.listServices` among
        them); without them, a server answers them 406 like any unknown `system.*`."""
        for name, func in system_methods(self._core).items():
            self._core.registry.add_method(make_method(name, func, key=f"{name}@{id(self)}"))

    # -- lifecycle -------------------------------------------------------------------

    @property
    def address(self) -> HostPort:
        """The bound (host, port); the real port once bound to port 0."""
        return self._config.host, self._port

    @property
    def host(self) -> str:
        """The host the server listens on, as given."""
        return self._config.host

    @property
    def port(self) -> int:
        """The port; the real one once bound to port 0."""
        return self._port

    def bind(self) -> None:
        """Create the listening socket (done by `__enter__` / `start` if not yet)."""
        if self._sock is not None:
            return
        if importing_main_for_a_child():
            # Else "address already in use": the parent serves on it.
            raise RuntimeError(
                "this process was started by multiprocessing (the process pool's "
                "forkserver, when threads were running) and is importing the main module, "
                "which starts the server again: put the code that starts the server under "
                '`if __name__ == "__main__":` (README, "Forking safely")'
            )
        config = self._config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.create_server(
            (config.host, self._port),
            family=family,
            backlog=config.backlog,
            reuse_port=config.reuse_port,
        )
        sock.setblocking(False)
        self._sock = sock
        self._port = sock.getsockname()[1]

    def __enter__(self) -> Server:
        self.bind()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None and self._listener is None:
            self._sock.close()
            self._sock = None
        self._core.executors.shutdown()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        self._core.executors.shutdown()

    async def start(self) -> None:
        """Start accepting connections on the running loop."""
        if self._listener is not None:
            return
        self.bind()
        assert self._sock is not None
        core = self._core
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        core.draining = core.aborting = False
        core.health.set_draining(False)
        # Fork workers now, while no client connection exists to be inherited.
        if core.registry.uses_executor(ExecutorKind.PROCESS):
            core.executors.warm_up()
        limit = self._config.max_connections
        connections, closed = core.connections, core.closed

        def room(pending: int) -> bool:
            # Accepted sockets not yet connections (TLS handshakes) count too: a flood
            # of them would otherwise hold descriptors and memory max_connections never
            # saw. So do closed TLS connections still waiting for close_notify (up to
            # 2 s), beyond half the descriptors kept in reserve.
            lingering = max(0, len(closed) - _LINGERING_FREE)
            return len(connections) + pending + lingering < limit

        self._listener = Listener(
            self._sock,
            lambda: ConnectionHandler(core),
            ssl=self._config.ssl,
            batch=self._config.backlog,
            # The handshake is part of logging in: it gets the login's time, not 60 s.
            handshake_timeout=self._config.auth_timeout or None,
            room=room if limit else None,
            refusal=refusal_bytes(core),
        )
        self._listener.start(self._loop)
        log.info("pymprpc serving on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        """Start if needed, then wait until the server has been closed (`close`/`stop`)."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    def stop(self) -> None:
        """Shut a running server down gracefully; safe from any thread and signal handler."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(self.close()))

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, let running calls finish within `grace`, then cancel the rest.

        Awaited by one of the server's own calls (a handler shutting the server down),
        it starts the shutdown (unless one is under way) and returns at once: the shutdown
        waits for that call too, which then ends and is answered like any other running
        call."""
        listener, core = self._listener, self._core
        if serving_core.get() is core:
            # Never wait here: the shutdown waits for this very call.
            if listener is not None and not core.draining:
                context = contextvars.copy_context()
                context.run(serving_core.set, None)
                self._closing = asyncio.get_running_loop().create_task(
                    self.close(grace), context=context
                )
            return  # (else one is under way already)
        if listener is None or core.draining:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        grace = self._config.grace_period if grace is None else grace
        core.draining = True
        core.health.set_draining(True)
        listener.close()
        if core.tasks:
            _, pending = await asyncio.wait(set(core.tasks), timeout=grace)
            if pending:
                log.warning("cancelling %d call(s) still running after %.1fs", len(pending), grace)
                # Calls of connections already gone (RETURN false) are cancelled too.
                core.aborting = True
                for task in pending:
                    task.cancel()
                _, stuck = await asyncio.wait(pending, timeout=max(1.0, grace))
                if stuck:
                    # A method that swallows CancelledError must not keep the server up.
                    log.warning(
                        "abandoning %d call(s) that ignored cancellation: %s",
                        len(stuck),
                        ", ".join(sorted(t.get_name() for t in stuck)[:10]),
                    )
                    self._abandoned.update(stuck)
                    for handler in core.connections:
                        handler.answer_abandoned(stuck)
        for handler in list(core.connections):
            handler.close()
        if core.connections or core.closed:
            await _closed_or_aborted(core.connections | core.closed)
        self._listener = None
        self._sock = None
        core.executors.shutdown()
        core.kept.close()
        log.info("pymprpc server on %s:%d stopped", self.host, self.port)
        if self._stopped is not None:
            self._stopped.set()

    async def _run_until_stopped(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
        try:
            await self.serve_forever()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.close()

    def run_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (or `stop()`), then shut down gracefully."""
        try:
            run_bounded(self._run_until_stopped(), self._abandoned)
        except KeyboardInterrupt:
            pass
        finally:
            self._loop = None


# Closed connections waiting for their peer's close_notify that do not count under
# max_connections: half the descriptors `default_max_connections` keeps in reserve.
_LINGERING_FREE: Final = FD_RESERVE // 2


async def _closed_or_aborted(connections: set[ConnectionHandler]) -> None:
    """Wait until the closed `connections` are gone, at most TLS_SHUTDOWN_TIMEOUT, then
    abort the rest: a TLS connection waits for its peer's close_notify, and a plain one
    for its peer to read what is queued; the loop may end right after (run_forever), and
    then nothing would ever close their sockets."""
    loop = asyncio.get_running_loop()
    end = loop.time() + TLS_SHUTDOWN_TIMEOUT
    while loop.time() < end:
        if all(handler.gone for handler in connections):
            return
        await asyncio.sleep(0.01)
    for handler in connections:
        if not handler.gone and handler.transport is not None:
            handler.transport.abort()


def run_bounded(main: Coroutine[Any, Any, None], abandoned: set[asyncio.Task[None]]) -> None:
    """Run `main` on a new event loop (the current one while it runs), then close that
    loop as asyncio.run would, but with every wait bounded (`_close_loop`), the calls in
    `abandoned` (a server's, which ignored cancellation) ended first.

    Not asyncio.run: on exit it cancels the remaining tasks and waits for them without a
    bound, so a method that swallows CancelledError would hang it. Used by
    `Server.run_forever` and `pymprpc.testing.RunningServer`.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            _close_loop(loop, abandoned)
        finally:
            asyncio.set_event_loop(None)


def _end_abandoned(loop: asyncio.AbstractEventLoop, abandoned: set[asyncio.Task[Any]]) -> None:
    """End the calls that ignored cancellation (`Server.close` abandoned them: call
    tasks only, not the application's own) before their loop closes: each one's
    coroutine is closed (GeneratorExit where it waits, which a handler swallowing
    CancelledError does not catch; its `finally` blocks run), then the task is cancelled
    and finishes. Left pending, it would be destroyed with the loop, asyncio logging
    "Task was destroyed but it is pending!" for each. A coroutine that ignores
    GeneratorExit too is left as it is."""
    ended = set()
    for task in abandoned:
        if task.done() or task.get_loop() is not loop:
            continue
        try:
            task.get_coro().close()
        except Exception:  # noqa: BLE001 - it ignored GeneratorExit as well (RuntimeError)
            continue
        task.cancel()
        ended.add(task)
    if ended:
        done, _ = loop.run_until_complete(asyncio.wait(ended, timeout=_LOOP_CLOSE_WAIT))
        for task in done:
            # The cancellation reaches a closed coroutine, which answers "cannot reuse
            # already awaited coroutine": read here, it is not logged as never retrieved.
            if not task.cancelled():
                task.exception()


def _stuck_generators_warned(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    loop: asyncio.AbstractEventLoop,
    context: dict[str, Any],
) -> None:
    """The loop's exception handler while the loop ends: an async generator still running
    (a stream whose `finally` ignored the shutdown's cancellation; its call was abandoned
    and reported already) cannot be closed, neither by the loop's end nor by asyncio's
    finalizer when it is collected: a WARNING, not an error. Anything else goes to the
    handler the loop had (`previous`), or the default one."""
    exc = context.get("exception")
    if isinstance(exc, RuntimeError) and "asynchronous generator is already running" in str(exc):
        log.warning("left an async generator that was still running at shutdown: %s", exc)
        return
    if previous is not None:
        previous(loop, context)
    else:
        loop.default_exception_handler(context)


def _close_loop(loop: asyncio.AbstractEventLoop, abandoned: set[asyncio.Task[None]]) -> None:
    """Close `loop` like asyncio.run does, but with every wait bounded: tasks that ignore
    cancellation (already reported by `Server.close`) are left behind, not waited for."""
    tasks = {t for t in asyncio.all_tasks(loop) if not t.done()} - abandoned
    for task in tasks:
        task.cancel()
    if tasks:
        _, stuck = loop.run_until_complete(asyncio.wait(tasks, timeout=_LOOP_CLOSE_WAIT))
        for task in stuck:
            log.warning("abandoning task %s: it ignored cancellation", task.get_name())
        for task in tasks - stuck:
            if not task.cancelled() and task.exception() is not None:
                log.error("task %s failed at shutdown", task.get_name(), exc_info=task.exception())
    # From here on (the loop is ours, and ending): see _stuck_generators_warned.
    previous = loop.get_exception_handler()
    loop.set_exception_handler(functools.partial(_stuck_generators_warned, previous))
    try:
        _end_abandoned(loop, abandoned)
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), _LOOP_CLOSE_WAIT))
        loop.run_until_complete(
            asyncio.wait_for(loop.shutdown_default_executor(), _LOOP_CLOSE_WAIT)
        )
    except TimeoutError:
        log.warning("an async generator or executor thread did not stop at shutdown")
    finally:
        loop.close()
        abandoned.clear()  # ended, or left with their closed loop: nothing more to do
