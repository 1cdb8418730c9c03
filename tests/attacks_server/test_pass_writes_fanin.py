"""Hundreds of connections on one server (so fast-lane replies are held to the end of the
loop pass), each sending calls to handlers that answer within the read and handlers that
await, one per write without waiting: every connection gets every reply exactly once, the
within-read ones in the order sent; some connections half-close after their calls, some
vanish mid-way, and the others are not disturbed."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from .fastlane_kit import State, Wire, call, code, mid, result, run_on, serving

pytestmark = pytest.mark.timeout(120)

CONNS = 200
CALLS = 20


async def _client(port: int, n: int, rnd: random.Random) -> None:
    wire = await Wire.open(port)
    kind = n % 4  # 0, 1: plain; 2: half-closes after its calls; 3: vanishes mid-way
    sent: list[tuple[str, str]] = []
    for i in range(CALLS):
        method = rnd.choice(["echo", "echo", "echo_await", "add"])
        id = f"{n}-{i}"
        args = [id] if method != "add" else [i, n]
        wire.write([call(id, method, *args)])
        sent.append((id, method))
        if rnd.random() < 0.3:
            await asyncio.sleep(0)  # spread the calls over loop passes
        if kind == 3 and i == CALLS // 2:
            wire.writer.transport.abort()  # gone with replies owed
            return
    if kind == 2:
        wire.writer.write_eof()
    got: list[Any] = []
    while len(got) < CALLS:
        got.append(await wire.recv())
    assert all(code(m) == 200 for m in got), [m for m in got if code(m) != 200][:3]
    assert sorted(mid(m) for m in got) == sorted(id for id, _ in sent)  # each once
    expected = {id: (id if m != "add" else int(id.split("-")[1]) + n) for id, m in sent}
    assert all(result(m) == expected[mid(m)] for m in got)
    in_read = [id for id, m in sent if m != "echo_await"]
    assert [mid(m) for m in got if mid(m) in set(in_read)] == in_read
    if kind == 2:
        with pytest.raises(asyncio.IncompleteReadError):
            await wire.recv()  # closed once everything owed was sent
    await wire.close()


async def _fan_in() -> None:
    async with serving(State()) as (_server, port):
        rnd = random.Random(11)
        await asyncio.gather(*(_client(port, n, random.Random(rnd.random())) for n in range(CONNS)))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hundreds_of_connections_each_get_every_reply_once_in_order(loop: str) -> None:
    run_on(loop, _fan_in, timeout=100)
