"""`any` parameters, struct fields and results: anything MessagePack carries passes
unchanged (no widening, no struct or enum conversion, bytes stay bytes, non-string map
keys stay keys), both ways, through both generated clients; what MessagePack cannot carry
is refused before it is sent and the connection stays usable."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC
from pymprpc.errors import MPRPCError, ParamError

IDL = """
struct Pt { x: float; }
struct Holder { payload: any; note: str = ""; }
service Anything {
    def echo(v: any) -> any;
    def hold(h: Holder) -> Holder;
    def echo_list(v: list<any>) -> list<any>;
    def echo_map(v: map<str, any>) -> map<str, any>;
    def kind(v: any) -> str;
    def give(key: str) -> any;
    def give_holder(key: str) -> Holder;
    oneway def fire(v: any);
    def ok() -> int;
}
"""
I64_MIN, U64_MAX = -(2**63), 2**64 - 1

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(I64_MIN, U64_MAX),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=4),
)
keys = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.booleans(), st.binary(max_size=2))
encodable = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=12,
)


def typed(v: Any) -> Any:
    """`v` with each value's exact type alongside, so 1 == 1.0 == True cannot hide a change."""
    if isinstance(v, list):
        return ["list", [typed(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", sorted((repr(typed(k)), typed(x)) for k, x in v.items())]
    return [type(v).__name__, repr(v)]


VALUES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def anything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "anything_attack2", tmp_path_factory.mktemp("any")) as mod:
        VALUES.update(
            obj=object(),
            set={1, 2},
            big=2**64,
            nested_big=[1, {"k": -(2**63) - 1}],
            pt=mod.Pt(x=1.0),
            nan=math.nan,
        )
        methods = {
            "echo": lambda self, v: v,
            "hold": lambda self, h: h,
            "echo_list": lambda self, v: v,
            "echo_map": lambda self, v: v,
            "kind": lambda self, v: repr(typed(v)),
            "give": lambda self, key: VALUES[key],
            "give_holder": lambda self, key: mod.Holder(payload=VALUES[key]),
            "fire": lambda self, v: None,
            "ok": lambda self: 41,
        }
        server = new_server()
        mod.register_anything(server, type("A", (mod.AnythingServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(v=encodable)
def test_any_carries_every_encodable_value_unchanged(anything: tuple[Any, str], v: Any) -> None:
    mod, url = anything
    want = typed(v)
    with mod.AnythingClient(url) as client, RPC(url) as rpc:
        assert typed(client.echo(v)) == want
        assert client.kind(v) == rpc.kind(v) == repr(want)
        got = client.hold(mod.Holder(payload=v))
        assert type(got) is mod.Holder and typed(got.payload) == want
        assert typed(client.echo_list([v, v])) == ["list", [want, want]]
        assert typed(client.echo_map({"k": v})) == typed({"k": v})


def test_any_does_not_turn_maps_into_structs_or_widen(anything: tuple[Any, str]) -> None:
    mod, url = anything
    with mod.AnythingClient(url) as client:
        assert client.kind({"x": 1}) == repr(typed({"x": 1}))  # not a Pt, no 1.0
        assert client.kind(True) == repr(["bool", "True"])
        assert client.kind(3) == repr(["int", "3"])
        assert client.kind(b"\x00") == repr(["bytes", repr(b"\x00")])
        assert client.hold(mod.Holder(payload={"payload": 1})).payload == {"payload": 1}


def test_nan_passes_through_any(anything: tuple[Any, str]) -> None:
    mod, url = anything
    with mod.AnythingClient(url) as client:
        assert math.isnan(client.echo(math.nan))
        assert math.isnan(client.give("nan"))


@pytest.mark.parametrize("key", ["obj", "set", "pt"])
def test_unencodable_values_in_any_are_refused_before_sending(
    anything: tuple[Any, str], key: str
) -> None:
    mod, url = anything
    v = VALUES[key]
    with mod.AnythingClient(url) as client:
        for call in (
            lambda: client.echo(v),
            lambda: client.hold(mod.Holder(payload=[1, v])),
            lambda: client.echo_map({"k": v}),
            lambda: client.fire([v]),  # oneway: refused here, not lost silently
        ):
            with pytest.raises(MPRPCError, match=type(v).__name__):
                call()
        assert client.ok() == 41  # refused locally: the connection is untouched

    async def main() -> None:
        async with mod.AsyncAnythingClient(url) as client:
            with pytest.raises(MPRPCError, match=type(v).__name__):
                await client.hold(mod.Holder(payload=v))
            assert await client.ok() == 41

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("key", ["obj", "set", "big", "nested_big", "pt"])
def test_unencodable_results_in_any_fail_that_call_only(
    anything: tuple[Any, str], key: str
) -> None:
    mod, url = anything
    with mod.AnythingClient(url) as client, RPC(url) as rpc:
        for call in (
            lambda: client.give(key),
            lambda: client.give_holder(key),
            lambda: rpc.give(key),
        ):
            with pytest.raises(MPRPCError, match=r"cannot encode|64-bit|give"):
                call()
        assert client.ok() == rpc.ok() == 41


@pytest.mark.parametrize("key", ["big", "nested_big"])
def test_a_huge_int_inside_any_is_a_param_error_naming_the_method(
    anything: tuple[Any, str], key: str
) -> None:
    mod, url = anything
    with mod.AnythingClient(url) as client, pytest.raises(ParamError, match=r"^echo\(\): v"):
        client.echo(VALUES[key])


@pytest.mark.parametrize("key", ["big", "nested_big"])
def test_a_huge_int_result_inside_any_names_the_method(anything: tuple[Any, str], key: str) -> None:
    mod, url = anything
    with mod.AnythingClient(url) as client, pytest.raises(MPRPCError, match=r"give\(\)"):
        client.give(key)
