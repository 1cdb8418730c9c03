"""Self-referential structs (`next: Node?`): a value as deep as MessagePack carries (the
client sends it, so it is within the 1024 levels) is checked like any other: accepted if
it fits, 402 naming the path if not; never a 404 from the checker itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc.client import RPC
from pymprpc.errors import ParamError

from .kit import new_server, package, served

IDL = """
struct Node { v: int; next: Node?; }
service Rec {
    def depth(n: Node) -> int;
}
"""


def chain(k: int, bad: bool = False) -> dict[str, Any]:
    node: dict[str, Any] = {"v": True if bad else 0, "next": None}
    for i in range(k - 1):
        node = {"v": i, "next": node}
    return node


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "rec_attack", tmp_path_factory.mktemp("rec")) as mod:

        def depth(self: Any, n: Any) -> int:
            d = 0
            while n is not None:
                d, n = d + 1, n.next
            return d

        server = new_server()
        mod.register_rec(server, type("R", (mod.RecServicer,), {"depth": depth})())
        with served(server) as running:
            yield mod, running.url


def test_moderately_deep_values_are_checked(rec: tuple[Any, str]) -> None:
    _, url = rec
    with RPC(url) as rpc:
        assert rpc.depth(chain(200)) == 200
        # A long path keeps its first 4 and last 20 parts.
        cut = r"n(\.next){4}\.\.\.\(176 more\)\.\.\.(\.next){19}\.v"
        with pytest.raises(ParamError, match=rf"depth\(\): {cut}: expected int"):
            rpc.depth(chain(200, bad=True))


@pytest.mark.parametrize("bad", [False, True], ids=["valid", "wrong-leaf"])
def test_deep_values_are_checked_not_crashed_on(rec: tuple[Any, str], bad: bool) -> None:
    _, url = rec
    with RPC(url) as rpc:
        if bad:
            with pytest.raises(ParamError, match=r"depth\(\): n\.next"):
                rpc.depth(chain(1000, bad=True))
        else:
            assert rpc.depth(chain(1000)) == 1000
        assert rpc.depth(chain(3)) == 3


def test_generated_client_encodes_deep_values(rec: tuple[Any, str]) -> None:
    mod, url = rec
    node = None
    for i in range(1000):
        node = mod.Node(v=i, next=node)
    with mod.RecClient(url) as client:
        assert client.depth(node) == 1000
