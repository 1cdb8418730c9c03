"""The per-client state across connections: idle closes, failed reconnects, close()
during connect, reconnect(), heartbeats, several clients in a loop and in threads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import pytest

from pymprpc import AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded, MPRPCError
from pymprpc.server import Server
from pymprpc.testing import server_url

from .kit import Probe, collect, run_on, serving, thread_server, url

pytestmark = pytest.mark.timeout(40)


async def until_disconnected(rpc: AsyncRPC, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while rpc.connected:
        assert loop.time() < end, "client never saw the idle close"
        await asyncio.sleep(0.01)


def test_idle_close_then_transparent_reconnect_keeps_timeout(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe(), idle_timeout=0.2) as server,
            AsyncRPC(url(server), timeout=0.1) as rpc,
        ):
            sleep = rpc.sleep
            assert await rpc.add(1, 2) == 3
            await until_disconnected(rpc)
            assert await rpc.add(2, 2) == 4  # reconnected within the 0.1 s deadline
            with pytest.raises(DeadlineExceeded):
                await sleep(1)
            rpc.timeout = None
            await until_disconnected(rpc)
            assert await sleep(0.05) == 0.05

    run_on(loop, main)


def test_idle_close_then_many_calls_at_once_reconnect_once(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe(), idle_timeout=0.2) as server,
            AsyncRPC(url(server)) as rpc,
        ):
            assert await rpc.add(1, 2) == 3
            await until_disconnected(rpc)
            got = await asyncio.gather(*(rpc.add(i, i) for i in range(50)))
            assert got == [2 * i for i in range(50)]
            assert rpc.connected

    run_on(loop, main)


def test_idle_close_then_stream_and_notify(loop: str) -> None:
    async def main() -> None:
        probe = Probe()
        async with serving(probe, idle_timeout=0.2) as server, AsyncRPC(url(server)) as rpc:
            assert await rpc.add(1, 2) == 3
            await until_disconnected(rpc)
            await rpc.notify("record", "n1")
            stream = await rpc.count(5)
            assert [x async for x in stream] == [0, 1, 2, 3, 4]
            assert probe.records == ["n1"]

    run_on(loop, main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.logs_errors  # see test_a_refused_reconnect_logs_no_unretrieved_future
def test_failed_reconnect_then_server_back(loop: str) -> None:
    async def main() -> None:
        port = free_port()
        server = Server(("127.0.0.1", port), grace_period=0.2, idle_timeout=0.2)

        def op(a: int, b: int) -> int:
            return a + b

        def op2(a: int, b: int) -> int:
            return a * b

        server.register_function(executor="inline", name="op")(op)
        await server.start()
        addr = f"tcp://127.0.0.1:{port}"
        rpc = AsyncRPC(addr, timeout=2, connect_timeout=1)
        await rpc.connect()
        add = rpc.op
        assert await add(1, 2) == 3
        await server.close()
        await until_disconnected(rpc)
        with pytest.raises(MPRPCError):
            await add(1, 1)
        with pytest.raises(MPRPCError):
            await rpc.call("op", 1, 1)
        again = Server(("127.0.0.1", port), grace_period=0.2)
        again.register_function(executor="inline", name="op")(op2)
        await again.start()
        try:
            assert await add(3, 4) == 12
            rpc.timeout = 0.5
            assert rpc.timeout == 0.5
            assert await add(5, 5) == 25
        finally:
            await rpc.close()
            await again.close()

    run_on(loop, main)


@pytest.mark.logs_errors  # checked by the test itself
def test_a_refused_reconnect_logs_no_unretrieved_future(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        port = free_port()
        rpc = AsyncRPC(f"tcp://127.0.0.1:{port}", connect_timeout=1)
        with pytest.raises(MPRPCError):
            await rpc.connect()
        with pytest.raises(MPRPCError):
            await rpc.call("x")
        del rpc
        collect()
        await asyncio.sleep(0)

    run_on(loop, main)
    collect()
    logged = [r.getMessage() for r in caplog.get_records("call") if r.name == "asyncio"]
    assert not [m for m in logged if "never retrieved" in m], logged


def test_close_during_connect_then_connect_again(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server), timeout=1)
            connecting = asyncio.ensure_future(rpc.connect())
            await asyncio.sleep(0)
            await rpc.close()
            with contextlib.suppress(ConnectionLostError):  # ended by close(): allowed
                await connecting
            await rpc.connect()
            assert await rpc.add(2, 3) == 5
            await rpc.close()

    run_on(loop, main)


@pytest.mark.parametrize("passes", [0, 1, 2, 3, 5])
def test_close_at_each_step_of_connect(loop: str, passes: int) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server))
            connecting = asyncio.ensure_future(rpc.connect())
            for _ in range(passes):
                await asyncio.sleep(0)
            await rpc.close()
            with contextlib.suppress(ConnectionLostError):
                await asyncio.wait_for(connecting, 5)
            assert not rpc._state.batching and rpc._state.outbox == []
            async with rpc:
                assert await rpc.add(1, 1) == 2

    run_on(loop, main)


def test_close_fails_pending_calls_and_streams(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server))
            await rpc.connect()
            calls = [asyncio.ensure_future(rpc.sleep(5)) for _ in range(5)]
            stream = await rpc.firehose(10)
            await asyncio.sleep(0.05)
            await rpc.close()
            for c in calls:
                with pytest.raises(ConnectionLostError):
                    await c
            with pytest.raises(ConnectionLostError):
                async for _ in stream:
                    pass
            assert not rpc._state.reading_paused and rpc._state.outbox == []
            await rpc.connect()
            assert await rpc.add(1, 2) == 3
            await rpc.close()

    run_on(loop, main)


def test_reconnect_fails_pending_and_keeps_timeout(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server), timeout=0.1) as rpc:
            pending = asyncio.ensure_future(rpc.method("sleep").with_options(timeout=5)(2))
            await asyncio.sleep(0.02)
            old = rpc._state.transport
            await rpc.reconnect()
            assert rpc._state.transport is not old
            with pytest.raises(ConnectionLostError):
                await pending
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)
            assert await rpc.add(4, 4) == 8

    run_on(loop, main)


def test_same_client_in_two_loops_one_after_the_other() -> None:
    probe = Probe()
    with thread_server(probe) as srv:
        rpc = AsyncRPC(srv.url, timeout=0.1)

        async def use() -> Any:
            async with rpc:
                with pytest.raises(DeadlineExceeded):
                    await rpc.sleep(1)
                return await rpc.add(1, 2)

        assert run_on("asyncio", use) == 3
        assert run_on("uvloop", use) == 3
        assert run_on("asyncio", use) == 3


def test_heartbeat_fails_pending_calls_when_pongs_stop() -> None:
    probe = Probe()
    with thread_server(probe) as srv:

        async def main() -> Any:
            async with AsyncRPC(srv.url, heart_beat=0.15) as rpc:
                assert await rpc.add(1, 1) == 2
                blocker = asyncio.ensure_future(rpc.block(1.5))
                waiting = asyncio.ensure_future(rpc.sleep(3))
                t0 = asyncio.get_running_loop().time()
                for fut in (waiting, blocker):
                    with pytest.raises(ConnectionLostError):
                        await fut
                took = asyncio.get_running_loop().time() - t0
                await asyncio.sleep(1.6)  # the server's loop is free again
                await rpc.connect()  # not an idle close: connected again by hand
                assert await rpc.add(2, 2) == 4
                return took

        took = run_on("asyncio", main)
        assert took < 1.4, took


def test_heartbeat_with_a_short_default_timeout_and_idle(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), heart_beat=0.2, timeout=0.5) as rpc,
        ):
            await asyncio.sleep(0.4)
            assert rpc.connected
            assert await rpc.add(1, 2) == 3
            rpc.timeout = 0.05
            with pytest.raises(DeadlineExceeded):
                await rpc.sleep(1)
            await asyncio.sleep(0.2)
            assert rpc.connected

    run_on(loop, main)


def test_many_clients_one_loop_no_shared_state(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            clients = [AsyncRPC(url(server)) for _ in range(6)]
            for c in clients:
                await c.connect()
            states = {id(c._state) for c in clients}
            assert len(states) == 6
            for i, c in enumerate(clients):
                c.timeout = 0.05 if i % 2 else None
            results = await asyncio.gather(
                *(c.sleep(0.25) for c in clients), return_exceptions=True
            )
            for i, r in enumerate(results):
                if i % 2:
                    assert isinstance(r, DeadlineExceeded), r
                else:
                    assert r == 0.25, r
            await clients[0].close()
            assert all(c.connected for c in clients[1:])
            got = await asyncio.gather(*(c.add(i, 1) for i, c in enumerate(clients[1:])))
            assert got == [i + 1 for i in range(5)]
            for c in clients[1:]:
                await c.close()

    run_on(loop, main)


def test_clients_in_threads_each_with_its_own_loop() -> None:
    probe = Probe()
    errors: list[BaseException] = []
    results: dict[int, Any] = {}
    with thread_server(probe) as srv:

        def worker(n: int) -> None:
            async def main() -> Any:
                async with AsyncRPC(srv.url) as rpc:
                    # 200 calls within a deadline no loaded CI machine misses; then each
                    # thread's client its own short one, which only its `sleep` meets.
                    rpc.timeout = 30.0
                    sums = await asyncio.gather(*(rpc.add(n, i) for i in range(200)))
                    assert sums == [n + i for i in range(200)]
                    rpc.timeout = 0.05 * (n + 1)
                    try:
                        await rpc.sleep(1)
                        late = "none"
                    except DeadlineExceeded:
                        late = "deadline"
                    return rpc.timeout, late

            try:
                results[n] = run_on("uvloop" if n % 2 else "asyncio", main)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert results == {n: (0.05 * (n + 1), "deadline") for n in range(6)}


def test_server_url_helper_matches() -> None:
    server = Server(("127.0.0.1", 0))
    assert server_url(server).startswith("tcp://")
