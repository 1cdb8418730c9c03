"""Oneway methods with typed parameters: the server refuses a wrong argument (the handler
never sees it, nothing comes back); a generated client, which knows the declared types,
must not let a wrong argument vanish silently (point 1: ParamError on the client)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import wait_for
from pymprpc.client import RPC
from pymprpc.errors import MPRPCError

from .kit import new_server, package, served

IDL = """
struct Pt { x: float; }
service One {
    oneway def fire(n: int, p: Pt);
    def got() -> list<int>;
}
"""


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, list[Any]]]:
    seen: list[Any] = []
    lock = threading.Lock()
    with package(IDL, "one_attack", tmp_path_factory.mktemp("one")) as mod:

        def fire(self: Any, n: Any, p: Any) -> None:
            with lock:
                seen.append(n)

        def got(self: Any) -> list[int]:
            with lock:
                return [n for n in seen if type(n) is int]

        impl = type("O", (mod.OneServicer,), {"fire": fire, "got": got})()
        server = new_server()
        mod.register_one(server, impl)
        with served(server) as running:
            yield mod, running.url, seen


def test_server_drops_wrong_oneway_arguments_and_runs_good_ones(
    one: tuple[Any, str, list[Any]],
) -> None:
    _, url, seen = one
    with RPC(url) as rpc:
        rpc.notify("fire", True, {"x": 1.0})
        rpc.notify("fire", n=1.5, p={"x": 1.0})
        rpc.notify("fire", 11, {"x": "bad"})
        rpc.notify("fire", n=10, p={"x": 1})
        wait_for(lambda: 10 in rpc.got())
        assert True not in seen and 1.5 not in seen and 11 not in seen, seen


def test_generated_client_refuses_a_wrong_oneway_argument(one: tuple[Any, str, list[Any]]) -> None:
    mod, url, _ = one
    with mod.OneClient(url) as client, pytest.raises(MPRPCError, match=r"fire\(\): n"):
        client.fire(True, mod.Pt(x=1.0))


def test_async_generated_client_refuses_a_wrong_oneway_argument(
    one: tuple[Any, str, list[Any]],
) -> None:
    mod, url, _ = one

    async def main() -> None:
        async with mod.AsyncOneClient(url) as client:
            await client.fire(True, mod.Pt(x=1.0))

    with pytest.raises(MPRPCError, match=r"fire\(\): n"):
        asyncio.run(asyncio.wait_for(main(), 20))


def test_generated_client_oneway_with_good_arguments_runs(one: tuple[Any, str, list[Any]]) -> None:
    mod, url, _ = one
    with mod.OneClient(url) as client:
        client.fire(20, mod.Pt(x=2))
        wait_for(lambda: 20 in client.got())
