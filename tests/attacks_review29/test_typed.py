# ruff: noqa: SIM117  (a client's with-block and a pytest.raises read better apart)
"""Typed services (README "## Typed services with mprpcgen"): what the generated clients
and register_* check, both ways, and the service table."""

from __future__ import annotations

import asyncio
import enum
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from servicers import StubCalculator

from generated_examples.calculator import (
    AsyncCalculatorClient,
    CalculatorClient,
    CalculatorServicer,
    register_calculator,
)
from generated_examples.geometry.types import Color, Point, Shape
from generated_examples.inventory import (
    AsyncInventoryClient,
    Category,
    InventoryClient,
    InventoryServicer,
    Item,
    register_inventory,
)
from pymprpc import Server, errors
from pymprpc.client import RPC
from pymprpc.services import list_services, service_info
from pymprpc.testing import RunningServer, serve_in_thread


class Inventory(InventoryServicer):
    """put keeps nothing; get(sku) returns an item whose category nests int(sku) deep."""

    def put(self, item: Item) -> str:
        return item.sku

    async def get(self, sku: str) -> Item | None:
        return item_nesting(int(sku))

    async def list_items(self, status: Any = None) -> AsyncIterator[Item]:
        yield item_nesting(1)

    async def by_status(self) -> dict[str, list[str]]:
        return {}

    async def clear(self) -> None:
        pass


class WrongCalculator(StubCalculator):
    def add(self, a: int, b: int) -> int:
        return "three"  # type: ignore[return-value]

    async def count(self, n: int) -> AsyncIterator[int]:
        yield 1
        yield "two"  # type: ignore[misc]


def item_nesting(categories: int, **fields: Any) -> Item:
    """An item whose category chain holds `categories` categories: 1 + 2 x `categories`
    MessagePack levels (each category a map holding a list of categories)."""
    category = Category(name="leaf", parent=None)
    for _ in range(categories - 1):
        category = Category(name="n", children=[category], parent=None)
    fields.setdefault("category", category)
    return Item(sku="s", title="t", price=1.0, image=None, **fields)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    server = Server(("127.0.0.1", 0), grace_period=1)
    server.register_introspection_functions()
    register_calculator(server, StubCalculator())
    register_calculator(server, WrongCalculator(), prefix="wrong.")
    register_inventory(server, Inventory())

    @server.register_function("raw.add")
    async def raw_add(a: Any, b: Any) -> Any:
        return str(a + b)

    @server.register_function("raw.count")
    async def raw_count(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield "s" if i == 1 else i

    with serve_in_thread(server) as running:
        yield running


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda c: c.add("1", 2), "add(): a: expected int, got str"),
        (lambda c: c.add(True, 2), "add(): a: expected int, got bool"),
        (lambda c: c.add(1.0, 2), "add(): a: expected int, got float"),
        (lambda c: c.add(2**64, 2), "add(): a: integer out of MessagePack's 64-bit range"),
        (
            lambda c: c.area(Shape(name="s", points=[Point(x=1.0, y="a")])),  # type: ignore[arg-type]
            "area(): shape.points[0].y: expected float, got str",
        ),
        (lambda c: c.area(Shape(name="s", points="")), "shape.points: expected list<Point>"),  # type: ignore[arg-type]
        (lambda c: c.area(Shape(name="s", points=[], color=True)), "shape.color: expected Color"),  # type: ignore[arg-type]
        (lambda c: c.area({"name": "s", "points": []}), "area(): shape: expected Shape"),
        (lambda c: c.log(5), "log(): line: expected str, got int"),
    ],
)
def test_generated_client_checks_arguments_before_sending(
    running: RunningServer, call: Any, words: str
) -> None:
    """README: "A generated client checks its arguments before sending them and raises the
    same `ParamError`" (naming the path); "Nothing is converted to fit: `True` is not an
    enum member, `""` not an empty list, a map not a struct"; "An integer beyond
    MessagePack's 64 bits is refused"."""
    with CalculatorClient(running.url) as client, pytest.raises(errors.ParamError) as error:
        call(client)
    assert words in str(error.value)


def test_server_checks_arguments_of_untyped_callers(running: RunningServer) -> None:
    """README: "A server answers a wrong argument with 402 naming its path"; "a map of
    field name to value (unknown keys ignored)"; "The server fills in a parameter's
    default when a caller leaves it out (an untyped client, say)"."""
    with RPC(running.url) as rpc:
        with pytest.raises(
            errors.ParamError, match=r"area\(\): shape\.points\[0\]\.y: expected float"
        ):
            rpc.area({"name": "s", "points": [{"x": 1.0, "y": "a"}]})
        with pytest.raises(errors.ParamError, match=r"shape\.color: 9 is not a Color"):
            rpc.area({"name": "s", "points": [], "color": 9})
        assert rpc.area({"name": "s", "points": [{"x": 1, "y": 2}], "extra": 1}) == 0.0
        assert rpc.slow_add(1) == 2


def test_subclasses_and_tuples_go_out_as_plain_values(running: RunningServer) -> None:
    """README: "An int is widened to a float ...; a value of a subclass of the declared
    type (an `IntEnum` member for an `int` ...) goes out as the plain value it holds; a
    tuple goes out as a list."""

    class Three(enum.IntEnum):
        THREE = 3

    with CalculatorClient(running.url) as client:
        assert client.add(Three.THREE, 2) == 5
        assert client.area(Shape(name="s", points=(Point(x=1, y=2),), color=Color.RED)) == 0.0  # type: ignore[arg-type]


def test_server_checks_results_and_stream_items(running: RunningServer) -> None:
    """README: "A server checks every result and stream item, for every caller: one not of
    the declared type fails the call with 404, `EXCEPTION` `ValidationError`, naming the
    method"."""
    with CalculatorClient(running.url, prefix="wrong.") as client:
        with pytest.raises(
            errors.RPCRuntimeError, match=r"add\(\): expected int, got str"
        ) as error:
            client.add(1, 2)
        assert error.value.code == 404 and error.value.exception == "ValidationError"
        with pytest.raises(errors.RPCRuntimeError, match=r"count\(\)\[1\]: expected int"):
            list(client.count(2))


def test_client_checks_results_of_a_server_that_did_not(running: RunningServer) -> None:
    """README: "A generated client raises `ValidationError` for a result that does not
    match from a server that did not check." (a stream's items too)"""
    with CalculatorClient(running.url, prefix="raw.") as client:
        with pytest.raises(errors.ValidationError, match=r"add\(\): expected int, got str"):
            client.add(1, 2)
        with pytest.raises(errors.ValidationError, match=r"count\(\)\[1\]: expected int"):
            list(client.count(3))


def test_async_client_raises_a_bad_argument_when_the_call_runs(running: RunningServer) -> None:
    """README: "An async client's other methods return the call's coroutine ... and a bad
    argument is raised when it runs." A stream: "no `await`: the call starts when
    iteration does"."""

    async def main() -> None:
        async with AsyncCalculatorClient(running.url) as client:
            call = client.add("x", 1)  # type: ignore[arg-type]
            with pytest.raises(errors.ParamError, match="add"):
                await call
            assert await asyncio.gather(client.add(1, 2), client.slow_add(2)) == [3, 3]
            assert [x async for x in client.count(4)] == [4]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_with_options_sets_a_deadline_for_some_calls(running: RunningServer) -> None:
    """README: "`client.with_options(timeout=2).add(1, 2)` sets a deadline for some calls
    only"."""
    with CalculatorClient(running.url) as client:
        assert client.with_options(timeout=2).add(1, 2) == 3
        with pytest.raises(errors.DeadlineExceeded):
            client.with_options(timeout=0).add(1, 2)
        assert client.add(2, 2) == 4


def test_service_table(running: RunningServer) -> None:
    """README: "`pymprpc.services.service_info(client)` gives a generated client's own entry
    under its prefix (`None` if not served there ...) and `list_services(client)` every
    entry"; docs/protocol.md: "sorted by name then prefix"."""
    with CalculatorClient(running.url, prefix="wrong.") as client:
        info = service_info(client)
        assert info is not None and info.version == client.VERSION == "1.2.0"
        assert info.prefix == "wrong." and "add" in info.methods
        entries = [(s.name, s.prefix) for s in list_services(client)]
        assert entries == sorted(entries)
        assert ("Calculator", "") in entries and ("Inventory", "") in entries
    with CalculatorClient(running.url, prefix="nowhere.") as client:
        assert service_info(client) is None


def test_service_table_without_introspection_is_406() -> None:
    """README: "`system.listServices()` ... a server without it answers 406"."""
    server = Server(("127.0.0.1", 0), grace_period=1)
    register_calculator(server, StubCalculator())
    with serve_in_thread(server) as running, CalculatorClient(running.url) as client:
        with pytest.raises(errors.UnsupportSysMethodError):
            service_info(client)
        assert client.add(1, 2) == 3


def test_register_refuses_misnamed_parameters_and_registers_nothing() -> None:
    """README: "`register_x` refuses (`TypeError`, naming the method; nothing registered) a
    servicer method whose parameters are named otherwise or positional-only."""

    class Misnamed(StubCalculator):
        def area(self, polygon: Shape) -> float:  # type: ignore[override]
            return 0.0

    class PositionalOnly(StubCalculator):
        def add(self, a: int, b: int, /) -> int:
            return a + b

    for servicer in (Misnamed(), PositionalOnly()):
        server = Server(("127.0.0.1", 0))
        with pytest.raises(TypeError, match=r"area|add"):
            register_calculator(server, servicer)
        assert server.services == [] or len(server.services) == 0
        with serve_in_thread(server) as running, RPC(running.url) as rpc:
            with pytest.raises(errors.NotFindError):
                rpc.add(1, 2)


def test_versions_and_all() -> None:
    """README: "`service X version "1.2.0"` becomes `XServicer.VERSION` and
    `XClient.VERSION`"; "The package's `__all__` holds the user-facing names"."""
    import generated_examples.calculator as package

    assert CalculatorServicer.VERSION == CalculatorClient.VERSION == "1.2.0"
    assert {"CalculatorClient", "AsyncCalculatorClient", "CalculatorServicer"} <= set(
        package.__all__
    )
    assert "register_calculator" in package.__all__


def test_importing_a_client_does_not_import_the_server_side() -> None:
    """README: "importing a client does not import the server side (it loads on first
    use)"."""
    code = (
        "import sys\n"
        "from generated_examples.calculator import CalculatorClient\n"
        "assert 'generated_examples.calculator.server' not in sys.modules, 'server loaded'\n"
        "from generated_examples.calculator import register_calculator\n"
        "assert 'generated_examples.calculator.server' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


def test_struct_nesting_within_messagepack_travels(running: RunningServer) -> None:
    """README: "Values nest through self-referential structs as deep as MessagePack carries
    (1,022 levels below a call's arguments or result)": 510 categories are 1,021 levels."""
    with InventoryClient(running.url) as client:
        assert client.put(item_nesting(510)) == "s"
        got = client.get("510")
        assert got is not None and got.category is not None


def test_struct_nested_deeper_than_messagepack_is_a_param_error(running: RunningServer) -> None:
    """README: "Values nest through self-referential structs as deep as MessagePack carries
    ...; deeper is refused as `nested deeper than MessagePack carries`." docs/protocol.md:
    a value nesting too deep "is never sent: ... a generated client [refuses the call] with
    the `ParamError` a value of the wrong type gets, naming the method and the parameter".
    511 categories are 1,023 levels."""
    with InventoryClient(running.url) as client:
        with pytest.raises(
            errors.ParamError, match=r"put\(\): item.*nested deeper than MessagePack"
        ):
            client.put(item_nesting(511))


def test_any_value_containing_itself_is_a_param_error(running: RunningServer) -> None:
    """docs/protocol.md: "A value that cannot be encoded (a `set`, ..., nesting too deep or
    containing itself) is never sent: ... a generated client [refuses the call] with the
    `ParamError` a value of the wrong type gets, naming the method and the parameter"
    (a set inside an `any` is: `put(): item['attributes']['k'] is a set`)."""
    loop: list[Any] = []
    loop.append(loop)
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ParamError, match=r"is a set"):
            client.put(item_nesting(1, attributes={"k": {1, 2}}))
        with pytest.raises(errors.ParamError, match=r"put\(\): item"):
            client.put(item_nesting(1, attributes={"k": loop}))


def test_async_client_too_deep_is_a_param_error(running: RunningServer) -> None:
    """As above, for the asyncio client (README: both clients "give the same errors")."""

    async def main() -> None:
        async with AsyncInventoryClient(running.url) as client:
            with pytest.raises(errors.ParamError):
                await client.put(item_nesting(511))

    asyncio.run(asyncio.wait_for(main(), 10))


def test_server_result_too_deep_is_405(running: RunningServer) -> None:
    """docs/protocol.md: "a result or stream item [that cannot be encoded] gets `405`
    ..., naming the method"."""
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ResultLimitError, match=r"get\(\): result not delivered"):
            client.get("511")
