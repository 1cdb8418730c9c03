"""A hypothesis oracle written from the README's type table: for a mix of nested declared
types (structs holding lists of structs, optional enums, self-reference), a generated client
accepts exactly the values the oracle says fit, the server (through the untyped client,
which sends the wire form) accepts exactly the wire values that fit, the two agree where
the value is the same on both, and a value that fits comes back from an echoing handler
as the oracle predicts (ints widened to floats, enum members, struct defaults)."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC
from pymprpc.errors import LocalProtocolError, ParamError, RPCRuntimeError

TYPES = [
    "map<str, Pt?>",
    "list<Color?>",
    "Bag",
    "list<map<str, Bag>>",
    "Wrap?",
    "map<str, list<Color>>",
    "list<float?>",
    "bytes?",
]
IDL = (
    "enum Color { RED = 1; GREEN = 2; }\n"
    "struct Pt { x: float; y: int = 0; }\n"
    'struct Bag { pts: list<Pt> = []; c: Color? = none; tag: str = ""; }\n'
    "struct Wrap { inner: Wrap?; bag: Bag?; }\n"
    "service Oracle {\n"
    + "".join(f"    def m{i}(v: {t}) -> {t};\n" for i, t in enumerate(TYPES))
    + "".join(f"    def r{i}() -> {t};\n" for i, t in enumerate(TYPES))
    + "".join(f"    stream s{i}() -> {t};\n" for i, t in enumerate(TYPES))
    + "}\n"
)
I64_MIN, U64_MAX = -(2**63), 2**64 - 1
# Fields of each struct: (name, type, default or REQUIRED). An optional field declared
# without a default has `none` for one (the generated dataclass says so too).
REQUIRED = object()
STRUCTS: dict[str, list[tuple[str, str, Any]]] = {
    "Pt": [("x", "float", REQUIRED), ("y", "int", 0)],
    "Bag": [("pts", "list<Pt>", []), ("c", "Color?", None), ("tag", "str", "")],
    "Wrap": [("inner", "Wrap?", None), ("bag", "Bag?", None)],
}


def parse(t: str) -> Any:
    t = t.strip()
    if t.endswith("?"):
        return ("opt", parse(t[:-1]))
    if t.startswith("list<"):
        return ("list", parse(t[5:-1]))
    if t.startswith("map<str,"):
        return ("map", parse(t[8:-1]))
    return t


class Other(enum.IntEnum):
    """An enum of the same values that is not the declared one."""

    RED = 1


def fits(mod: Any, t: Any, v: Any, wire: bool) -> bool:
    """The oracle: a Python value for the generated client (wire=False), a MessagePack
    value for the server (wire=True), straight from the README's type table."""
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return v is None or fits(mod, inner, v, wire)
        if kind == "list":
            # README: a tuple goes out as a list.
            listed = type(v) is list or (not wire and type(v) is tuple)
            return listed and all(fits(mod, inner, x, wire) for x in v)
        return type(v) is dict and all(
            type(k) is str and fits(mod, inner, x, wire) for k, x in v.items()
        )
    # README: a Python value of a subclass of the declared type (an IntEnum member for an
    # int, a float subclass) goes out as the plain value it holds; the wire is exact.
    is_int = type(v) is int or (not wire and isinstance(v, int) and type(v) is not bool)
    if t == "int":
        return is_int and I64_MIN <= v <= U64_MAX
    if t == "float":
        # An int is widened, even one beyond 64 bits if a float holds it (the wire then
        # carries a float); one too large for a float is refused.
        is_float = type(v) is float or (not wire and isinstance(v, float))
        return is_float or (is_int and abs(v) < 2**1024)
    if t in ("str", "bytes"):
        return type(v).__name__ == t
    if t == "Color":
        return (type(v) is int or type(v) is mod.Color) and v in (1, 2)
    fields = STRUCTS[t]
    if wire:
        return type(v) is dict and all(
            (name in v and fits(mod, parse(ft), v[name], wire))
            or (name not in v and default is not REQUIRED)
            for name, ft, default in fields
        )
    return type(v) is getattr(mod, t) and all(
        fits(mod, parse(ft), getattr(v, name), wire) for name, ft, _ in fields
    )


def to_wire(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_wire(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, enum.IntEnum):
        return int(v)
    if isinstance(v, list):
        return [to_wire(x) for x in v]
    if isinstance(v, dict):
        return {k: to_wire(x) for k, x in v.items()}
    return v


def normal(mod: Any, t: Any, v: Any) -> Any:
    """What a value that fits comes back as: floats widened, Color members, dataclasses."""
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return None if v is None else normal(mod, inner, v)
        if kind == "list":
            return [normal(mod, inner, x) for x in v]
        return {k: normal(mod, inner, x) for k, x in v.items()}
    if t == "float":
        return float(v)
    if t == "Color":
        return mod.Color(v)
    if t in STRUCTS:
        return getattr(mod, t)(
            **{n: normal(mod, parse(ft), getattr(v, n)) for n, ft, _ in STRUCTS[t]}
        )
    return v


wrong_leaf = st.one_of(
    st.sampled_from([True, False, 0, 3, -1, 1.5, "", "x", b"", None, 2**64, 10**400, Other.RED]),
    st.integers(I64_MIN, U64_MAX),
    st.floats(allow_nan=False),
    st.lists(st.integers(1, 2), max_size=2),
    st.dictionaries(st.sampled_from(["x", "y", "pts"]), st.integers(0, 2), max_size=2),
)


def value_for(mod: Any, t: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Mostly values of type `t`, sometimes a wrong leaf anywhere inside."""
    return st.one_of(*[shaped(mod, t, depth)] * 12, wrong_leaf)


def shaped(mod: Any, t: Any, depth: int) -> st.SearchStrategy[Any]:
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return st.one_of(st.none(), st.deferred(lambda: value_for(mod, inner, depth)))
        if kind == "list":
            return st.lists(st.deferred(lambda: value_for(mod, inner, depth + 1)), max_size=3)
        return st.dictionaries(
            st.text(max_size=3), st.deferred(lambda: value_for(mod, inner, depth + 1)), max_size=3
        )
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "int": st.one_of(st.sampled_from([I64_MIN, U64_MAX]), st.integers(-5, 5)),
        "float": st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)),
        "str": st.text(max_size=3),
        "bytes": st.binary(max_size=3),
        "Color": st.one_of(st.sampled_from([1, 2]), st.sampled_from(list(mod.Color))),
    }
    if t in scalars:
        return scalars[t]
    if depth > 3 and t == "Wrap":
        return st.just(None)  # keep self-reference finite
    fields = STRUCTS[t]
    required = {n: value_for(mod, parse(ft), depth + 1) for n, ft, d in fields if d is REQUIRED}
    optional = {n: value_for(mod, parse(ft), depth + 1) for n, ft, d in fields if d is not REQUIRED}
    cls = getattr(mod, t)
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    with package(IDL, "oracle_attack2", tmp_path_factory.mktemp("oracle")) as mod:
        methods: dict[str, Any] = {f"m{i}": (lambda self, v: v) for i in range(len(TYPES))}

        async def stream(self: Any) -> Any:
            yield RETURNED[0]

        for i in range(len(TYPES)):
            methods[f"r{i}"] = lambda self: RETURNED[0]
            methods[f"s{i}"] = stream
        server = new_server()
        mod.register_oracle(server, type("O", (mod.OracleServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


RETURNED: list[Any] = [None]  # what the r*/s* handlers return next


@st.composite
def cases(draw: st.DrawFn, mod: Any) -> tuple[int, Any]:
    index = draw(st.integers(0, len(TYPES) - 1))
    return index, draw(value_for(mod, parse(TYPES[index])))


def verdict(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except ParamError as exc:
        return "refused", str(exc)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_client_and_server_accept_exactly_what_the_oracle_says(
    oracle: tuple[Any, str], data: st.DataObject
) -> None:
    mod, url = oracle
    index, v = data.draw(cases(mod))
    t = parse(TYPES[index])
    method = f"m{index}"
    fits_client = fits(mod, t, v, wire=False)
    # What the generated client sends (ints widened to floats) or, for a value it refuses,
    # the same value as the untyped client sends it.
    wire = to_wire(normal(mod, t, v) if fits_client else v)
    fits_server = fits(mod, t, wire, wire=True)
    event(f"{TYPES[index]}: client {'fits' if fits_client else 'refused'}")
    with mod.OracleClient(url) as client, RPC(url) as rpc:
        got = verdict(lambda: getattr(client, method)(v))
        assert (got[0] == "ok") == fits_client, (TYPES[index], v, got)
        if fits_client:
            assert got[1] == normal(mod, t, v), (TYPES[index], v, got)
        else:
            assert got[1].startswith(f"{method}(): v"), got
        try:
            seen = verdict(lambda: getattr(rpc, method)(wire))
        except LocalProtocolError:  # an int beyond 64 bits: the untyped client cannot send it
            assert not fits_server
            return
        assert (seen[0] == "ok") == fits_server, (TYPES[index], wire, seen)
        if fits_server and fits_client:
            assert seen[1] == to_wire(normal(mod, t, v)), (wire, seen)
        if fits_client:
            assert fits_server, (v, wire)  # what a typed client sends, a server takes


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_async_client_accepts_exactly_what_the_blocking_one_does(
    oracle: tuple[Any, str], data: st.DataObject
) -> None:
    mod, url = oracle
    index, v = data.draw(cases(mod))
    method = f"m{index}"

    async def main() -> tuple[str, Any]:
        async with mod.AsyncOracleClient(url) as client:
            try:
                return "ok", await getattr(client, method)(v)
            except ParamError as exc:
                return "refused", str(exc)

    with mod.OracleClient(url) as client:
        want = verdict(lambda: getattr(client, method)(v))
    assert asyncio.run(asyncio.wait_for(main(), 20)) == want


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_server_returns_exactly_what_the_oracle_says_fits(
    oracle: tuple[Any, str], data: st.DataObject
) -> None:
    mod, url = oracle
    index, v = data.draw(cases(mod))
    t = parse(TYPES[index])
    fits_handler = fits(mod, t, v, wire=False)  # a handler returns Python values
    RETURNED[0] = v
    with mod.OracleClient(url) as client, RPC(url) as rpc:
        for call in (
            lambda: getattr(client, f"r{index}")(),
            lambda: list(getattr(client, f"s{index}")()),
            lambda: getattr(rpc, f"r{index}")(),
        ):
            try:
                got: Any = ("ok", call())
            except RPCRuntimeError as exc:
                got = (exc.exception, str(exc))
            if fits_handler:
                want = normal(mod, t, v)
                assert got[0] == "ok", (TYPES[index], v, got)
                assert got[1] in (want, [want], to_wire(want)), (TYPES[index], v, got)
            else:
                assert got[0] == "ValidationError", (TYPES[index], v, got)
                assert got[1].startswith(("ValidationError: r", "ValidationError: s")), got
