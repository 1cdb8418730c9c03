"""Shared pieces of review 26's lifecycle attacks: a server with a handler of every kind
(module-level, so a forkserver-started pool can import them), a server serving on its
own asyncio or uvloop loop in a thread (closed from the test with any grace), and what
/proc says about this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pymprpc import Server

# -- handlers ---------------------------------------------------------------------------

STARTED: dict[str, threading.Event] = {}


def started(tag: str) -> threading.Event:
    return STARTED.setdefault(tag, threading.Event())


async def echo(x: Any) -> Any:
    return x


async def sleep_async(t: float) -> float:
    await asyncio.sleep(t)
    return t


def sleep_thread(t: float) -> float:
    time.sleep(t)
    return t


def sleep_proc(t: float) -> float:
    time.sleep(t)
    return t


def spin_proc() -> None:
    while True:
        pass


def block_thread(tag: str) -> None:
    started(tag).set()
    time.sleep(3600)


async def stubborn(tag: str) -> None:
    started(tag).set()
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


async def count(n: int, pause: float = 0.0) -> AsyncIterator[int]:
    for i in range(n):
        yield i
        if pause:
            await asyncio.sleep(pause)


async def endless(tag: str) -> AsyncIterator[int]:
    started(tag).set()
    i = 0
    while True:
        yield i
        i += 1
        await asyncio.sleep(0.05)


async def slow_finally(tag: str) -> AsyncIterator[int]:
    started(tag).set()
    try:
        while True:
            yield 1
            await asyncio.sleep(0.05)
    finally:
        await asyncio.sleep(3600)


def every_kind(**options: Any) -> Server:
    """A server on port 0 with one handler of every kind."""
    options.setdefault("max_workers", 2)
    options.setdefault("grace_period", 5)
    server = Server(("127.0.0.1", 0), **options)
    server.register_function()(echo)
    server.register_function()(sleep_async)
    server.register_function(executor="thread")(sleep_thread)
    server.register_function(executor="process")(sleep_proc)
    server.register_function(executor="process")(spin_proc)
    server.register_function(executor="thread")(block_thread)
    server.register_function()(stubborn)
    server.register_function()(count)
    server.register_function()(endless)
    server.register_function()(slow_finally)
    return server


# -- a server on a loop in a thread -----------------------------------------------------


class Serving:
    """`server` started on a new asyncio or uvloop loop in a thread; `close(grace)` closes
    it from the test's thread and returns how long that took; `thread` ends once the
    loop is closed (as run_forever would)."""

    def __init__(self, server: Server, loop_kind: str = "asyncio") -> None:
        self.server = server
        self.kind = loop_kind
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="review26-server", daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the server did not start"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from pymprpc.server.server import run_bounded

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            try:
                await self.server.start()
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(BaseException):
            if self.kind == "uvloop":
                import uvloop

                # (uvloop.run waits without bound for calls that ignore cancellation:
                # tests with such handlers use asyncio, which run_bounded serves.)
                uvloop.run(main())
            else:
                run_bounded(main(), self.server._abandoned)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.port}"

    def submit(self, coro: Any) -> Future[Any]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, grace: float | None = None, timeout: float = 40) -> float:
        began = time.monotonic()
        self.submit(self.server.close(grace)).result(timeout)
        return time.monotonic() - began

    def join(self, timeout: float = 20) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server's loop did not end"

    def __enter__(self) -> Serving:
        return self

    exit_timeout = 30.0

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(self.exit_timeout)


# -- /proc ------------------------------------------------------------------------------


def _tree() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(d)] = (int(fields[1]), fields[0])
    return out


def _multiprocessing_helper(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"forkserver" in cmdline or b"resource_tracker" in cmdline


def child_pids() -> set[int]:
    """Live (non-zombie) processes below this one: pool zygotes and workers, also those
    forked by multiprocessing's forkserver (README "Forking safely", case 3), but not
    that forkserver and its resource tracker themselves, which multiprocessing keeps for
    the life of the process."""
    tree = _tree()
    me = os.getpid()
    found: set[int] = set()
    frontier = {me}
    while frontier:
        below = {pid for pid, (parent, _) in tree.items() if parent in frontier}
        below -= found
        found |= below
        frontier = below
    helpers = {pid for pid in found if tree[pid][0] == me and _multiprocessing_helper(pid)}
    return {pid for pid in found - helpers if tree[pid][1] != "Z"}


def zombies() -> set[int]:
    me = os.getpid()
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] == "Z":
                out.add(int(d))
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
