"""Generated servers and clients over real sockets (127.0.0.1, ephemeral port)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated_examples.calculator import (
    AsyncCalculatorClient,
    CalculatorClient,
    CalculatorServicer,
    register_calculator,
)
from generated_examples.geometry import Color, Point, Shape
from generated_examples.inventory import (
    AsyncInventoryClient,
    Category,
    InventoryClient,
    Item,
    Status,
    register_inventory,
)
from helpers import ServerThread
from mprpcgen.demo import Inventory  # filters with `is`: needs real Status members
from pymprpc.client import RPC
from pymprpc.errors import (
    DeadlineExceeded,
    ExpireWarning,
    ParamError,
    RPCRuntimeError,
    ValidationError,
)
from pymprpc.server import Server


class Calculator(CalculatorServicer):
    def __init__(self) -> None:
        self.log_file: Path | None = None  # `log` runs in a worker process: share via a file
        self.lie = False

    def add(self, a: int, b: int) -> int:
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        if a == 999:
            await asyncio.sleep(30)
        if self.lie:
            return "not an int"  # type: ignore[return-value]
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def area(self, shape: Shape) -> float:
        assert isinstance(shape.points[0], Point)
        return float(len(shape.points))

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        assert self.log_file is not None
        with self.log_file.open("a") as f:
            f.write(line + "\n")

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape:
        assert isinstance(shape.color, Color | None)
        points = [Point(x=p.x + dx, y=p.y + dy) for p in shape.points]
        return Shape(name=shape.name, points=points, tags=shape.tags, color=shape.color)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[str, Calculator]]:
    calc = Calculator()
    calc.log_file = tmp_path / "log.txt"
    server = Server(("127.0.0.1", 0))
    server.register_introspection_functions()
    register_calculator(server, calc)
    register_inventory(server, Inventory())
    with ServerThread(server) as thread:
        yield f"tcp://127.0.0.1:{thread.port}", calc


SQUARE = Shape(
    name="sq", points=[Point(x=0, y=0), Point(x=1.5, y=0)], tags={"k": "v"}, color=Color.GREEN
)
ITEM = Item(
    sku="A",
    title="thing",
    price=1,
    image=b"\x00\xff",
    attributes={"any": [1, "x", None]},
    category=Category(name="root", children=[Category(name="leaf", parent="root")]),
)


def test_sync_client(services: tuple[str, Calculator]) -> None:
    addr, calc = services
    with CalculatorClient(addr) as client:
        assert client.add(2, 3) == 5
        assert client.slow_add(2) == 3
        assert list(client.count(3)) == [0, 1, 2]
        assert client.area(SQUARE) == 2.0
        moved = client.translate(SQUARE, dx=1.0)
        assert moved == Shape(
            name="sq",
            points=[Point(x=1, y=0), Point(x=2.5, y=0)],
            tags={"k": "v"},
            color=Color.GREEN,
        )
        assert isinstance(moved.color, Color)
        with pytest.warns(ExpireWarning):
            assert client.old_add(1, 1) == 2
        assert client.log("hello") is None
        assert client.add(0, 0) == 0  # calls are not ordered, but the log is quick
    assert calc.log_file is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if calc.log_file.exists() and calc.log_file.read_text() == "hello\n":
            break
        time.sleep(0.01)
    assert calc.log_file.read_text() == "hello\n"


def test_async_client(services: tuple[str, Calculator]) -> None:
    addr, _ = services

    async def main() -> None:
        async with AsyncCalculatorClient(addr) as client, AsyncInventoryClient(addr) as inv:
            assert await asyncio.gather(*(client.slow_add(i) for i in range(5))) == [1, 2, 3, 4, 5]
            assert [i async for i in client.count(3)] == [0, 1, 2]
            assert (await client.translate(SQUARE)).points == SQUARE.points
            assert await inv.put(ITEM) == "A"
            assert await inv.get("A") == Item(
                sku="A",
                title="thing",
                price=1.0,
                image=b"\x00\xff",
                attributes={"any": [1, "x", None]},
                category=ITEM.category,
            )
            assert await inv.get("B") is None
            assert [i.sku async for i in inv.list_items(Status.IN_STOCK)] == ["A"]
            assert [i.sku async for i in inv.list_items(Status.OUT)] == []
            assert (await inv.by_status())["IN_STOCK"] == ["A"]
            assert await inv.clear() is None

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_wire_name_is_what_untyped_and_old_clients_call(
    services: tuple[str, Calculator],
) -> None:
    addr, _ = services
    with InventoryClient(addr) as inv:
        inv.put(ITEM)
    with RPC(addr) as rpc:  # no generated code: the name on the wire is "listItems"
        items = list(rpc.listItems())
        assert [item["sku"] for item in items] == ["A"]
        assert "list_items" not in rpc.system.listMethods()
        assert rpc.system.methodSignature("listItems").startswith("listItems(status:")


def test_state_of_a_thread_executor_method_is_shared(services: tuple[str, Calculator]) -> None:
    addr, _ = services
    with InventoryClient(addr) as inv:
        inv.put(ITEM)  # @executor(thread): runs in the server process
        assert inv.get("A") is not None


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "message"),
    [
        ("add", [1, "2"], {}, "add(): b: expected int, got str"),
        ("add", [1, True], {}, "add(): b: expected int, got bool"),
        ("add", [1], {}, "add(): b: missing required argument"),
        ("add", [1, 2], {"c": 3}, "add(): c: unexpected argument"),
        ("add", [1, 2, 3], {}, "add(): arguments: takes 2 argument(s), got 3"),
        (
            "area",
            [{"name": "s", "points": [{"x": 1, "y": 2}, {"x": 1, "y": 2}, {"x": "3", "y": 1}]}],
            {},
            "area(): shape.points[2].x: expected float, got str",
        ),
        ("area", [{"name": "s"}], {}, "area(): shape.points: missing required field"),
        (
            "translate",
            [{"name": "s", "points": [], "color": 7}],
            {},
            "translate(): shape.color: 7 is not a Color (one of RED=1, GREEN=2, BLUE=3)",
        ),
        (
            "translate",
            [{"name": "s", "points": [], "tags": {"a": 1}}],
            {},
            "translate(): shape.tags['a']: expected str, got int",
        ),
    ],
)
def test_wrong_arguments_get_402_with_the_path(
    services: tuple[str, Calculator],
    method: str,
    args: list[Any],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    addr, _ = services
    with RPC(addr) as rpc:
        with pytest.raises(ParamError) as info:
            rpc.call(method, *args, **kwargs)
        assert info.value.message == message
        assert rpc.add(a=1, b=2) == 3  # by name works too


def test_a_wrong_result_type_is_refused_by_the_server(services: tuple[str, Calculator]) -> None:
    addr, calc = services
    calc.lie = True
    with CalculatorClient(addr) as client:
        with pytest.raises(RPCRuntimeError, match=r"^ValidationError: slow_add\(\): expected int"):
            client.slow_add(1)
        assert client.add(1, 2) == 3
    with RPC(addr) as rpc, pytest.raises(RPCRuntimeError, match=r"slow_add\(\)"):
        rpc.slow_add(1)  # an untyped caller too


@pytest.fixture
def unchecked() -> Iterator[str]:
    """A server answering the calculator's names without its schemas: wrong result types
    reach the client unchecked."""
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def slow_add(a: int, b: int = 1) -> Any:
        return "not an int"

    @server.register_function()
    async def add(a: int, b: int) -> Any:
        return [a, b]

    with ServerThread(server) as thread:
        yield f"tcp://127.0.0.1:{thread.port}"


def test_a_wrong_result_from_an_unchecking_server_is_caught_by_the_client(
    unchecked: str,
) -> None:
    with CalculatorClient(unchecked) as client:
        with pytest.raises(ValidationError, match=r"^slow_add\(\): expected int, got str"):
            client.slow_add(1)
        with pytest.raises(ValidationError, match=r"^add\(\): expected int, got list"):
            client.add(1, 2)

    async def main() -> None:
        async with AsyncCalculatorClient(unchecked) as client:
            with pytest.raises(ValidationError, match=r"^slow_add\(\): expected int"):
                await client.slow_add(1)  # the client's own call coroutine checks it
            with pytest.raises(ValidationError, match=r"^add\(\): expected int"):
                await client.with_options(timeout=5).add(1, 2)  # the options path too

    asyncio.run(asyncio.wait_for(main(), 20))


def test_introspection_reports_the_idl(services: tuple[str, Calculator]) -> None:
    addr, _ = services
    with RPC(addr) as rpc:
        assert rpc.system.methodSignature("translate") == (
            "translate(shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape"
        )
        assert rpc.system.methodSignature("get") == "get(sku: str) -> Item?"
        assert rpc.system.methodHelp("add") == "Add two integers."
        assert rpc.system.methodHelp("put").startswith("Add or replace an item")


def test_per_call_deadline_on_typed_clients(services: tuple[str, Calculator]) -> None:
    addr, _ = services
    with CalculatorClient(addr) as client:
        quick = client.with_options(timeout=0.2)
        with pytest.raises(DeadlineExceeded):
            quick.slow_add(999)
        assert quick.slow_add(1) == 2  # the view shares the connection
        assert client.add(1, 1) == 2

    async def main() -> None:
        async with AsyncCalculatorClient(addr, timeout=0.2) as client:
            with pytest.raises(DeadlineExceeded):
                await client.slow_add(999)
            assert await client.with_options(timeout=None).slow_add(2) == 3

    asyncio.run(asyncio.wait_for(main(), 20))


def test_typed_clients_warn_at_the_callers_line(services: tuple[str, Calculator]) -> None:
    import sys
    import warnings

    addr, _ = services
    lines: list[int] = []

    async def async_call() -> None:
        async with AsyncCalculatorClient(addr) as client:
            lines.append(sys._getframe().f_lineno + 1)
            await client.old_add(1, 1)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with CalculatorClient(addr) as client:
            lines.append(sys._getframe().f_lineno + 1)
            client.old_add(1, 1)
        asyncio.run(asyncio.wait_for(async_call(), 20))
    found = [(w.filename, w.lineno) for w in seen if issubclass(w.category, ExpireWarning)]
    assert found == [(__file__, n) for n in lines]


def test_an_async_typed_call_is_the_clients_own_coroutine(
    services: tuple[str, Calculator],
) -> None:
    """A generated async method adds no coroutine of its own: it returns the client's
    call coroutine, which encodes the arguments and checks the result. It still behaves
    as an `async def`: awaited, as a task, gathered, errors raised when it runs."""
    from pymprpc.client import AsyncRPC

    addr, calc = services

    async def main() -> None:
        async with AsyncCalculatorClient(addr) as client:
            call = client.slow_add(1, 2)
            assert call.cr_code is AsyncRPC._call.__code__
            assert await call == 3
            assert await asyncio.create_task(client.add(2, 3)) == 5
            assert await asyncio.gather(client.slow_add(1), client.add(1, 1)) == [2, 2]
            late = client.add(2**70, 1)  # out of range: raised when it runs, not here
            with pytest.raises(ParamError, match=r"^add\(\): a: integer out of .* range"):
                await late
            with pytest.raises(ParamError, match=r"^add\(\): b: expected int, got bool"):
                await client.add(1, True)  # refused before it is sent
            view = client.with_options(timeout=5)
            assert await view.slow_add(4) == 5
            calc.lie = True  # the server refuses its own wrong result (404)
            with pytest.raises(RPCRuntimeError, match=r"^ValidationError: slow_add\(\)"):
                await client.slow_add(1)
            with pytest.raises(RPCRuntimeError, match=r"^ValidationError: slow_add\(\)"):
                await view.slow_add(1)

    asyncio.run(asyncio.wait_for(main(), 20))


any_value = st.one_of(
    st.integers(-(2**65), 2**65), st.booleans(), st.none(), st.text(max_size=3), st.floats()
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.sampled_from(["add", "slow_add"]), any_value, any_value), max_size=8))
def test_an_async_typed_call_gives_what_the_options_path_gives(
    services: tuple[str, Calculator], calls: list[tuple[str, Any, Any]]
) -> None:
    """The direct call (`_typed_call` is the client's own `_call`), the path with options
    (a method proxy, `_checked_call`) and code generated before `_typed_call` (calling
    `_call_typed`) agree on values and errors, whatever the arguments."""
    addr, _ = services

    async def outcome(call: Any) -> Any:
        try:
            return await call
        except Exception as exc:  # noqa: BLE001 - compared as type and text
            return (type(exc).__name__, str(exc))

    async def main() -> None:
        async with AsyncCalculatorClient(addr) as client:
            view = client.with_options(metadata={"k": "v"})  # options: the general path
            assert client._typed_call == client.rpc._call
            assert view._typed_call == view._checked_call
            for name, a, b in calls:
                sig = getattr(client._methods, name)
                direct = await outcome(getattr(client, name)(a, b))
                general = await outcome(getattr(view, name)(a, b))
                old = await outcome(client._call_typed(name, sig, (a, b)))
                assert direct == general == old

    asyncio.run(asyncio.wait_for(main(), 30))
