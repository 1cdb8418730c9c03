"""`Server`: registration API, lifecycle (sync and async), graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from ..protocol import (
    ALL_FEATURES,
    DEFAULT_MAX_MESSAGE_SIZE,
    Credentials,
    Feature,
    ServerSettings,
)
from ..schema import Signature
from .dispatch import Dispatcher
from .executors import ExecutorChoice, ExecutorKind, Executors, executor_choice
from .handler import ConnectionHandler
from .introspection import getresult_method, system_methods
from .kept_results import KeptResults
from .registry import Registry, make_method

log = logging.getLogger("pymprpc.server")

F = TypeVar("F", bound=Callable[..., Any])
Address = tuple[str, int]


def _parse_address(addr: Address | str) -> Address:
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    parts = urlsplit(addr if "://" in addr else f"tcp://{addr}")
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        raise ValueError(
            f"server address must look like ('host', port) or 'tcp://host:port': {addr!r}"
        )
    return parts.hostname, parts.port


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
    """

    def __init__(
        self,
        addr: Address | str = ("127.0.0.1", 5000),
        *,
        auth: Iterable[tuple[str, str]] | None = None,
        timeout: float | None = 180.0,
        debug: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        executor: ExecutorKind | str | Executor | None = None,
        max_workers: int | None = None,
        version: str | None = None,
        description: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_connections: int = 10_000,
        max_inflight: int = 1_000,
        auth_timeout: float = 10.0,
        kept_results: int = 1_000,
        kept_results_ttl: float = 600.0,
        grace_period: float = 10.0,
        features: Iterable[Feature | str] = ALL_FEATURES,
        reuse_port: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if loop is not None:
            # Accepted for compatibility with pymprpc 0.0.3; the running loop is used.
            log.debug("Server(loop=...) is ignored: the running event loop is used")
        self.host, self.port = _parse_address(addr)
        if description is None and type(self) is not Server and type(self).__doc__:
            description = type(self).__doc__
        self.settings = ServerSettings(
            version=version,
            description=description,
            idle_timeout=timeout or None,
            debug=debug,
            max_message_size=max_message_size,
            features=frozenset(Feature(f) for f in features),
        )
        self.debug = debug
        self.credentials = Credentials(auth)
        self.ssl = ssl
        self.max_connections = max_connections
        self.max_inflight = max_inflight
        self.auth_timeout = auth_timeout
        self.grace_period = grace_period
        self.reuse_port = reuse_port
        if executor is None:
            # Functions keep the usage page's process pool; stateful callables share state.
            self.registry = Registry(ExecutorKind.PROCESS, ExecutorKind.THREAD)
            default: ExecutorChoice = ExecutorKind.PROCESS
        else:
            default = executor_choice(executor)
            self.registry = Registry(default, default)
        self.executors = Executors(default, max_workers, self.registry.targets)
        self.dispatcher = Dispatcher(self.registry, self.executors)
        self.kept = KeptResults(kept_results, kept_results_ttl)
        self.handlers: set[ConnectionHandler] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registry.add_function(getresult_method(self), "system.getresult")

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
        the bad value otherwise) and results are encoded for the wire.
        """
        kind = executor_choice(executor) if executor is not None else None

        def decorator(func: F) -> F:
            self.registry.add_function(
                func,
                name if isinstance(name, str) else None,
                executor=kind,
                deprecated=deprecated,
                signature=signature,
                doc=doc,
                schema=schema,
            )
            return func

        if callable(name):
            return decorator(name)
        return decorator

    def register_instance(
        self,
        obj: Any,
        allow_dotted_names: bool = False,
        *,
        executor: ExecutorKind | str | Executor | None = None,
    ) -> None:
        """Register every public method of `obj` under its own name.

        Plain methods run on the thread pool unless the server was given another
        `executor=`, so every call shares `obj`. `executor="process"` runs them in the
        process pool instead, where each worker holds its own copy of `obj` (logged at
        INFO once per method): use it only for methods that do not keep state.

        With `allow_dotted_names=True`, `a.b.c` is resolved through `obj`'s public
        attributes at call time (only do this for objects you fully trust).
        """
        kind = executor_choice(executor) if executor is not None else None
        self.registry.add_instance(obj, allow_dotted_names, executor=kind)

    def register_introspection_functions(self) -> None:
        """Register the `system.*` introspection methods."""
        for name, func in system_methods(self).items():
            self.registry.add_method(make_method(name, func, key=f"{name}@{id(self)}"))

    # -- lifecycle -------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The bound (host, port); the real port once bound to port 0."""
        return self.host, self.port

    def bind(self) -> None:
        """Create the listening socket (done by `__enter__` / `start` if not yet)."""
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server(
            (self.host, self.port), family=family, backlog=1024, reuse_port=self.reuse_port
        )
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]

    def __enter__(self) -> Server:
        self.bind()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None and self._server is None:
            self._sock.close()
            self._sock = None
        self.executors.shutdown()

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
        self.executors.shutdown()

    async def start(self) -> None:
        """Start accepting connections on the running loop."""
        if self._server is not None:
            return
        self.bind()
        assert self._sock is not None
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.draining = False
        # Fork workers now, while no client connection exists to be inherited.
        if self.registry.uses_executor(ExecutorKind.PROCESS):
            self.executors.warm_up()
        self._server = await self._loop.create_server(
            lambda: ConnectionHandler(self), sock=self._sock, ssl=self.ssl
        )
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
        """Stop accepting, let running calls finish within `grace`, then cancel the rest."""
        server = self._server
        if server is None or self.draining:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        grace = self.grace_period if grace is None else grace
        self.draining = True
        server.close()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            if pending:
                log.warning("cancelling %d call(s) still running after %.1fs", len(pending), grace)
                for handler in list(self.handlers):
                    handler.abort_calls()
                await asyncio.wait(pending, timeout=max(1.0, grace))
        for handler in list(self.handlers):
            handler.close()
        await server.wait_closed()
        self._server = None
        self._sock = None
        self.executors.shutdown()
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
            asyncio.run(self._run_until_stopped())
        except KeyboardInterrupt:
            pass
        finally:
            self._loop = None
