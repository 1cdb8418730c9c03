"""Nested containers of structs and enums, as a user of a generated package writes them:
maps of structs, lists of optional enums, optional structs, for unary, stream and oneway
methods, through both generated clients. A wrong leaf is a `ParamError` naming the method
and the path on the client, and the same 402 on the server (untyped client); nothing is
converted to fit; the handler gets dataclasses and enum members; struct defaults are fresh
for every value, on both sides."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from helpers import wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import MPRPCError, ParamError

IDL = """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float; y: int = 0; }
struct Bag {
    tags: list<str> = []; attrs: map<str, int> = {}; at: Pt? = none; c: Color = Color.RED;
}
service Box {
    def by_name(m: map<str, Pt>) -> str;
    def colors(c: list<Color?>) -> str;
    def maybe(p: Pt?) -> str;
    def grid(g: list<map<str, list<Pt?>>>) -> str;
    def bag(b: Bag) -> Bag;
    stream walk(m: map<str, Pt>) -> Pt;
    oneway def drop(c: list<Color?>, p: Pt?);
    def dropped() -> list<str>;
}
"""


def shape(v: Any) -> str:
    """What the handler received, with the Python types spelled out."""
    return repr(v) + "|" + type(v).__name__


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    seen: list[str] = []
    lock = threading.Lock()
    with package(IDL, "box_attack2", tmp_path_factory.mktemp("box")) as mod:

        def bag(self: Any, b: Any) -> Any:
            # Mutating the received value must not leak into the next call's defaults.
            b.tags.append("seen")
            b.attrs["n"] = len(b.attrs)
            return b

        async def walk(self: Any, m: Any) -> AsyncIterator[Any]:
            for k in sorted(m):
                yield m[k]

        def drop(self: Any, c: Any, p: Any) -> None:
            with lock:
                seen.append(shape([type(x).__name__ for x in c]) + shape(p))

        def dropped(self: Any) -> list[str]:
            with lock:
                return list(seen)

        methods = {
            "by_name": lambda self, m: shape({k: (shape(v)) for k, v in m.items()}),
            "colors": lambda self, c: shape([shape(x) for x in c]),
            "maybe": lambda self, p: shape(p),
            "grid": lambda self, g: shape(g),
            "bag": bag,
            "walk": walk,
            "drop": drop,
            "dropped": dropped,
        }
        server = new_server()
        mod.register_box(server, type("B", (mod.BoxServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def test_handler_gets_dataclasses_and_enum_members(box: tuple[Any, str]) -> None:
    mod, url = box
    with mod.BoxClient(url) as client, RPC(url) as rpc:
        want = shape({"a": shape(mod.Pt(x=1.0, y=0))})
        assert client.by_name({"a": mod.Pt(x=1)}) == want  # the int is widened to a float
        assert rpc.by_name({"a": {"x": 1}}) == want
        want = shape([shape(mod.Color.RED), shape(None), shape(mod.Color.GREEN)])
        assert client.colors([mod.Color.RED, None, 2]) == want
        assert rpc.colors([1, None, 2]) == want
        assert client.maybe(None) == rpc.maybe(None) == shape(None)
        want = shape(mod.Pt(x=0.5, y=-1))
        assert client.maybe(mod.Pt(x=0.5, y=-1)) == rpc.maybe({"x": 0.5, "y": -1}) == want
        grid = [{"r": [None, mod.Pt(x=2.0)]}, {}]
        assert client.grid(grid) == rpc.grid([{"r": [None, {"x": 2}]}, {}]) == shape(grid)


WRONG = [
    # (method, argument as the generated client gets it, as the untyped one sends it, path)
    ("by_name", {"a": {"x": 1.0}}, None, r"m\['a'\]: expected Pt, got map"),
    ("by_name", {"a": "Pt"}, {"a": "Pt"}, r"m\['a'\]: expected Pt, got str"),
    ("by_name", {"a": "PT:x=1"}, {"a": ["x", 1.0]}, r"m\['a'\]: expected Pt, got (str|list)"),
    ("by_name", {5: "x"}, {5: {"x": 1.0}}, r"m\[5\]: map keys must be str, got int"),
    ("by_name", [("a", 1)], [["a", 1]], r"m: expected map<str, Pt>, got list"),
    ("by_name", {"b": "@Pt(x='s')"}, {"b": {"x": "s"}}, r"m\['b'\]"),
    ("colors", [True], [True], r"c\[0\]: expected Color, got bool"),
    ("colors", [None, 3], [None, 3], r"c\[1\]: 3 is not a Color"),
    ("colors", [1.0], [1.0], r"c\[0\]: expected Color, got float"),
    ("colors", [None, "RED"], [None, "RED"], r"c\[1\]: expected Color, got str"),
    ("colors", "RED", "RED", r"c: expected list<Color\?>, got str"),
    ("maybe", {"x": 1.0}, 5, r"p: expected Pt, got (map|int)"),
    ("maybe", False, False, r"p: expected Pt, got bool"),
    (
        "grid",
        [{"r": [None, "@Pt(x=True)"]}],
        [{"r": [None, {"x": True}]}],
        r"g\[0\]\['r'\]\[1\]\.x",
    ),
    ("grid", [{"r": None}], [{"r": None}], r"g\[0\]\['r'\]: expected list<Pt\?>, got none"),
    ("grid", [[]], [[]], r"g\[0\]: expected map<str, list<Pt\?>>, got list"),
]


def realise(mod: Any, v: Any) -> Any:
    """Turn the '@Pt(...)' shorthand of WRONG into a real (ill-typed) dataclass instance."""
    if isinstance(v, str) and v.startswith("@Pt("):
        return eval(v[1:], {"Pt": mod.Pt})
    if isinstance(v, list):
        return [realise(mod, x) for x in v]
    if isinstance(v, dict):
        return {k: realise(mod, x) for k, x in v.items()}
    return v


@pytest.mark.parametrize(("method", "arg", "wire", "path"), WRONG, ids=[w[3][:30] for w in WRONG])
def test_a_wrong_leaf_is_a_param_error_naming_method_and_path(
    box: tuple[Any, str], method: str, arg: Any, wire: Any, path: str
) -> None:
    mod, url = box
    pattern = rf"^{method}\(\): {path}"
    with mod.BoxClient(url) as client:
        with pytest.raises(ParamError, match=pattern):
            getattr(client, method)(realise(mod, arg))
        assert client.colors([]) == shape([])  # the connection is fine afterwards
    if wire is not None:
        with RPC(url) as rpc, pytest.raises(ParamError, match=pattern):
            getattr(rpc, method)(wire)


@pytest.mark.parametrize(("method", "arg", "wire", "path"), WRONG, ids=[w[3][:30] for w in WRONG])
def test_the_async_client_refuses_the_same(
    box: tuple[Any, str], method: str, arg: Any, wire: Any, path: str
) -> None:
    mod, url = box

    async def main() -> str:
        async with mod.AsyncBoxClient(url) as client:
            with pytest.raises(ParamError, match=rf"^{method}\(\): {path}"):
                await getattr(client, method)(realise(mod, arg))
            return str(await client.colors([]))

    assert asyncio.run(asyncio.wait_for(main(), 20)) == shape([])


def test_stream_arguments_are_checked_by_both_clients(box: tuple[Any, str]) -> None:
    mod, url = box
    with mod.BoxClient(url) as client:
        got = list(client.walk({"b": mod.Pt(x=2), "a": mod.Pt(x=1.5, y=3)}))
        assert got == [mod.Pt(x=1.5, y=3), mod.Pt(x=2.0)]
        with pytest.raises(ParamError, match=r"^walk\(\): m\['b'\]\.y: expected int, got float"):
            list(client.walk({"a": mod.Pt(x=1), "b": mod.Pt(x=1, y=1.0)}))
        with pytest.raises(ParamError, match=r"^walk\(\): m\['a'\]: expected Pt, got map"):
            list(client.walk({"a": {"x": 1.0}}))
    with RPC(url) as rpc, pytest.raises(ParamError, match=r"^walk\(\): m\['b'\]\.y: expected int"):
        list(rpc.walk({"a": {"x": 1}, "b": {"x": 1, "y": 1.0}}))

    async def main() -> list[Any]:
        async with mod.AsyncBoxClient(url) as client, AsyncRPC(url) as arpc:
            with pytest.raises(ParamError, match=r"^walk\(\): m\['a'\]\.x: expected float, got"):
                _ = [p async for p in client.walk({"a": mod.Pt(x="1")})]
            with pytest.raises(ParamError, match=r"^walk\(\): m\['a'\]\.x: expected float"):
                _ = [p async for p in await arpc.walk({"a": {"x": "1"}})]
            return [p async for p in client.walk({"z": mod.Pt(x=0)})]

    assert asyncio.run(asyncio.wait_for(main(), 20)) == [mod.Pt(x=0.0)]


def test_oneway_nested_arguments_are_checked_by_both_clients(box: tuple[Any, str]) -> None:
    mod, url = box
    with mod.BoxClient(url) as client:
        for c, p, path in [
            ([True], None, r"c\[0\]: expected Color, got bool"),
            ([None, 7], None, r"c\[1\]: 7 is not a Color"),
            ([], {"x": 1.0}, r"p: expected Pt, got map"),
            ([], mod.Pt(x=None), r"p\.x: expected float, got none"),
        ]:
            with pytest.raises(ParamError, match=rf"^drop\(\): {path}"):
                client.drop(c, p)

    async def main() -> None:
        async with mod.AsyncBoxClient(url) as client:
            with pytest.raises(ParamError, match=r"^drop\(\): c\[0\]: expected Color, got bool"):
                await client.drop([False], None)
            await client.drop([mod.Color.GREEN, None], mod.Pt(x=3))

    asyncio.run(asyncio.wait_for(main(), 20))
    with mod.BoxClient(url) as client:
        want = shape(["Color", "NoneType"]) + shape(mod.Pt(x=3.0))
        wait_for(lambda: want in client.dropped())
        # Only the good call got through: nothing ill-typed reached the handler.
        assert client.dropped() == [want]


def test_struct_defaults_are_fresh_for_every_value(box: tuple[Any, str]) -> None:
    mod, url = box
    a, b = mod.Bag(), mod.Bag()
    assert a.tags is not b.tags and a.attrs is not b.attrs
    with mod.BoxClient(url) as client, RPC(url) as rpc:
        for _ in range(3):
            assert client.bag(mod.Bag()) == mod.Bag(tags=["seen"], attrs={"n": 0})
            # The server fills in the defaults of what an untyped caller left out.
            assert rpc.bag({}) == {
                "tags": ["seen"],
                "attrs": {"n": 0},
                "at": None,
                "c": 1,
            }
    assert mod.Bag() == mod.Bag(tags=[], attrs={}, at=None, c=mod.Color.RED)


def test_a_struct_argument_is_not_mutated_by_sending_it(box: tuple[Any, str]) -> None:
    mod, url = box
    b = mod.Bag(tags=["a"], attrs={"k": 1}, at=mod.Pt(x=1))
    with mod.BoxClient(url) as client:
        got = client.bag(b)
    assert got == mod.Bag(tags=["a", "seen"], attrs={"k": 1, "n": 1}, at=mod.Pt(x=1.0))
    assert b == mod.Bag(tags=["a"], attrs={"k": 1}, at=mod.Pt(x=1))
    assert type(b.at.x) is int  # the caller's own object keeps its int: widening is on the wire


def test_nothing_is_converted_to_fit(box: tuple[Any, str]) -> None:
    mod, url = box
    with mod.BoxClient(url) as client:
        for arg in ["", b"", {}, 0, None]:
            with pytest.raises(MPRPCError, match=r"^colors\(\): c: expected list"):
                client.colors(arg)
        for bad in [True, 1.0, "1", b"\x01", [1]]:
            with pytest.raises(ParamError, match=r"^colors\(\): c\[0\]"):
                client.colors([bad])


def test_a_tuple_goes_out_as_a_list(box: tuple[Any, str]) -> None:
    """The README: a tuple goes out as a list, as MessagePack sends both (its items are
    checked like a list's)."""
    mod, url = box
    with mod.BoxClient(url) as client:
        assert client.colors((1, None)) == client.colors([1, None])
        with pytest.raises(ParamError, match=r"^colors\(\): c\[1\]"):
            client.colors((1, True))
