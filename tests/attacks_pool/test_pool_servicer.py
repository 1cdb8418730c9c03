"""A generated servicer (mprpcgen's calculator example) whose plain `def` methods run on
the process pool (`Server(executor="process")`, and `@executor(process)` for `area`):
typed bound methods, a deprecated one, a void one, under a prefix or not. Every call
answers alike with and without a pass-through interceptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from attacks_server.fastlane_kit import Wire, call, passthrough, run_on

from generated_examples.calculator.server import CalculatorServicer, register_calculator
from pymprpc.server import Server

from .pool_kit import by_id, diff

pytestmark = pytest.mark.timeout(120)


class Calculator(CalculatorServicer):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, a: int, b: int) -> int:
        if a == 13:
            return "thirteen"  # type: ignore[return-value]  # a wrong type: refused
        if a == 14:
            os._exit(1)
        if a == 15:
            return 2**64  # type: ignore[no-any-return]
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        await asyncio.sleep(0)
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def area(self, shape: Any) -> float:
        pts = shape.points
        s = sum(p.x * q.y - q.x * p.y for p, q in zip(pts, pts[1:] + pts[:1], strict=True))
        return abs(s) / 2

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        self.lines.append(line)
        if line == "raise":
            raise ValueError("bad line")

    async def translate(self, shape: Any, dx: float = 0.0, dy: float = 0.0) -> Any:
        return shape


SQUARE = {
    "name": "sq",
    "points": [{"x": 0.0, "y": 0.0}, {"x": 2.0, "y": 0.0}, {"x": 2.0, "y": 2.0}, {"x": 0, "y": 2}],
}


def calls(prefix: str, pool: bool) -> list[Any]:
    p = prefix
    die = [call("d1", f"{p}add", 14, 0)] if pool else []  # os._exit: only in a worker
    return [
        call("a1", f"{p}add", 1, 2),
        call("a2", f"{p}add", 1),
        call("a3", f"{p}add", "1", 2),
        call("a4", f"{p}add", 2**63, 2**63 - 1),
        call("a5", f"{p}add", 13, 0),
        call("a6", f"{p}add", 15, 0),
        call("a7", f"{p}add", 1, KWARGS={"b": 2}),
        call("a8", f"{p}add", True, 1),
        call("s1", f"{p}slow_add", 1),
        call("o1", f"{p}old_add", 1, 2),
        call("l1", f"{p}log", "hello"),
        call("l2", f"{p}log", "raise"),
        call("l3", f"{p}log", 5),
        call("ar1", f"{p}area", SQUARE),
        call("ar2", f"{p}area", {"name": "x"}),
        *die,
        call("d2", f"{p}add", 40, 2),
    ]


async def run(general: bool, prefix: str, default: str | None) -> dict[str, Any]:
    server = Server(
        ("127.0.0.1", 0),
        max_workers=2,
        executor=default,
        interceptors=[passthrough] if general else [],
        grace_period=1,
    )
    register_calculator(server, Calculator(), prefix=prefix)
    await server.start()
    try:
        w = await Wire.open(server.address[1])
        replies = []
        pool = default == "process"
        for m in calls(prefix, pool):
            replies += await w.roundtrip([m])
        replies += await w.roundtrip(calls(prefix, pool))  # pipelined
        await w.close()
    finally:
        with contextlib.suppress(Exception):
            await server.close()
    half = len(calls(prefix, default == "process"))
    first, second = by_id(replies[:half]), by_id(replies[half:])
    return {**first, **{f"p-{k}": v for k, v in second.items()}}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("prefix", ["", "calc."])
@pytest.mark.parametrize("default", [None, "process"])
def test_a_generated_servicer_on_the_pool_answers_alike(
    loop: str, prefix: str, default: str | None
) -> None:
    async def main() -> tuple[Any, Any]:
        return await run(False, prefix, default), await run(True, prefix, default)

    fast, general = run_on(loop, main, timeout=100)
    assert diff(fast, general) == {}
    codes = {k: v[0] for k, v in fast.items() if not k.startswith("p-")}
    assert codes == {
        "a1": 200,
        "a2": 402,
        "a3": 402,
        "a4": 200,
        "a5": 404,
        "a6": 404,
        "a7": 200,
        "a8": 402,
        "s1": 200,
        "o1": 300,
        "l1": 200,
        "l2": 404,
        "l3": 402,
        "ar1": 200,
        "ar2": 402,
        "d2": 200,
        **({"d1": 404} if default == "process" else {}),
    }
