"""A generated (mprpcgen) service: the server checks arguments against the IDL types
(402 naming the path) before the servicer runs; the typed clients round-trip structs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from generated_examples.calculator.client import AsyncCalculatorClient, CalculatorClient
from generated_examples.geometry.types import Color, Point, Shape
from pymprpc import errors
from pymprpc.testing import RunningServer

from . import typed_app
from .conftest import FRAMINGS
from .wire import Wire, new_id, ok

pytestmark = pytest.mark.timeout(60)

SQUARE = {
    "name": "sq",
    "points": [{"x": 0.0, "y": 0.0}, {"x": 2.0, "y": 0.0}, {"x": 2.0, "y": 2.0}, {"x": 0, "y": 2}],
}


@pytest.fixture(scope="module")
def typed() -> Iterator[tuple[RunningServer, typed_app.Calculator]]:
    running, servicer = typed_app.serve()
    yield running, servicer
    running.stop()


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_typed_calls_on_the_wire(typed: Any, framing: str) -> None:
    running, _ = typed
    with Wire(running.server.address[1], **FRAMINGS[framing]) as w:
        id = new_id()
        w.send(w.request("area", SQUARE, id=id))
        assert w.recv() == ok(id, 4.0)
        id = new_id()
        w.send(w.request("slow_add", 2, id=id))
        assert w.recv() == ok(id, 3)
        reply = w.call("translate", SQUARE, 1.0)["MESSAGE"]["RESULT"]
        assert reply["points"][1] == {"x": 3.0, "y": 0.0} and reply["name"] == "sq"


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        (
            "area",
            [{**SQUARE, "points": [*SQUARE["points"][:2], {"x": "2", "y": 2.0}]}],
            "area(): shape.points[2].x: expected float, got str",
        ),
        ("add", [True, 1], None),
        ("add", [1.5, 1], None),
        ("add", [1], None),
        ("area", [{"points": []}], None),
    ],
    ids=["struct-path", "bool-for-int", "float-for-int", "missing", "missing-field"],
)
def test_typed_arguments_refused_with_402(
    typed: Any, method: str, args: list[Any], message: str | None
) -> None:
    running, _ = typed
    with Wire(running.server.address[1], **FRAMINGS["length"]) as w:
        reply = w.call(method, *args)
        assert reply["CODE"] == 402 and reply["MESSAGE"]["EXCEPTION"] == "ParamError", reply
        if message is not None:
            assert reply["MESSAGE"]["MESSAGE"] == message


def test_typed_blocking_client(typed: Any) -> None:
    running, _ = typed
    shape = Shape(
        name="t", points=[Point(x=0, y=0), Point(x=1, y=0), Point(x=0, y=1)], color=Color.RED
    )
    with CalculatorClient(running.url) as calc:
        assert calc.add(1, 2) == 3 and calc.slow_add(4) == 5
        assert list(calc.count(3)) == [0, 1, 2]
        assert calc.area(shape) == 0.5
        moved = calc.translate(shape, dx=1.0)
        assert (
            isinstance(moved, Shape)
            and moved.points[0] == Point(x=1.0, y=0.0)
            and moved.color is Color.RED
        )
        with pytest.warns(errors.ExpireWarning):
            assert calc.old_add(1, 1) == 2
        assert calc.log("a line") is None  # oneway: nothing comes back
    with pytest.raises(errors.ParamError), CalculatorClient(running.url) as calc:
        calc.rpc.call("add", "x", 1)


def test_typed_async_client(typed: Any) -> None:
    running, _ = typed

    async def main() -> list[Any]:
        async with AsyncCalculatorClient(running.url) as calc:
            items = [i async for i in calc.count(4)]
            sums = await asyncio.gather(*(calc.add(i, i) for i in range(50)))
            return [items, sums]

    items, sums = asyncio.run(asyncio.wait_for(main(), 30))
    assert items == [0, 1, 2, 3] and sums == [2 * i for i in range(50)]
