"""Review 30's kit: a server counting the calls it runs, a loop of either kind that is
stopped between calls (`Stepper`: `loop.run_until_complete` once per call)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from pymprpc import Server
from pymprpc.testing import RunningServer, serve_in_thread

T = TypeVar("T")


def make_server(**options: Any) -> tuple[Server, dict[str, int]]:
    """echo, slow(seconds, value), count(n), big(n, delay) (n bytes after `delay` s),
    tick(tag) (counts each run in `ran[tag]`); `ran` is returned with the server."""
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)
    ran: dict[str, int] = {}

    @server.register_function()
    async def echo(x: Any = None) -> Any:
        return x

    @server.register_function()
    async def slow(seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.register_function()
    async def count(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    @server.register_function()
    async def big(n: int, delay: float = 0.0) -> bytes:
        await asyncio.sleep(delay)
        return b"x" * n

    @server.register_function()
    async def tick(tag: str) -> str:
        ran[tag] = ran.get(tag, 0) + 1
        return tag

    return server, ran


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[tuple[RunningServer, dict[str, int]]]:
    server, ran = make_server(**options)
    with serve_in_thread(server) as running:
        yield running, ran


class Stepper:
    """A loop of kind `kind` that runs one awaitable at a time and is stopped between
    them, as an application calling `loop.run_until_complete` per call does."""

    def __init__(self, kind: str) -> None:
        if kind == "uvloop":
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Awaitable[T], limit: float = 8) -> T:
        """Run `awaitable` in the calling task itself (no extra task: no extra loop
        pass before it starts), bounded by `limit` seconds."""

        async def bounded() -> T:
            async with asyncio.timeout(limit):
                return await awaitable

        return self.loop.run_until_complete(bounded())

    def close(self) -> None:
        self.loop.close()

    def __enter__(self) -> Stepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
