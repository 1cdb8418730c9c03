"""Defaults declared in the IDL (point 1): a call that leaves a defaulted parameter out
has the same outcome whether it comes from the generated client or an untyped one, by
position or by name: the handler gets the IDL's default, of the declared type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc.client import RPC
from pymprpc.errors import ParamError

from .kit import new_server, package, served

IDL = """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float = 1; tags: list<str> = []; c: Color = Color.RED; }
service Defs {
    def d(a: float = 2, b: bool = true, c: Color = Color.GREEN, s: str = "x", o: Pt? = none,
          n: int = -9223372036854775808, u: int = 18446744073709551615) -> str;
    def pt(p: Pt) -> str;
}
"""
WANT = {
    "a": ("float", 2.0),
    "b": ("bool", True),
    "c": ("Color", 2),
    "s": ("str", "x"),
    "o": ("NoneType", None),
    "n": ("int", -(2**63)),
    "u": ("int", 2**64 - 1),
}


def describe(kwargs: dict[str, Any]) -> str:
    return repr(sorted((k, type(v).__name__, v) for k, v in kwargs.items()))


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "defs_attack", tmp_path_factory.mktemp("defs")) as mod:

        def d(self: Any, *args: Any, **kwargs: Any) -> str:  # a compatible override
            assert not args
            return describe(kwargs)

        def pt(self: Any, p: Any) -> str:
            return repr(p)

        impl = type("D", (mod.DefsServicer,), {"d": d, "pt": pt})()
        server = new_server()
        mod.register_defs(server, impl)
        with served(server) as running:
            yield mod, running.url


def expected(**given: Any) -> str:
    values = {k: v for k, (_, v) in WANT.items()}
    values.update(given)
    return describe(values)


def test_generated_client_sends_the_idl_defaults(defs: tuple[Any, str]) -> None:
    mod, url = defs
    with mod.DefsClient(url) as client:
        assert client.d() == expected(c=mod.Color.GREEN)
        assert client.d(s="y") == expected(c=mod.Color.GREEN, s="y")


@pytest.mark.parametrize("how", ["none", "one-by-position", "one-by-name"])
def test_untyped_call_omitting_defaults_gets_the_idl_defaults(
    defs: tuple[Any, str], how: str
) -> None:
    mod, url = defs
    with RPC(url) as rpc, mod.DefsClient(url) as client:
        if how == "none":
            assert rpc.d() == client.d()
        elif how == "one-by-position":
            assert rpc.d(3) == client.d(3)
        else:
            assert rpc.d(s="y") == client.d(s="y")


def test_struct_field_defaults_are_applied_on_the_server(defs: tuple[Any, str]) -> None:
    mod, url = defs
    with RPC(url) as rpc:
        want = repr(mod.Pt(x=1.0, tags=[], c=mod.Color.RED))
        assert rpc.pt({}) == want
        assert rpc.pt(p={}) == want
        with pytest.raises(ParamError, match=r"pt\(\): p\.c: 5 is not a Color"):
            rpc.pt({"c": 5})


def test_all_arguments_by_name_and_by_position_agree(defs: tuple[Any, str]) -> None:
    _, url = defs
    args = [1, False, 1, "z", {"x": 2}, 0, 5]
    names = ["a", "b", "c", "s", "o", "n", "u"]
    with RPC(url) as rpc:
        by_position = rpc.d(*args)
        assert by_position == rpc.d(**dict(zip(names, args, strict=True)))
        assert "('a', 'float', 1.0)" in by_position
        with pytest.raises(ParamError, match=r"d\(\): o\.x: expected float, got str"):
            rpc.d(*args[:4], {"x": "2"})
