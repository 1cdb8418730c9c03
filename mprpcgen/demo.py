"""`python -m mprpcgen.demo` (what `make demo` runs after generating from idl/).

Implements the services of idl/calculator.idl and idl/inventory.idl on top of the code
mprpcgen generated in generated_examples/, serves them on 127.0.0.1 (a free port), then
calls every method with the generated blocking client and the generated asyncio client.
Run it from the repository root, where generated_examples/ is importable.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

from generated_examples.calculator import (
    AsyncCalculatorClient,
    CalculatorClient,
    CalculatorServicer,
    register_calculator,
)
from generated_examples.geometry import Point, Shape
from generated_examples.inventory import (
    AsyncHealthClient,
    AsyncInventoryClient,
    Category,
    HealthClient,
    HealthServicer,
    InventoryClient,
    InventoryServicer,
    Item,
    Status,
    register_health,
    register_inventory,
)
from pymprpc.errors import ParamError
from pymprpc.server import Server
from pymprpc.services import list_services, service_info

log = logging.getLogger("demo")


class Calculator(CalculatorServicer):
    def add(self, a: int, b: int) -> int:
        return a + b

    async def slow_add(self, a: int, b: int = 1) -> int:
        await asyncio.sleep(0.01)
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def area(self, shape: Shape) -> float:
        pts = shape.points
        twice = sum(p.x * q.y - q.x * p.y for p, q in zip(pts, pts[1:] + pts[:1], strict=True))
        return abs(twice) / 2

    def old_add(self, a: int, b: int) -> int:
        return a + b

    def log(self, line: str) -> None:
        log.info("client says: %s", line)

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Shape:
        moved = [Point(x=p.x + dx, y=p.y + dy) for p in shape.points]
        return Shape(name=shape.name, points=moved, tags=shape.tags, color=shape.color)


class Inventory(InventoryServicer):
    """State lives in the server process: `put` runs in a thread, not the process pool."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def put(self, item: Item) -> str:
        self.items[item.sku] = item
        return item.sku

    async def get(self, sku: str) -> Item | None:
        return self.items.get(sku)

    async def list_items(self, status: Status | None = None) -> AsyncIterator[Item]:
        for item in list(self.items.values()):
            if status is None or item.status is status:
                yield item

    async def by_status(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for item in self.items.values():
            groups.setdefault(item.status.name, []).append(item.sku)
        return groups

    async def clear(self) -> None:
        self.items.clear()


class Health(HealthServicer):
    def __init__(self) -> None:
        self.started = time.monotonic()

    async def ping(self) -> str:
        return "ok"

    async def uptime(self) -> float:
        return time.monotonic() - self.started


SQUARE = Shape(
    name="square", points=[Point(x=0, y=0), Point(x=2, y=0), Point(x=2, y=2), Point(x=0, y=2)]
)
TOOLS = Category(name="tools", children=[Category(name="hammers", parent="tools")])
HAMMER = Item(
    sku="H-1",
    title="Claw hammer",
    price=12.5,
    quantity=3,
    category=TOOLS,
    image=b"\x89PNG",
    attributes={"weight_g": 450, "colors": ["red", "black"]},
)
NAIL = Item(sku="N-7", title="Nails (100)", price=2.0, status=Status.LOW)


def show(label: str, value: Any) -> None:
    print(f"  {label:<40} -> {value!r}")


def sync_calls(addr: str) -> None:
    print("CalculatorClient / InventoryClient / HealthClient (blocking)")
    with CalculatorClient(addr) as calc, InventoryClient(addr) as inv, HealthClient(addr) as hc:
        show("add(2, 3)", calc.add(2, 3))
        show("slow_add(2)", calc.slow_add(2))
        show("list(count(4))", list(calc.count(4)))
        show("area(square)", calc.area(SQUARE))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            show("old_add(1, 1)", calc.old_add(1, 1))
        show("  warning", str(caught[0].message) if caught else None)
        calc.log("hello from the blocking client")
        show("log(...)", "sent (oneway)")
        show("translate(square, dx=1)", calc.translate(SQUARE, dx=1))
        try:
            calc.rpc.call("area", {"name": "bad", "points": [{"x": 1, "y": "2"}]})
        except ParamError as exc:
            show("area(<y is a str>)", f"ParamError: {exc}")
        show("put(hammer)", inv.put(HAMMER))
        show("put(nails)", inv.put(NAIL))
        show("get('H-1')", inv.get("H-1"))
        show("get('nope')", inv.get("nope"))
        show("list_items(LOW)", [i.sku for i in inv.list_items(Status.LOW)])
        show("by_status()", inv.by_status())
        show("ping()", hc.ping())


async def async_calls(addr: str) -> None:
    print("AsyncCalculatorClient / AsyncInventoryClient / AsyncHealthClient (asyncio)")
    async with (
        AsyncCalculatorClient(addr) as calc,
        AsyncInventoryClient(addr) as inv,
        AsyncHealthClient(addr) as hc,
    ):
        show("add(2, 3)", await calc.add(2, 3))
        show(
            "gather(slow_add(i) for i in 0..4)", await asyncio.gather(*map(calc.slow_add, range(5)))
        )
        show("[i async for i in count(4)]", [i async for i in calc.count(4)])
        show("area(square)", await calc.area(SQUARE))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            show("old_add(1, 1)", await calc.old_add(1, 1))
        await calc.log("hello from the asyncio client")
        show("log(...)", "sent (oneway)")
        moved = await calc.translate(SQUARE, dy=-1)
        show("translate(square, dy=-1).points[0]", moved.points[0])
        show("list_items()", [i.sku async for i in inv.list_items()])
        item = await inv.get("H-1")
        show(
            "get('H-1').category.children[0]",
            item.category.children[0] if item and item.category else None,
        )
        show("get('H-1').status", item.status if item else None)
        await inv.clear()
        show("clear(); by_status()", await inv.by_status())
        show("ping()", await hc.ping())
        show("uptime() > 0", await hc.uptime() > 0)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  [server log] %(message)s")
    logging.getLogger("pymprpc").setLevel(logging.WARNING)
    server = Server(
        ("127.0.0.1", 0),
        auth=[("demo", "demo")],
        version="1.2.0",
        description="mprpcgen demo: Calculator, Inventory and Health",
    )
    server.register_introspection_functions()
    register_calculator(server, Calculator())
    register_inventory(server, Inventory())
    register_health(server, Health())
    async with server:
        addr = f"tcp://demo:demo@127.0.0.1:{server.port}"
        print(f"serving Calculator, Inventory and Health on 127.0.0.1:{server.port}\n")
        await asyncio.to_thread(sync_calls, addr)
        print()
        await async_calls(addr)
        async with AsyncHealthClient(addr) as hc:
            sig = await hc.rpc.system.methodSignature("translate")
            show("system.methodSignature('translate')", sig)
            show("system.methodHelp('area')", await hc.rpc.system.methodHelp("area"))
            for info in await list_services(hc):
                show(f"system.listServices(): {info.name}", info.version)
            served = await service_info(hc)
            show("service_info(health client).methods", served and served.methods)
    print("\nserver stopped")


if __name__ == "__main__":
    asyncio.run(main())
