"""Server lifecycle and registration: graceful shutdown, executors, instances, async API."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from service import Probe, build_server, url

from helpers import RawClient, ServerThread, arun
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import NotFindError, RpcUnavailableException
from pymprpc.server import Server


def test_graceful_shutdown_lets_running_calls_finish(probe: Probe) -> None:
    async def main() -> None:
        server = build_server(probe, grace_period=10)
        await server.start()
        async with AsyncRPC(url_of(server)) as rpc:
            running = asyncio.ensure_future(rpc.wait_release())
            while not server.running_call_count:
                await asyncio.sleep(0.01)
            closing = asyncio.ensure_future(server.close())
            while not server.draining:
                await asyncio.sleep(0.01)
            # Arriving while the server drains: refused with 503 for that call only.
            with pytest.raises(RpcUnavailableException, match="shutting down"):
                await rpc.add(1, 2)
            assert not running.done()
            probe.release.set()
            assert await running == "released"
            await closing

    arun(main())


def test_shutdown_cancels_calls_past_the_grace_period(probe: Probe) -> None:
    async def main() -> None:
        server = build_server(probe, grace_period=0.2)
        await server.start()
        async with AsyncRPC(url_of(server), features=()) as rpc:
            stream = await rpc.endless()
            assert await anext(stream) == 0
            slow = asyncio.ensure_future(rpc.sleep(30))
            while server.running_call_count < 2:  # the stream and the sleep both run
                await asyncio.sleep(0.01)
            await server.close()
            with pytest.raises(RpcUnavailableException, match="shutting down"):
                await slow
            with pytest.raises((RpcUnavailableException, ConnectionError)):
                async for _ in stream:
                    pass
        assert probe.stream_closed.is_set()

    arun(main())


def url_of(server: Server) -> str:
    return f"tcp://admin:s3cret@127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("executor", "same_process"), [("process", False), ("thread", True), ("inline", True)]
)
def test_executor_is_selectable_per_server(
    serve: Callable[..., ServerThread], executor: str, same_process: bool
) -> None:
    srv = serve(executor=executor)
    with RPC(url(srv)) as rpc:
        assert (rpc.pid() == os.getpid()) is same_process


def test_function_registered_after_start_reaches_process_workers(
    serve: Callable[..., ServerThread],
) -> None:
    srv = serve()
    with RPC(url(srv)) as rpc:
        assert rpc.add(1, 1) == 2  # workers forked
        # Threads run now: importable, it reaches new workers through the forkserver.
        srv.call_in_loop(lambda: srv.server.register_function()(late))
        assert rpc.late(4) == 40
        assert rpc.add(1, 2) == 3


def late(x: int) -> int:
    return x * 10


class Counter:
    """A stateful instance: its state lives where its methods run."""

    def __init__(self) -> None:
        self.value = 0
        self.inner = Inner()

    def bump(self) -> int:
        self.value += 1
        return self.value

    async def get(self) -> int:
        return self.value

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def _secret(self) -> str:
        return "hidden"


class Inner:
    def shout(self, text: str) -> str:
        return text.upper()


def test_register_instance_and_dotted_names() -> None:
    async def main() -> None:
        server = Server(("127.0.0.1", 0), executor="inline")
        counter = Counter()
        server.register_instance(counter, allow_dotted_names=True)
        async with server, AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            assert await rpc.bump() == 1
            assert await rpc.get() == 1
            assert [i async for i in await rpc.ticks(2)] == [0, 1]
            assert await rpc.inner.shout("hi") == "HI"
            with pytest.raises(NotFindError):
                await rpc.call("_secret")
            with pytest.raises(NotFindError):
                await rpc.call("inner.__class__")

    arun(main())


def test_dotted_names_are_off_by_default() -> None:
    async def main() -> None:
        server = Server(("127.0.0.1", 0))
        server.register_instance(Counter())
        async with server, AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            with pytest.raises(NotFindError):
                await rpc.inner.shout("hi")

    arun(main())


def test_instance_methods_share_the_instance_by_default() -> None:
    """A registered instance's plain methods run where they see the one instance."""

    async def main() -> None:
        server = Server(("127.0.0.1", 0))
        counter = Counter()
        server.register_instance(counter)
        async with server, AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            assert [await rpc.bump() for _ in range(3)] == [1, 2, 3]
            assert await rpc.get() == 3  # the coroutine sees the same instance
        assert counter.value == 3

    arun(main())


def test_process_pool_instance_state_is_per_worker(caplog: pytest.LogCaptureFixture) -> None:
    """Asked for explicitly, a process-pool method mutates a worker's copy, and says so."""

    async def main() -> None:
        server = Server(("127.0.0.1", 0), max_workers=1)
        counter = Counter()
        with caplog.at_level(logging.INFO, logger="pymprpc.server"):
            server.register_instance(counter, executor="process")
        notes = [r for r in caplog.records if "own copy" in r.getMessage()]
        assert len(notes) == 1 and notes[0].levelno == logging.INFO
        assert "bump" in notes[0].getMessage() and "Counter" in notes[0].getMessage()
        async with server, AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            assert await rpc.bump() == 1
            assert await rpc.bump() == 2  # the single worker keeps its copy
            assert await rpc.get() == 0  # the coroutine sees the server's copy
        assert counter.value == 0

    arun(main())


def test_generator_functions_are_refused_at_registration() -> None:
    server = Server(("127.0.0.1", 0))

    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="async generator"):
        server.register_function()(gen)


def test_register_function_without_parentheses_and_with_a_name() -> None:
    async def main() -> None:
        server = Server(("127.0.0.1", 0), executor="inline")

        @server.register_function
        def plain(x: int) -> int:
            return x

        @server.register_function("math.double", signature="double(x: int) -> int", doc="Twice x.")
        def double(x: int) -> int:
            return 2 * x

        server.register_introspection_functions()
        async with server, AsyncRPC(f"tcp://127.0.0.1:{server.port}") as rpc:
            assert await rpc.plain(3) == 3
            assert await rpc.math.double(3) == 6
            assert await rpc.system.methodSignature("math.double") == "double(x: int) -> int"
            assert await rpc.system.methodHelp("math.double") == "Twice x."

    arun(main())


def test_max_connections(serve: Callable[..., ServerThread]) -> None:
    srv = serve(max_connections=1)
    with RPC(url(srv)) as rpc:
        with RawClient(srv.port) as extra:
            assert extra.recv() == {"MPRPC": "0.1", "CODE": 503}
            assert extra.at_eof()
        assert rpc.add(1, 2) == 3


def test_stop_from_another_thread(probe: Probe) -> None:
    server = build_server(probe)
    server.bind()
    runner = threading.Thread(target=server.run_forever)
    runner.start()
    try:
        with RPC(url_of(server)) as rpc:
            assert rpc.add(2, 2) == 4
    finally:
        server.stop()
        runner.join(20)
    assert not runner.is_alive()
