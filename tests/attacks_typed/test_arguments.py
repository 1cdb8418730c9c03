"""Point 1 of the typed-call contract, argument side: every argument is checked against
its declared type on the server (402 naming the parameter, never a 500, never a wrong
value let through), by position and by name alike, and the generated clients refuse the
same values. Values are drawn by hypothesis around the type edges (64-bit bounds, bool
versus int, int versus float, str versus bytes, None, nested containers)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import LocalProtocolError, ParamError

from .kit import new_server, package, served

IDL = """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float; y: int = 0; }
/// Echoes what its handler received, as (type name, repr).
service Edge {
    def t_int(v: int) -> str;
    def t_float(v: float) -> str;
    def t_bool(v: bool) -> str;
    def t_str(v: str) -> str;
    def t_bytes(v: bytes) -> str;
    def t_opt(v: int?) -> str;
    def t_list(v: list<int>) -> str;
    def t_map(v: map<str, float>) -> str;
    def t_enum(v: Color) -> str;
    def t_struct(v: Pt) -> str;
    def two(a: int, b: float = 2.5, c: str? = none) -> str;
}
"""

I64_MIN, U64_MAX = -(2**63), 2**64 - 1
EDGE_INTS = [I64_MIN - 1, I64_MIN, -1, 0, 1, 2**63 - 1, 2**63, U64_MAX, U64_MAX + 1, 2**80]


def in_range(v: int) -> bool:
    return I64_MIN <= v <= U64_MAX


def is_int(v: Any) -> bool:
    return type(v) is int


def fits(kind: str, v: Any) -> bool:
    """The contract's oracle: does `v` belong to the declared type `kind`?"""
    if kind == "int":
        return is_int(v) and in_range(v)
    if kind == "float":
        return type(v) is float or (is_int(v) and in_range(v))
    if kind == "bool":
        return type(v) is bool
    if kind == "str":
        return type(v) is str
    if kind == "bytes":
        return type(v) is bytes
    if kind == "opt":
        return v is None or fits("int", v)
    if kind == "list":
        return type(v) is list and all(fits("int", x) for x in v)
    if kind == "map":
        return type(v) is dict and all(type(k) is str and fits("float", x) for k, x in v.items())
    if kind == "enum":
        return is_int(v) and v in (1, 2)
    raise AssertionError(kind)


def encodable(v: Any) -> bool:
    """Can MessagePack carry `v` at all (an untyped client cannot send what it cannot)?"""
    if is_int(v):
        return in_range(v)
    if isinstance(v, list):
        return all(encodable(x) for x in v)
    if isinstance(v, dict):
        return all(encodable(k) and encodable(x) for k, x in v.items())
    return True


def expected_echo(kind: str, v: Any) -> str:
    if kind == "float":
        return repr(("float", float(v)))
    if kind == "map":
        return repr(("dict", {k: float(x) for k, x in v.items()}))
    if kind == "enum":
        return repr(("Color", v))
    return repr((type(v).__name__, v))


scalars = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.none(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), scalars, max_size=3),
)
KINDS = ["int", "float", "bool", "str", "bytes", "opt", "list", "map", "enum"]


class Echo:
    """A servicer whose every method reports the type and value its handler got."""

    def __getattr__(self, name: str) -> Any:
        def handler(v: Any) -> str:
            if name == "t_enum":
                return repr((type(v).__name__, int(v)))
            return repr((type(v).__name__, v))

        return handler


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    directory = tmp_path_factory.mktemp("edge")
    with package(IDL, "edge_attack", directory) as mod:
        methods = {
            f"t_{k}": (lambda self, v, _k=k: Echo().__getattr__(f"t_{_k}")(v)) for k in KINDS
        }
        methods["t_struct"] = lambda self, v: repr((type(v).__name__, v.x, v.y))
        methods["two"] = lambda self, a, b=2.5, c=None: repr((a, type(b).__name__, b, c))
        servicer = type("EdgeImpl", (mod.EdgeServicer,), methods)()
        server = new_server()
        mod.register_edge(server, servicer)
        with served(server) as running:
            yield mod, running.url


def outcome(call: Any) -> tuple[str, Any]:
    """('ok', value), ('param', message) or ('local', message); anything else fails."""
    try:
        return "ok", call()
    except ParamError as exc:
        return "param", str(exc)
    except LocalProtocolError as exc:  # the untyped client cannot encode the value
        return "local", str(exc)


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(v=values)
def test_untyped_by_position_and_by_name_agree_with_the_declared_type(
    edge: tuple[Any, str], kind: str, v: Any
) -> None:
    _, url = edge
    method = f"t_{kind}"
    with RPC(url) as rpc:
        by_position = outcome(lambda: rpc.call(method, v))
        by_name = outcome(lambda: rpc.call(method, v=v))
    if not encodable(v):
        # MessagePack cannot carry it: refused before it leaves, never sent and accepted.
        assert by_position[0] in ("local", "param"), by_position
        assert by_name[0] in ("local", "param"), by_name
        return
    if fits(kind, v):
        assert by_position == ("ok", expected_echo(kind, v))
        assert by_name == by_position
    else:
        assert by_position[0] == "param", (kind, v, by_position)
        assert by_position[1].startswith(f"{method}(): v"), by_position  # names it
        assert by_name[0] == "param", (kind, v, by_name)


def _typed_sync_outcome(mod: Any, url: str, kind: str, v: Any) -> tuple[str, Any]:
    with mod.EdgeClient(url) as client:
        return outcome(lambda: getattr(client, f"t_{kind}")(v))


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(v=values.filter(encodable))
def test_generated_client_agrees_with_the_declared_type(
    edge: tuple[Any, str], kind: str, v: Any
) -> None:
    mod, url = edge
    got = _typed_sync_outcome(mod, url, kind, v)
    if fits(kind, v):
        assert got == ("ok", expected_echo(kind, v))
    else:
        assert got[0] == "param", (kind, v, got)
        assert f"t_{kind}(): v" in got[1], got


@pytest.mark.parametrize("bad", [U64_MAX + 1, I64_MIN - 1, 2**100])
def test_generated_client_out_of_range_int_is_a_param_error_naming_it(
    edge: tuple[Any, str], bad: int
) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client, pytest.raises(ParamError, match=r"t_int\(\): v"):
        client.t_int(bad)


def test_generated_client_out_of_range_struct_field_is_a_param_error_naming_it(
    edge: tuple[Any, str],
) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client, pytest.raises(ParamError, match=r"v\.y"):
        client.t_struct(mod.Pt(x=1.0, y=U64_MAX + 1))


def test_generated_client_out_of_range_list_item_is_a_param_error(edge: tuple[Any, str]) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client, pytest.raises(ParamError, match=r"v\[1\]"):
        client.t_list([1, U64_MAX + 1])


def test_generated_client_huge_int_for_a_float_parameter(edge: tuple[Any, str]) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client:
        try:
            got = client.t_float(2**64)
        except ParamError as exc:
            assert "t_float(): v" in str(exc)
        else:
            assert got == repr(("float", float(2**64)))


def test_generated_client_refuses_a_mapping_for_a_struct_with_a_param_error(
    edge: tuple[Any, str],
) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client, pytest.raises(ParamError, match=r"t_struct\(\): v"):
        client.t_struct({"x": 1.0})


COERCED = [
    ("enum", True),
    ("enum", 1.9),
    ("enum", "1"),
    ("enum", b"1"),
    ("list", ""),
    ("list", b"\x01"),
    ("list", {1: 2}),
    ("list", range(2)),
]


@pytest.mark.parametrize(("kind", "v"), COERCED, ids=[f"{k}-{v!r}" for k, v in COERCED])
def test_generated_client_does_not_coerce_wrong_values(
    edge: tuple[Any, str], kind: str, v: Any
) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client:
        got = outcome(lambda: getattr(client, f"t_{kind}")(v))
    assert got[0] == "param", got


def test_the_untyped_client_gets_402_for_the_same_wrong_values(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url) as rpc:
        for kind, v in COERCED:
            if isinstance(v, range):
                continue  # the untyped client cannot send a range at all
            with pytest.raises(ParamError, match=rf"t_{kind}\(\): v"):
                rpc.call(f"t_{kind}", v)


def test_async_generated_client_does_not_coerce_a_bool_to_an_enum(edge: tuple[Any, str]) -> None:
    mod, url = edge

    async def main() -> Any:
        async with mod.AsyncEdgeClient(url) as client:
            return await client.t_enum(True)

    with pytest.raises(ParamError, match=r"t_enum\(\): v"):
        asyncio.run(asyncio.wait_for(main(), 20))


RAISED = [("list", None), ("map", None), ("map", [("a", 1.0)]), ("enum", None), ("enum", "")]


@pytest.mark.parametrize(("kind", "v"), RAISED, ids=[f"{k}-{v!r}" for k, v in RAISED])
def test_generated_client_wrong_container_is_a_param_error(
    edge: tuple[Any, str], kind: str, v: Any
) -> None:
    mod, url = edge
    with mod.EdgeClient(url) as client, pytest.raises(ParamError, match=rf"t_{kind}\(\): v"):
        getattr(client, f"t_{kind}")(v)


def test_struct_argument_edges_from_the_untyped_client(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url) as rpc:
        assert rpc.t_struct({"x": 1}) == repr(("Pt", 1.0, 0))  # int widened, default used
        assert rpc.t_struct(v={"x": 1.5, "y": U64_MAX}) == repr(("Pt", 1.5, U64_MAX))
        for bad, where in [
            ({}, "v.x"),
            ({"x": True}, "v.x"),
            ({"x": 1.0, "y": 1.5}, "v.y"),
            ({"x": 1.0, "y": False}, "v.y"),
            ([1.0, 0], "v"),
            ("Pt", "v"),
        ]:
            with pytest.raises(ParamError, match=rf"t_struct\(\): {where}\b"):
                rpc.t_struct(bad)


def test_missing_extra_and_duplicate_arguments_are_402_naming_them(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url) as rpc:
        assert rpc.two(1) == repr((1, "float", 2.5, None))
        assert rpc.two(a=1, b=3) == repr((1, "float", 3.0, None))  # widened by name too
        assert rpc.two(1, 3, "x") == rpc.two(c="x", b=3, a=1)
        for args, kwargs, name in [
            ((), {}, "a"),
            ((), {"b": 1.0}, "a"),
            ((1,), {"zz": 1}, "zz"),
            ((1, 2.0, None, 4), {}, ""),
            ((1,), {"a": 2}, "a"),
            ((1,), {"c": 5}, "c"),
            ((True,), {}, "a"),
            ((1.0,), {}, "a"),
            ((1,), {"b": "2"}, "b"),
        ]:
            with pytest.raises(ParamError) as info:
                rpc.call("two", *args, **kwargs)
            assert str(info.value).startswith("two(): " + name), (args, kwargs, info.value)
        assert rpc.two(2) == repr((2, "float", 2.5, None))  # still serving


@pytest.mark.parametrize("v", [I64_MIN, -1, 0, 2**63 - 1, 2**63, U64_MAX])
def test_64_bit_edges_are_accepted_everywhere(edge: tuple[Any, str], v: int) -> None:
    mod, url = edge
    want = repr(("int", v))
    with RPC(url) as rpc, mod.EdgeClient(url) as client:
        assert rpc.t_int(v) == want
        assert rpc.t_int(v=v) == want
        assert client.t_int(v) == want
        assert rpc.t_float(v) == repr(("float", float(v)))
        assert rpc.t_list([v, v]) == repr(("list", [v, v]))


def test_async_clients_refuse_and_accept_the_same(edge: tuple[Any, str]) -> None:
    mod, url = edge

    async def main() -> list[tuple[str, Any]]:
        got: list[tuple[str, Any]] = []
        async with mod.AsyncEdgeClient(url) as client, AsyncRPC(url) as rpc:
            for kind, v in [("int", True), ("bool", 1), ("float", "1"), ("str", b"x")]:
                for call in (getattr(client, f"t_{kind}"), rpc.method(f"t_{kind}")):
                    try:
                        got.append(("ok", await call(v)))
                    except ParamError as exc:
                        got.append(("param", str(exc)))
            got.append(("ok", await client.t_float(3)))
            got.append(("ok", await rpc.call("t_float", v=3)))
        return got

    got = asyncio.run(asyncio.wait_for(main(), 20))
    assert [g[0] for g in got[:-2]] == ["param"] * 8, got
    assert all(": v: expected" in g[1] for g in got[:-2]), got
    assert got[-2:] == [("ok", repr(("float", 3.0)))] * 2


def test_float_edge_values_pass_unchanged(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url) as rpc:
        for v in [math.inf, -math.inf, 5e-324, -0.0, 1.7976931348623157e308]:
            assert rpc.t_float(v) == repr(("float", v))
        assert "nan" in rpc.t_float(math.nan)


def test_server_keeps_serving_after_refusals(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url) as rpc:
        for _ in range(50):
            with pytest.raises(ParamError):
                rpc.t_int("x")
        assert rpc.t_int(7) == repr(("int", 7))


# JSON (debug) clients can send integers of any size: the server's own 64-bit check.
json_ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(), st.integers(2**64, 2**200))


@pytest.mark.parametrize("kind", ["int", "opt", "list"])  # map's values are floats
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=json_ints)
def test_json_client_integers_beyond_64_bits_are_402_naming_the_parameter(
    edge: tuple[Any, str], kind: str, n: int
) -> None:
    _, url = edge
    v: Any = [0, n] if kind == "list" else n
    where = r"v\[1\]" if kind == "list" else "v"
    with RPC(url, debug=True) as rpc:
        if fits(kind, v):
            assert rpc.call(f"t_{kind}", v=v) == expected_echo(kind, v)
        else:
            with pytest.raises(ParamError, match=rf"t_{kind}\(\): {where}: "):
                rpc.call(f"t_{kind}", v)


def test_json_client_huge_int_in_a_struct_is_402(edge: tuple[Any, str]) -> None:
    _, url = edge
    with RPC(url, debug=True) as rpc, pytest.raises(ParamError, match=r"t_struct\(\): v\.y: "):
        rpc.t_struct({"x": 1.0, "y": 2**64})


@pytest.mark.parametrize("n", [10**400, -(10**309)], ids=["1e400", "-1e309"])
def test_json_client_huge_int_for_a_float_parameter_is_402(edge: tuple[Any, str], n: int) -> None:
    _, url = edge
    with RPC(url, debug=True) as rpc, pytest.raises(ParamError, match=r"t_float\(\): v"):
        rpc.t_float(n)


def test_concurrent_good_and_bad_calls_each_get_their_own_outcome(edge: tuple[Any, str]) -> None:
    mod, url = edge
    cases: list[tuple[str, Any]] = [("int", i) if i % 3 else ("int", float(i)) for i in range(60)]
    cases += [("bool", i % 2 == 0) if i % 4 else ("bool", i) for i in range(40)]

    async def main() -> list[tuple[str, Any]]:
        async with mod.AsyncEdgeClient(url) as client, AsyncRPC(url) as rpc:
            calls = []
            for n, (kind, v) in enumerate(cases):
                call = getattr(client, f"t_{kind}") if n % 2 else rpc.method(f"t_{kind}")
                calls.append(call(v) if n % 4 < 2 else call(v=v))
            got = await asyncio.gather(*calls, return_exceptions=True)
        return [("ok", g) if isinstance(g, str) else ("param", g) for g in got]

    got = asyncio.run(asyncio.wait_for(main(), 30))
    for (kind, v), (status, value) in zip(cases, got, strict=True):
        if fits(kind, v):
            assert (status, value) == ("ok", expected_echo(kind, v))
        else:
            assert status == "param" and isinstance(value, ParamError), (kind, v, value)
            assert f"t_{kind}(): v: expected" in str(value)
