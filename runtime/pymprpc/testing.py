"""Run a server and get connected clients, for tests (like grpclib's `ChannelFor`).

The server is real (it listens on 127.0.0.1; give it port 0 for a free port), so what a
test sees is what a client sees; nothing here changes how it serves.

From asyncio code::

    server = Server(("127.0.0.1", 0))
    ...register methods...
    async with client_for(server) as rpc:          # AsyncRPC, or a generated AsyncTypedClient
        assert await rpc.add(1, 2) == 3

From blocking code (the server runs on its own loop in a thread)::

    with serve_in_thread(server) as running, RPC(running.url) as rpc:
        assert rpc.add(1, 2) == 3

or `with sync_client_for(server) as rpc: ...`. For pytest, `pymprpc.pytest_plugin`
offers the same as fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import quote

from .client import RPC, AsyncRPC
from .server import Server
from .server.server import run_bounded

__all__ = ["RunningServer", "client_for", "serve_in_thread", "server_url", "sync_client_for"]

C = TypeVar("C")
T = TypeVar("T")


def server_url(server: Server, user: str | None = None, password: str | None = None) -> str:
    """The `tcp://` address a client uses to reach `server` (with credentials if given)."""
    host, port = server.address
    if ":" in host:
        host = f"[{host}]"
    auth = ""
    if user is not None:
        auth = quote(user, safe="") + (":" + quote(password or "", safe="")) + "@"
    return f"tcp://{auth}{host}:{port}"


@contextlib.asynccontextmanager
async def client_for(
    server: Server,
    client: Callable[..., C] = AsyncRPC,  # type: ignore[assignment]
    *,
    user: str | None = None,
    password: str | None = None,
    **options: Any,
) -> AsyncIterator[C]:
    """An async client connected to `server`, which is started on the running loop first
    if it is not serving yet (and then closed on exit).

    Args:
        server: the server (give it port 0 for a free port).
        client: `AsyncRPC` (the default) or a generated `AsyncTypedClient` subclass.
        user: log in as this user (with `password`); None: anonymously.
        password: the user's password.
        **options: client options (`timeout=`, `interceptors=`, ...).
    """
    started = False
    if not server.running:
        await server.start()
        started = True
    try:
        instance = client(server_url(server, user, password), **options)
        await instance.connect()  # type: ignore[attr-defined]
        try:
            yield instance
        finally:
            await instance.close()  # type: ignore[attr-defined]
    finally:
        if started:
            await server.close()


class RunningServer:
    """A server serving on its own event loop in a background thread."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pymprpc-test-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._ready.set()
            await self.server.serve_forever()

        # As Server.run_forever runs: asyncio.run would wait for ever, at exit, for a call
        # that swallows its cancellation, and so would this thread and stop().
        with contextlib.suppress(BaseException):
            run_bounded(main(), self.server._abandoned)  # (this package's own)

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; returns once the server accepts connections.

        Raises:
            TimeoutError: the server did not start within `timeout` seconds.
            OSError: the server could not listen (its error, re-raised).
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout}s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 20.0) -> None:
        """Shut the server down gracefully and wait for its thread.

        Raises:
            TimeoutError: it did not stop within `timeout` seconds.
        """
        self.server.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the server did not stop within {timeout}s")

    @property
    def url(self) -> str:
        """The server's `tcp://host:port` address."""
        return server_url(self.server)

    def url_for(self, user: str, password: str) -> str:
        """The server's address with credentials."""
        return server_url(self.server, user, password)

    def call_in_loop(self, func: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `func` on the server's loop and return its value (to read server state
        safely from the test's thread)."""
        if self.loop is None:
            raise RuntimeError("the server is not running")
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(func())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return result.result(timeout)


@contextlib.contextmanager
def serve_in_thread(server: Server) -> Iterator[RunningServer]:
    """Serve `server` in a background thread for the duration of the block."""
    running = RunningServer(server)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def sync_client_for(
    server: Server,
    client: Callable[..., C] = RPC,  # type: ignore[assignment]
    *,
    user: str | None = None,
    password: str | None = None,
    **options: Any,
) -> Iterator[C]:
    """A blocking client connected to `server`, served in a background thread for the
    duration of the block.

    Args:
        server: the server (give it port 0 for a free port); not yet started.
        client: `RPC` (the default) or a generated `TypedClient` subclass.
        user: log in as this user (with `password`); None: anonymously.
        password: the user's password.
        **options: client options (`timeout=`, `interceptors=`, ...).
    """
    with serve_in_thread(server):
        instance = client(server_url(server, user, password), **options)
        instance.connect()  # type: ignore[attr-defined]
        try:
            yield instance
        finally:
            instance.close()  # type: ignore[attr-defined]
