"""A connection whose client stops reading hits max_output_buffer while its replies are
held to the end of the loop pass (another connection is open): once it reads again, it
gets every reply once and in order, as it would with one connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .fastlane_kit import State, Wire, call, code, mid, run_on, serving

pytestmark = pytest.mark.timeout(60)

N = 300


async def _flood(held: bool) -> list[Any]:
    async with serving(State(), max_output_buffer=4096) as (_server, port):
        other = await Wire.open(port) if held else None
        wire = await Wire.open(port)
        # One call per write, replies of ~60 KB (far more than the socket buffers), none read.
        for i in range(N):
            wire.write([call(f"c{i}", "echo", "x" * 60_000)])
            if i % 7 == 0:
                await asyncio.sleep(0)
        got = [await wire.recv() for _ in range(N)]
        await wire.close()
        if other is not None:
            await other.close()
        return [(mid(m), code(m)) for m in got]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("held", [False, True])
def test_replies_over_max_output_buffer_arrive_once_in_order(loop: str, held: bool) -> None:
    assert run_on(loop, lambda: _flood(held)) == [(f"c{i}", 200) for i in range(N)]
