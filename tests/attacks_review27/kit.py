"""Review 27's kit: a real server (port 0) serving on its own loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from review_fixtures import LoopServer

from pymprpc import Server


@contextlib.contextmanager
def serving(server: Server, loop: str = "asyncio") -> Iterator[str]:
    """Serve `server` in a thread; yield its URL; stop it (bounded) after."""
    running = LoopServer(server, loop)
    running.thread.start()
    assert running.ready.wait(15), "server did not start"
    if running.error is not None:
        raise running.error
    try:
        yield running.url
    finally:
        server.stop()
        running.thread.join(20)


class Seen:
    """What the server saw: generator ends, cancellations (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.cond = threading.Condition(self.lock)

    def add(self, event: str) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, event: str, timeout: float = 5) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: event in self.events, timeout)


def make_server(seen: Seen | None = None, **options: Any) -> Server:
    """Coroutine methods: echo, slow, ticks (a stream of time.monotonic()), count, blob."""
    seen = seen if seen is not None else Seen()
    options.setdefault("grace_period", 2)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def size(x: Any) -> int:
        return len(x)

    @server.register_function()
    async def slow(seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.register_function()
    async def ticks(tag: str, pause: float = 0.01, n: int = 100000, first: float = 0.0):  # type: ignore[no-untyped-def]
        try:
            if first:
                await asyncio.sleep(first)
            for _ in range(n):
                yield time.monotonic()
                await asyncio.sleep(pause)
            seen.add(f"{tag}:done")
        finally:
            seen.add(f"{tag}:finally")

    @server.register_function()
    async def count(n: int, pause: float = 0.0):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
            if pause:
                await asyncio.sleep(pause)

    server.seen = seen  # type: ignore[attr-defined]
    return server


def arun(coro: Any, timeout: float = 30) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
