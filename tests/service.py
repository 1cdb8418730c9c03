"""The test service: a Server with methods of every kind, and what tests observe of it."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from helpers import ServerThread
from pymprpc.server import Server

USER, PASSWORD = "admin", "s3cret"


class Probe:
    """Side effects of server methods, observed by tests (the server runs in a thread)."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.stream_closed = threading.Event()
        self.release = threading.Event()
        self.produced = 0


# Plain functions for the process pool, at module level: importable, so they reach
# workers started by the forkserver when the test process runs threads (pytest-xdist).
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def pid_then_sleep(path: str, seconds: float) -> int:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def divide(a: float, b: float) -> float:
    return a / b


def die() -> None:
    os._exit(1)


def pid() -> int:
    return os.getpid()


def build_server(probe: Probe, **options: Any) -> Server:
    options.setdefault("auth", [(USER, PASSWORD)])
    options.setdefault("version", "1.0")
    options.setdefault("description", "test service")
    server = Server(("127.0.0.1", 0), **options)
    server.register_introspection_functions()

    server.register_function()(add)

    @server.register_function(executor="inline")
    def record(tag: str) -> str:
        probe.executed.append(tag)
        return tag

    @server.register_function()
    async def coro_add(a: int, b: int = 1) -> int:
        await asyncio.sleep(0)
        return a + b

    @server.register_function()
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @server.register_function()
    async def endless() -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            probe.stream_closed.set()

    @server.register_function()
    async def firehose(size: int) -> AsyncIterator[str]:
        chunk = "x" * size
        try:
            while True:
                probe.produced += 1
                yield chunk
        finally:
            probe.stream_closed.set()

    server.register_function()(pid_then_sleep)

    @server.register_function()
    async def fail_midway(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise ValueError("generator broke")

    server.register_function()(divide)

    @server.register_function(executor="inline")
    def repeat(text: str, times: int) -> str:
        return text * times

    @server.register_function(executor="thread")
    def echo(value: Any) -> Any:
        return value

    @server.register_function()
    async def sleep(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @server.register_function(executor="thread")
    def wait_release() -> str:
        probe.release.wait(10)
        return "released"

    server.register_function()(die)

    server.register_function()(pid)

    @server.register_function(deprecated=True)
    async def old_add(a: int, b: int) -> int:
        return a + b

    @server.register_function(deprecated=True)
    async def old_count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    return server


def url(srv: ServerThread, user: str = USER, password: str = PASSWORD) -> str:
    return f"tcp://{user}:{password}@127.0.0.1:{srv.port}"
