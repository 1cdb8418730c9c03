"""Bounded soak: good clients doing mixed calls and streams while others send garbage and
vanish. Every valid call gets its correct answer and nothing leaks.

PYMPRPC_SOAK_SECONDS sets the duration (default 15 s; CI keeps it well under a minute).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable

import pytest
from service import PASSWORD, USER, url

from helpers import ServerThread, pack, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.protocol import SEPARATOR

DURATION = float(os.environ.get("PYMPRPC_SOAK_SECONDS", "15"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def good_client(address: str, seed: int, stop_at: float) -> int:
    rng = random.Random(seed)
    done = 0
    while time.monotonic() < stop_at:
        async with AsyncRPC(address, compreser=rng.choice([None, "zlib"])) as rpc:
            for _ in range(rng.randint(5, 50)):
                op = rng.random()
                a, b = rng.randint(-1000, 1000), rng.randint(-1000, 1000)
                if op < 0.4:
                    results = await asyncio.gather(*(rpc.coro_add(a, i) for i in range(8)))
                    assert results == [a + i for i in range(8)]
                elif op < 0.6:
                    assert await rpc.add(a, b) == a + b
                elif op < 0.8:
                    n = rng.randint(0, 30)
                    assert [i async for i in await rpc.count(n)] == list(range(n))
                elif op < 0.9:
                    stream = await rpc.endless()
                    async for i in stream:
                        if i >= 3:
                            break
                    await stream.aclose()
                else:
                    blob = rng.randbytes(rng.randint(0, 5000))
                    assert await rpc.echo(blob) == blob
                done += 1
    return done


async def bad_client(port: int, seed: int, stop_at: float) -> None:
    rng = random.Random(seed)
    auth = pack({"MPRPC": "0.1", "AUTH": {"USERNAME": USER, "PASSWORD": PASSWORD}}) + SEPARATOR
    while time.monotonic() < stop_at:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            kind = rng.random()
            if kind < 0.3:
                writer.write(rng.randbytes(rng.randint(1, 300)) + SEPARATOR)
            elif kind < 0.6:
                call = pack({"MPRPC": "0.1", "ID": "x", "METHOD": "endless"}) + SEPARATOR
                writer.write(auth + call)
                await reader.read(rng.randint(1, 500))  # vanish mid-stream
            elif kind < 0.8:
                writer.write(auth[: rng.randint(1, len(auth) - 1)])  # truncated, then gone
            else:
                writer.write(auth + rng.randbytes(rng.randint(1, 100)))
            await writer.drain()
            await asyncio.sleep(rng.random() * 0.05)
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.mark.timeout(DURATION + 90)
def test_soak(serve: Callable[..., ServerThread]) -> None:
    srv = serve(auth_timeout=1.0)
    with RPC(url(srv)) as rpc:
        assert rpc.add(1, 1) == 2  # fork the process pool before measuring
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.connection_count) == 0)
    fds_before = open_fds()
    loop_tasks_before = srv.call_in_loop(lambda: len(asyncio.all_tasks()))

    async def main() -> list[int]:
        stop_at = time.monotonic() + DURATION
        good = [good_client(url(srv), seed, stop_at) for seed in range(4)]
        bad = [bad_client(srv.port, 100 + seed, stop_at) for seed in range(3)]
        results = await asyncio.gather(*good, *bad)
        return [r for r in results if isinstance(r, int)]

    counts = asyncio.run(asyncio.wait_for(main(), DURATION + 60))
    assert all(c > 0 for c in counts), counts

    end = time.monotonic() + 15
    while time.monotonic() < end:
        state = srv.call_in_loop(
            lambda: (
                srv.server.connection_count,
                srv.server.running_call_count,
                len(asyncio.all_tasks()),
            )
        )
        if state == (0, 0, loop_tasks_before) and open_fds() <= fds_before:
            break
        time.sleep(0.05)
    assert state == (0, 0, loop_tasks_before), state
    assert open_fds() <= fds_before
