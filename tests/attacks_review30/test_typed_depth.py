# ruff: noqa: SIM117  (a client's with-block and a pytest.raises read better apart)
"""Contract 2: typed clients refuse arguments nested deeper than MessagePack carries, or
containing themselves, with a ParamError naming the method and the parameter path;
exactly 1,022 levels below the arguments travel, 1,023 are refused."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_review29._kit import nest
from attacks_review29.test_typed import Inventory

from generated_examples.inventory import (
    AsyncInventoryClient,
    InventoryClient,
    Item,
    register_inventory,
)
from pymprpc import Server, errors
from pymprpc.testing import RunningServer, serve_in_thread


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    server = Server(("127.0.0.1", 0), grace_period=1)
    register_inventory(server, Inventory())
    with serve_in_thread(server) as running:
        yield running


def item(attributes: dict[str, Any]) -> Item:
    return Item(sku="s", title="t", price=1.0, attributes=attributes)


def tuple_nest(levels: int) -> Any:
    return functools.reduce(lambda v, _: (v,), range(levels), 0)


# put(item): the item is level 1, its attributes map level 2, attributes["x"] level 3.
def test_exactly_1022_levels_travel_1023_refused(running: RunningServer) -> None:
    with InventoryClient(running.url) as client:
        assert client.put(item({"x": nest(1020)})) == "s"
        with pytest.raises(errors.ParamError) as info:
            client.put(item({"x": nest(1021)}))
    text = str(info.value)
    assert text.startswith("put(): item['attributes']['x'][0]")
    assert "nested deeper than MessagePack carries" in text


def test_async_client_same_limit(running: RunningServer) -> None:
    async def main() -> None:
        async with AsyncInventoryClient(running.url) as client:
            assert await client.put(item({"x": nest(1020)})) == "s"
            with pytest.raises(errors.ParamError, match=r"^put\(\): item\['attributes'\]"):
                await client.put(item({"x": nest(1021)}))

    asyncio.run(asyncio.wait_for(main(), 10))


def test_self_containing_through_a_dict(running: RunningServer) -> None:
    d: dict[str, Any] = {}
    d["k"] = [d]
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ParamError, match=r"\['x'\]\['k'\]\[0\] contains itself"):
            client.put(item({"x": d}))
        # still usable afterwards
        assert client.put(item({"x": 1})) == "s"


def test_shared_non_cyclic_references_are_sent(running: RunningServer) -> None:
    shared = [1, {"a": 2}]
    with InventoryClient(running.url) as client:
        assert client.put(item({"x": [shared, shared, {"y": shared}], "z": shared})) == "s"


def test_deep_tuple_map_key_at_the_limit_travels(running: RunningServer) -> None:
    # {key: 1} is level 3; a key of 1,019 tuples reaches level 1,022.
    with InventoryClient(running.url) as client:
        assert client.put(item({"x": {tuple_nest(1019): 1}})) == "s"


def test_too_deep_tuple_map_key_is_a_param_error(running: RunningServer) -> None:
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ParamError, match=r"^put\(\): item\['attributes'\]"):
            client.put(item({"x": {tuple_nest(1020): 1}}))


def test_too_deep_value_beside_a_deep_but_legal_key(running: RunningServer) -> None:
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ParamError, match=r"^put\(\): "):
            client.put(item({"x": {tuple_nest(950): 1, "deep": nest(1100)}}))


def test_huge_breadth_error_path_finds_the_deep_one(running: RunningServer) -> None:
    """The error path walks 100,000 siblings to the one too deep (bounded by the test's
    timeout; no wall-clock threshold here)."""
    wide = [[i] for i in range(100_000)] + [nest(1100)]
    with InventoryClient(running.url) as client:
        with pytest.raises(errors.ParamError, match=r"\['x'\]\[100000\]"):
            client.put(item({"x": wide}))
