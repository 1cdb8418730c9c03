"""The README's Calculator service (generated_examples/calculator), implemented for the
contract tests; module level so the process pool can run `area` however it starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from generated_examples.calculator.server import CalculatorServicer, register_calculator
from generated_examples.geometry.types import Point, Shape
from pymprpc import Server
from pymprpc.testing import RunningServer


class Calculator(CalculatorServicer):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, a: int, b: int) -> int:
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        await asyncio.sleep(0)
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def area(self, shape: Shape) -> float:
        p = shape.points
        twice = sum(
            p[i].x * p[(i + 1) % len(p)].y - p[(i + 1) % len(p)].x * p[i].y for i in range(len(p))
        )
        return abs(twice) / 2

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        self.lines.append(line)

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape:
        moved = [Point(x=p.x + dx, y=p.y + dy) for p in shape.points]
        return Shape(name=shape.name, points=moved, tags=shape.tags, color=shape.color)


def serve() -> tuple[RunningServer, Calculator]:
    server = Server(("127.0.0.1", 0), max_workers=1)
    servicer = Calculator()
    register_calculator(server, servicer)
    running = RunningServer(server)
    running.start()
    return running, servicer
