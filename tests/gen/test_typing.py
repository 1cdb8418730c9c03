"""mypy --strict accepts correct uses of generated code and rejects wrong ones."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
from collections.abc import AsyncIterator

from generated_examples.calculator import (
    AsyncCalculatorClient,
    CalculatorClient,
    CalculatorServicer,
)
from generated_examples.geometry import Color, Point, Shape


class Impl(CalculatorServicer):
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


def use(client: CalculatorClient) -> None:
    total: int = client.add(1, 2)
    items: list[int] = list(client.count(3))
    moved: Shape = client.translate(Shape(name="s", points=[Point(x=1, y=2)], color=Color.RED))
    reveal_type(client.area)


async def use_async(client: AsyncCalculatorClient) -> None:
    total: int = await client.add(1, 2)
    async for i in client.count(3):
        reveal_type(i)
    Impl()
"""

BAD = """
from collections.abc import AsyncIterator

from generated_examples.calculator import CalculatorClient, CalculatorServicer
from generated_examples.geometry import Point, Shape


class WrongSignature(CalculatorServicer):
    def add(self, a: str, b: int) -> int:  # line 9: parameter type differs
        return 0


def use(client: CalculatorClient) -> None:
    client.add("1", 2)  # line 14: str is not int
    text: str = client.add(1, 2)  # line 15: int is not str
    Point(x=1.0)  # line 16: missing y
    client.area(Point(x=1, y=2))  # line 17: Point is not Shape
    client.nope()  # line 18: no such method
"""


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    target = tmp_path / "use_generated.py"
    target.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.timeout(300)
def test_mypy_accepts_correct_use(tmp_path: Path) -> None:
    done = mypy(tmp_path, GOOD)
    notes = done.stdout
    assert "error" not in notes.replace("error_", ""), notes
    assert re.search(r'Revealed type is "def \(shape: [\w.]*Shape\) -> (builtins\.)?float"', notes)
    assert re.search(r'Revealed type is "(builtins\.)?int"', notes), notes


@pytest.mark.timeout(300)
def test_mypy_rejects_wrong_use(tmp_path: Path) -> None:
    done = mypy(tmp_path, BAD)
    lines = {int(m) for m in re.findall(r"use_generated\.py:(\d+): error", done.stdout)}
    assert lines == {9, 14, 15, 16, 17, 18}, done.stdout
