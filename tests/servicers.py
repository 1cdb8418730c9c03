"""Servicers of the example services (generated_examples/) shared by tests that need one
served but do not test what its methods compute."""

from __future__ import annotations

from collections.abc import AsyncIterator

from generated_examples.calculator.server import CalculatorServicer
from generated_examples.geometry.types import Shape


class StubCalculator(CalculatorServicer):
    """Every method of calculator.idl, as simply as its types allow: `add` and `old_add`
    add (a plain method: the thread pool), `slow_add` adds on the event loop, `count(n)`
    yields `n`, `area` is 0.0, `log` does nothing and `translate` returns the shape as is.
    Subclass it to change one method."""

    def add(self, a: int, b: int) -> int:
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        yield n

    def area(self, shape: Shape) -> float:
        return 0.0

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        pass

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape:
        return shape
