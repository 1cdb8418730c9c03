"""A user's own generated service end to end, with both generated clients: names that
collide with builtins (`list`, `type`), odd doc comments, streams abandoned halfway (the
server's generator must be finalized), deadlines on streams, oneway calls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from attacks_review7.kit import make_servicer, warehouse_package
from helpers import wait_for
from pymprpc import Server
from pymprpc.errors import DeadlineExceeded, ParamError
from pymprpc.testing import RunningServer, serve_in_thread

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pkg() -> Iterator[ModuleType]:
    with warehouse_package() as module:
        yield module


@pytest.fixture
def served(pkg: ModuleType) -> Iterator[tuple[RunningServer, Any]]:
    servicer = make_servicer(pkg)
    server = Server(("127.0.0.1", 0), grace_period=1)
    pkg.register_warehouse(server, servicer)
    with serve_in_thread(server) as running:
        yield running, servicer


def test_doc_comments_keep_their_text(pkg: ModuleType) -> None:
    assert inspect.getdoc(pkg.Type) == (
        'Kinds of stock movement: "double", \'single\', """triple""", a \\ backslash, café ✓ */.'
    )
    assert inspect.getdoc(pkg.Movement) == 'A stock movement. """ inside a docstring'
    assert inspect.getdoc(pkg.WarehouseClient).startswith("The warehouse. Trailing backslash \\")


def test_every_method_blocking(pkg: ModuleType, served: tuple[RunningServer, Any]) -> None:
    running, servicer = served
    move = pkg.Movement(id=1, type=pkg.Type.INBOUND, sku="a", quantity=5, context={"k": [1]})
    with pkg.WarehouseClient(running.url) as client:
        assert client.record(move) == 5
        assert client.record(pkg.Movement(id=2, type=pkg.Type.OUTBOUND, sku="a", quantity=2)) == 3
        assert client.list() == ["a"]
        assert client.list(pkg.Type.OUTBOUND, limit=1) == ["a"]
        assert client.type(pkg.Type.OUTBOUND) == "OUTBOUND"
        assert client.sleep(0.01) == 0.01
        assert client.block(0.01) == 0.01
        client.audit("one")
        wait_for(lambda: servicer.audit_lines == ["one"])
        with pytest.raises(ParamError, match="expected Movement"):
            client.record("a")
        with pytest.raises(DeadlineExceeded):
            client.with_options(timeout=0.2).sleep(5)
        assert client.list() == ["a"]  # usable after a deadline


def test_every_method_asyncio(pkg: ModuleType, served: tuple[RunningServer, Any]) -> None:
    running, servicer = served

    async def main() -> None:
        async with pkg.AsyncWarehouseClient(running.url) as client:
            move = pkg.Movement(id=1, type=pkg.Type.INBOUND, sku="b", quantity=1)
            assert await client.record(move) == 1
            assert await client.list(pkg.Type.INBOUND) == ["b"]
            assert await client.type(pkg.Type.INBOUND) == "INBOUND"
            assert await asyncio.gather(*(client.sleep(0.05) for _ in range(10))) == [0.05] * 10
            await client.audit("two")
            task = asyncio.create_task(client.sleep(5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(DeadlineExceeded):
                await client.with_options(timeout=0.2).block(1)
            assert await client.list() == ["b"]

    asyncio.run(asyncio.wait_for(main(), 20))
    wait_for(lambda: servicer.audit_lines == ["two"])


def test_abandoned_streams_end_on_the_server(
    pkg: ModuleType, served: tuple[RunningServer, Any]
) -> None:
    running, servicer = served
    with pkg.WarehouseClient(running.url) as client:
        for i in client.ticks(0.001):
            if i == 3:
                break
        wait_for(lambda: servicer.ticks_done == 1 and servicer.ticks_running == 0)
        ticks = client.ticks(0.001)
        next(ticks)
        ticks.close()
        wait_for(lambda: servicer.ticks_done == 2 and servicer.ticks_running == 0)
        with pytest.raises(DeadlineExceeded):
            for _ in client.with_options(timeout=0.3).ticks(0.01):
                pass
        wait_for(lambda: servicer.ticks_done == 3 and servicer.ticks_running == 0)

    async def main() -> None:
        async with pkg.AsyncWarehouseClient(running.url) as client:
            async for i in client.ticks(0.001):
                if i == 3:
                    break
            await asyncio.to_thread(wait_for, lambda: servicer.ticks_done == 4)

            async def consume() -> None:
                async for _ in client.ticks(0.01):
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(wait_for, lambda: servicer.ticks_done == 5)
            assert await client.list() == []

    asyncio.run(asyncio.wait_for(main(), 20))
    assert servicer.ticks_running == 0
