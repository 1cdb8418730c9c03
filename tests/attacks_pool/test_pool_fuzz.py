"""Seeded random batches of calls (methods, argument shapes and counts, KWARGS or not,
36-character IDs or short ones, one per write or pipelined) sent to a server without
interceptors and to one with a pass-through interceptor: every reply must be the same."""

from __future__ import annotations

import random
from typing import Any

import pytest
from attacks_server.fastlane_kit import Wire, call, run_on

from .pool_kit import by_id, diff, serving

pytestmark = pytest.mark.timeout(120)

METHODS = [
    "add",
    "star",
    "head_star",
    "kwonly",
    "kwonly_required",
    "posonly",
    "varkw",
    "noargs",
    "deco_logged",
    "deco_unit",
    "deco_stacked",
    "deco_fixed",
    "typed_add",
    "typed_len",
    "typed_wrong",
    "p_add",
    "t_add",
    "i_add",
    "a_add",
    "bump",
    "p_bump",
    "c_decorated",
    "p_decorated",
    "cobj",
    "cobj_p",
    "acobj",
    "part_p",
    "bm_p",
    "old_add",
    "arg_info",
    "returns_none",
    "set_meta",
    "raises",
    "nope",
]
KWARG_NAMES = ["a", "b", "k", "x", "y", "unit", "by", "s", "z"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 2 else 8)
    if kind == 0:
        return rng.randint(-5, 5)
    if kind == 1:
        return rng.choice([0, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    if kind == 2:
        return rng.choice(["", "x", "abc", "é", "value"])
    if kind == 3:
        return rng.choice([b"", b"ab", b"q" * 70_000])
    if kind == 4:
        return rng.choice([0.5, -1.0, 1e300])
    if kind == 5:
        return rng.choice([True, False, None])
    if kind == 6:
        return rng.choice(["value", "boom", "exit", "interrupt", "timeout", "key"])
    if kind == 7:
        return rng.randint(0, 3)
    if kind in (8, 9):
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["a", "b", "c"]): value(rng, depth + 1) for _ in range(rng.randrange(3))}


def batch(rng: random.Random, b: int, pad: bool) -> list[dict[str, Any]]:
    msgs = []
    for i in range(rng.randrange(1, 12)):
        cid = f"{b}.{i}"
        name = rng.choice(METHODS)
        args = [value(rng) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
        extra: dict[str, Any] = {}
        if rng.random() < 0.15:
            extra["KWARGS"] = {
                rng.choice(KWARG_NAMES): value(rng) for _ in range(rng.randrange(1, 3))
            }
        msgs.append(call(cid.rjust(36, "-") if pad else cid, name, *args, **extra))
    return msgs


async def run(general: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    replies: list[Any] = []
    async with serving(general) as (_s, port):
        w = await Wire.open(port)
        for b in range(25):
            pad = rng.random() < 0.5
            msgs = batch(rng, b, pad)
            if rng.random() < 0.5:
                replies += await w.roundtrip(msgs)
            else:
                for m in msgs:
                    replies += await w.roundtrip([m])
        await w.close()
    return by_id(replies)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_random_batches_answer_alike(loop: str, seed: int) -> None:
    async def main() -> tuple[Any, Any]:
        return await run(False, seed), await run(True, seed)

    fast, general = run_on(loop, main, timeout=110)
    assert len(fast) == len(general) > 50
    assert diff(fast, general) == {}
