"""Heartbeat contract: ping after N s of silence, dead after N more s of silence; a
stream that keeps coming keeps the connection alive without pongs; a consumer that
paused reading is not declared dead for it, but a dead server is still found."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from attacks_review6.kit import end, item, raw_server, result, start
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError
from pymprpc.server import Server
from pymprpc.testing import server_url

pytestmark = pytest.mark.timeout(30)


def run(coro: Any, timeout: float = 25) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Streamer:
    """on_call: `gen(period, count, then)` streams `count` items every `period` s
    (0: all at once), then `then`: "end" or "silent"; `add` answers unless silenced."""

    def __init__(self) -> None:
        self.silent = False

    def __call__(self, conn: Any, msg: dict[str, Any]) -> Any:
        id = msg["ID"]
        args = msg.get("ARGS") or []
        if msg["METHOD"] == "add":
            if not self.silent:
                conn.write(result(id, sum(args)))
            return None
        period, count, then = args

        async def go() -> None:
            conn.write(start(id))
            if period == 0:
                conn.write(b"".join(item(id, [i, "p" * 1000]) for i in range(count)))
            else:
                for i in range(count):
                    if self.silent:
                        return
                    conn.write(item(id, i))
                    await asyncio.sleep(period)
            if then == "end":
                conn.write(end(id))
            else:
                self.silent = True

        return go()


def test_stream_without_pongs_stays_alive() -> None:
    """Pings never answered, but an item every N/4: the stream must finish."""
    n = 0.2

    async def main() -> None:
        async with (
            raw_server(Streamer(), answer_pings=False) as s,
            AsyncRPC(s.url, heart_beat=n) as rpc,
        ):
            got = [x async for x in await rpc.gen(n / 4, 40, "end")]  # ~2 s = 10 N
            assert got == list(range(40))

    run(main())


@pytest.mark.parametrize("n", [0.1, 0.3])
def test_silent_mid_stream_dies_in_time(n: float) -> None:
    async def main() -> None:
        async with (
            raw_server(Streamer(), answer_pings=False) as s,
            AsyncRPC(s.url, heart_beat=n) as rpc,
        ):
            stream = await rpc.gen(0.01, 5, "silent")
            got = []
            t0 = None
            with pytest.raises(ConnectionLostError, match="heartbeat"):
                async for x in stream:
                    got.append(x)
                    t0 = time.monotonic()
            assert got == list(range(5))
            assert t0 is not None
            took = time.monotonic() - t0
            assert took < 3 * n + 0.5, took

    run(main())


def test_silent_server_plain_call_dies_in_time() -> None:
    n = 0.2

    async def main() -> None:
        sc = Streamer()
        sc.silent = True
        async with (
            raw_server(sc, answer_pings=False) as s,
            AsyncRPC(s.url, heart_beat=n) as rpc,
        ):
            t0 = time.monotonic()
            with pytest.raises(ConnectionLostError, match="heartbeat"):
                await rpc.add(1, 2)
            assert time.monotonic() - t0 < 3 * n + 0.5

    run(main())


def test_paused_consumer_not_declared_dead_then_dead_server_found() -> None:
    """A burst far above stream_buffer_size, then the server goes silent (no pongs, no
    FIN). The consumer reads one item, sleeps 5 N (reading paused: not dead), then reads
    on: it gets every item of the burst, then ConnectionLostError within ~3 N."""
    n = 0.2
    count = 400  # ~400 KB against a 64 KiB buffer

    async def main() -> None:
        async with (
            raw_server(Streamer(), answer_pings=False) as s,
            AsyncRPC(s.url, heart_beat=n, stream_buffer_size=64 * 1024) as rpc,
        ):
            stream = await rpc.gen(0, count, "silent")
            it = stream.__aiter__()
            got = [await it.__anext__()]
            await asyncio.sleep(5 * n)
            assert rpc.connected
            t_last = time.monotonic()
            with pytest.raises(ConnectionLostError):
                while True:
                    got.append(await it.__anext__())
                    t_last = time.monotonic()
            assert [g[0] for g in got] == list(range(count))
            assert time.monotonic() - t_last < 3 * n + 1.0

    run(main())


def test_paused_stream_and_waiting_call_dead_server() -> None:
    """Stream paused unread; then a plain call waits on a silent server: the call must
    fail with ConnectionLostError in bounded time, not hang."""
    n = 0.2

    async def main() -> None:
        sc = Streamer()
        async with (
            raw_server(sc, answer_pings=False) as s,
            AsyncRPC(s.url, heart_beat=n, stream_buffer_size=64 * 1024) as rpc,
        ):
            stream = await rpc.gen(0, 400, "silent")
            await asyncio.sleep(3 * n)
            t0 = time.monotonic()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(rpc.add(1, 2), 10)
            assert time.monotonic() - t0 < 3 * n + 1.0
            del stream

    run(main())


def test_reconnect_after_heartbeat_death_heartbeat_works_again() -> None:
    n = 0.15

    async def main() -> None:
        sc = Streamer()
        sc.silent = True
        async with raw_server(sc, answer_pings=False) as s:
            rpc = AsyncRPC(s.url, heart_beat=n)
            await rpc.connect()
            try:
                with pytest.raises(ConnectionLostError):
                    await rpc.add(1, 2)
                # the next connection answers pings: idle 5 N is fine
                sc.silent = False
                s.answer_pings = True
                await rpc.reconnect()
                await asyncio.sleep(5 * n)
                assert await rpc.add(2, 3) == 5
                assert s.pings >= 2
                # and it goes silent again with a call in flight: found again
                sc.silent = True
                s.answer_pings = False
                with pytest.raises(ConnectionLostError, match="heartbeat"):
                    await asyncio.wait_for(rpc.add(1, 1), 5)
                await rpc.reconnect()
                # silent while idle (nothing in flight): found dead, and the next call
                # connects again by itself (docs: nothing was in flight)
                await asyncio.sleep(4 * n)
                assert not rpc.connected
                sc.silent = False
                s.answer_pings = True
                assert await asyncio.wait_for(rpc.add(4, 4), 5) == 8
                await asyncio.sleep(4 * n)
                assert await rpc.add(1, 4) == 5
            finally:
                await rpc.close()

    run(main())


def test_blocking_client_silent_mid_stream() -> None:
    n = 0.2

    async def main() -> None:
        async with raw_server(Streamer(), answer_pings=False) as s:

            def blocking() -> float:
                with RPC(s.url, heart_beat=n) as rpc:
                    got = []
                    t = time.monotonic()
                    with pytest.raises(ConnectionLostError):
                        for x in rpc.gen(0.01, 5, "silent"):
                            got.append(x)
                            t = time.monotonic()
                    assert got == list(range(5))
                    return time.monotonic() - t

            took = await asyncio.to_thread(blocking)
            assert took < 3 * n + 0.5, took

    run(main())


def test_blocking_client_stream_without_pongs_alive() -> None:
    n = 0.2

    async def main() -> None:
        async with raw_server(Streamer(), answer_pings=False) as s:

            def blocking() -> list[Any]:
                with RPC(s.url, heart_beat=n) as rpc:
                    return list(rpc.gen(n / 4, 30, "end"))

            assert await asyncio.to_thread(blocking) == list(range(30))

    run(main())


def _real_server() -> tuple[Server, threading.Thread, Any, threading.Event]:
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def gen(n: int) -> AsyncIterator[Any]:
        for i in range(n):
            yield [i, "q" * 100]
            if i % 50 == 0:
                await asyncio.sleep(0)

    @server.register_function(executor="inline")
    def add(a: int, b: int) -> int:
        return a + b

    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            holder["loop"] = asyncio.get_running_loop()
            await server.start()
            ready.set()
            await server.serve_forever()

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    return server, t, holder, ready


@pytest.fixture
def process_server() -> Any:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("heartbeat_server.py"))],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def _load(
    url: str,
    tolerate_deaths: bool,
    beats: tuple[float, float] = (0.01, 0.05),
    idle: float = 0.3,
) -> list[Any]:
    clients = [AsyncRPC(url, heart_beat=beats[k % 2]) for k in range(20)]
    for c in clients:
        await c.connect()
    deaths: list[Any] = []

    async def work(k: int, c: AsyncRPC) -> None:
        end_at = time.monotonic() + 2
        while time.monotonic() < end_at:
            try:
                if k % 3 == 0:
                    got = [x async for x in await c.gen(300)]
                    assert [g[0] for g in got] == list(range(300))
                else:
                    assert await c.add(k, 1) == k + 1
                    await asyncio.sleep(0.03)
            except ConnectionLostError as exc:
                if not tolerate_deaths:
                    raise
                assert "heartbeat" in str(exc)
                deaths.append(k)
                await c.reconnect()

    try:
        await asyncio.gather(*(work(k, c) for k, c in enumerate(clients)))
        await asyncio.sleep(idle)  # idle: pings and pongs only
        for k, c in enumerate(clients):
            if tolerate_deaths and not c.connected:
                await c.reconnect()
            assert await c.add(k, k) == 2 * k
    finally:
        for c in clients:
            await c.close()
    return deaths


def test_many_clients_heartbeat_under_load(process_server: str) -> None:
    """20 clients with heart_beat=0.3 / 0.6 on one real server (its own process),
    streaming and calling for ~2 s, then idle long enough for pings: no false 'dead'
    connection (intervals a loaded CI machine's stalls stay well under)."""
    assert run(_load(process_server, tolerate_deaths=False, beats=(0.3, 0.6), idle=1.5)) == []


def test_many_clients_tiny_heartbeat_under_load(process_server: str) -> None:
    """The same with heart_beat=0.01 / 0.05: on a busy 2-core machine a pong can take
    more than 10 ms (observed: about one run in three declares a connection dead, as
    the documented rule says). Each death is a clean ConnectionLostError naming the
    heartbeat, and reconnect() brings the client back."""
    run(_load(process_server, tolerate_deaths=True))


def test_tiny_heartbeat_server_in_same_process_recovers() -> None:
    """The same with the server in a thread of this process: its pongs can wait more
    than 10 ms for the GIL, so a death is as documented (nothing within N); each such
    death must be a clean ConnectionLostError and reconnect() must work."""
    server, thread, _holder, _ = _real_server()
    try:
        run(_load(server_url(server), tolerate_deaths=True))
    finally:
        server.stop()
        thread.join(10)


def test_blocking_client_paused_consumer_then_dead_server() -> None:
    """RPC: a burst far above stream_buffer_size, then silence (no pongs, no FIN). The
    consumer reads one item and stops for 5 N: not dead; then reads on: every item,
    then ConnectionLostError in bounded time."""
    n = 0.2
    count = 400

    async def main() -> None:
        async with raw_server(Streamer(), answer_pings=False) as s:

            def blocking() -> tuple[list[Any], float, bool]:
                with RPC(s.url, heart_beat=n, stream_buffer_size=64 * 1024) as rpc:
                    it = iter(rpc.gen(0, count, "silent"))
                    got = [next(it)]
                    time.sleep(5 * n)
                    alive = rpc.connected
                    t_last = time.monotonic()
                    with pytest.raises(ConnectionLostError):
                        for x in it:
                            got.append(x)
                            t_last = time.monotonic()
                    return got, time.monotonic() - t_last, alive

            got, took, alive = await asyncio.to_thread(blocking)
            assert alive
            assert [g[0] for g in got] == list(range(count))
            assert took < 3 * n + 1.0, took

    run(main())


def test_blocking_client_paused_stream_waiting_call_dead_server() -> None:
    n = 0.2

    async def main() -> None:
        async with raw_server(Streamer(), answer_pings=False) as s:

            def blocking() -> float:
                with RPC(s.url, heart_beat=n, stream_buffer_size=64 * 1024) as rpc:
                    stream = rpc.gen(0, 400, "silent")
                    time.sleep(3 * n)
                    t0 = time.monotonic()
                    with pytest.raises(ConnectionLostError):
                        rpc.add(1, 2, timeout=10)
                    del stream
                    return time.monotonic() - t0

            took = await asyncio.to_thread(blocking)
            assert took < 3 * n + 1.0, took

    run(main())


def test_consumer_blocking_its_loop_is_not_declared_dead() -> None:
    """heart_beat=0.05 while the consumer blocks its own loop for 0.2 s (4 N) between
    items of a live server's stream: the delay is the client's, not the server's."""
    server, thread, _holder, _ = _real_server()
    try:
        url = server_url(server)

        async def main() -> None:
            async with AsyncRPC(url, heart_beat=0.05) as rpc:
                got = []
                async for x in await rpc.gen(12):
                    got.append(x[0])
                    time.sleep(0.2)
                assert got == list(range(12))
                time.sleep(0.2)
                await asyncio.sleep(0)
                assert await rpc.add(1, 2) == 3

        run(main())
    finally:
        server.stop()
        thread.join(10)
