"""Shared pieces for the review5 attacks: a server with hostile handlers, runners on
asyncio or uvloop, and a server thread on either loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from attacks_server.fastlane_kit import run_on as _run_on

from pymprpc import current_call
from pymprpc.server import Server
from pymprpc.testing import server_url

VAR: contextvars.ContextVar[Any] = contextvars.ContextVar("review5_var", default="unset")
HELD: contextvars.ContextVar[Any] = contextvars.ContextVar("review5_held", default=None)


class CustomBase(BaseException):
    """A BaseException of the application's own."""


class Marker:
    """Something a weak reference can watch."""


class Probe:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.refs: list[weakref.ref[Marker]] = []
        self.tasks: list[Any] = []
        self.soon: list[Any] = []
        self.release = threading.Event()


def run_on(loop: str, main: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """`fastlane_kit.run_on` (a fresh asyncio or uvloop loop; a BaseException escaping
    it fails the test), bounded by 20 s here."""
    return _run_on(loop, main, timeout)


def _raise(kind: str) -> None:
    table: dict[str, BaseException] = {
        "SystemExit": SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt(),
        "GeneratorExit": GeneratorExit(),
        "CustomBase": CustomBase("mine"),
        "CancelledError": asyncio.CancelledError(),
        "ValueError": ValueError("bad"),
    }
    raise table[kind]


def build(probe: Probe, **options: Any) -> Server:
    """A server on 127.0.0.1 (port 0) with the handlers the attacks use."""
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)
    server.register_introspection_functions()
    reg = server.register_function

    @reg(executor="inline")
    def add(a: int, b: int) -> int:
        return a + b

    @reg()
    async def coro_add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @reg()
    async def sleep(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @reg(executor="inline")
    def block(seconds: float) -> str:
        time.sleep(seconds)  # blocks the server's loop: no pongs meanwhile
        return "blocked"

    @reg(executor="inline")
    def record(tag: Any) -> Any:
        probe.records.append(tag)
        return tag

    @reg()
    async def record_async(tag: Any) -> Any:
        probe.records.append(tag)
        return tag

    @reg()
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @reg()
    async def firehose(size: int) -> AsyncIterator[str]:
        chunk = "x" * size
        i = 0
        while True:
            yield f"{i}:{chunk}"
            i += 1

    # -- context and task checks ---------------------------------------------------

    @reg()
    async def setvar(tag: Any) -> Any:
        before = VAR.get()
        VAR.set(tag)
        return before

    @reg()
    async def setvar_then_wait(tag: Any, seconds: float) -> Any:
        before = VAR.get()
        VAR.set(tag)
        await asyncio.sleep(seconds)
        return [before, VAR.get()]

    @reg()
    async def whoami() -> Any:
        task = asyncio.current_task()
        ctx = current_call()
        out = [ctx.id, ctx.method, task is not None, VAR.get()]
        await asyncio.sleep(0)
        out.append(asyncio.current_task() is task)
        out.append(current_call().id == ctx.id)
        return out

    @reg()
    async def first_line_tools(seconds: float) -> Any:
        out = []
        async with asyncio.timeout(seconds):
            out.append("timeout-entered")
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(asyncio.sleep(0, "tg"))
        out.append(t.result())
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            out.append("timed-out")
        return out

    @reg()
    async def calls_soon(tag: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_result, tag)  # in the first step
        loop.call_soon(probe.soon.append, tag)
        return await fut

    @reg()
    async def calls_soon_sync(tag: Any) -> Any:
        loop = asyncio.get_running_loop()
        handle = loop.call_soon(probe.soon.append, tag)
        return type(handle).__name__

    @reg()
    async def spawn(tag: Any) -> Any:
        VAR.set(tag)

        async def child() -> Any:
            await asyncio.sleep(0)
            return [VAR.get(), current_call().id]

        task = asyncio.get_running_loop().create_task(child())
        probe.tasks.append(task)
        return await task

    @reg()
    async def spawn_detached(tag: Any) -> Any:
        async def child() -> None:
            await asyncio.sleep(0.05)
            probe.records.append(["child", tag, VAR.get()])

        VAR.set(tag)
        probe.tasks.append(asyncio.get_running_loop().create_task(child()))
        return "spawned"

    @reg()
    async def spawn_eager(tag: Any) -> Any:
        from pymprpc.server.eager import start_task

        seen: list[Any] = []

        async def child() -> Any:
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)
            return tag

        task = start_task(asyncio.get_running_loop(), child())
        parent = asyncio.current_task()
        if task is None:
            return ["finished", seen[0] is not parent]
        return [await task, seen[0] is task, seen[0] is not parent]

    @reg()
    async def nasty(kind: str, after_await: bool) -> Any:
        if after_await:
            await asyncio.sleep(0)
        _raise(kind)

    @reg()
    async def never() -> Any:
        await asyncio.Event().wait()

    @reg()
    async def hold(tag: Any) -> Any:
        marker = Marker()
        probe.refs.append(weakref.ref(marker))
        HELD.set(marker)
        return tag

    @reg()
    async def hold_and_fail(tag: Any) -> Any:
        marker = Marker()
        probe.refs.append(weakref.ref(marker))
        HELD.set(marker)
        del marker  # the logged traceback keeps this frame: only the context holds it
        raise ValueError(f"failed {tag}")

    @reg()
    async def hold_and_suspend(tag: Any) -> Any:
        marker = Marker()
        probe.refs.append(weakref.ref(marker))
        HELD.set(marker)
        await asyncio.sleep(0.001)
        return tag

    return server


@contextlib.asynccontextmanager
async def serving(probe: Probe, **options: Any) -> AsyncIterator[Server]:
    """A started server on the running loop, closed on exit."""
    server = build(probe, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def url(server: Server) -> str:
    return server_url(server)


class LoopServer:
    """A server in its own thread, on a fresh asyncio or uvloop loop."""

    def __init__(self, probe: Probe, loop: str = "asyncio", **options: Any) -> None:
        self.server = build(probe, **options)
        self.kind = loop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        factory = None
        if self.kind == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.start()
            self.ready.set()
            await self.server.serve_forever()

        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.ready.set()
            self.stopped.set()

    def __enter__(self) -> LoopServer:
        self.thread.start()
        assert self.ready.wait(10), "server did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "server thread did not stop"

    @property
    def url(self) -> str:
        return server_url(self.server)


@contextlib.contextmanager
def thread_server(probe: Probe, loop: str = "asyncio", **options: Any) -> Iterator[LoopServer]:
    with LoopServer(probe, loop, **options) as s:
        yield s


def collect() -> None:
    for _ in range(3):
        gc.collect()
