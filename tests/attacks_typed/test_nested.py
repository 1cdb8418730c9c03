"""Point 1 for nested types: lists, maps, optionals, enums and structs inside each other.
Hypothesis draws a declared type and a value shaped like it, with wrong leaves mixed in;
the untyped client sends it by position and by name, and the oracle (written from the
type table in the README) says whether it fits and what the handler must receive:
floats widened, enum members, struct defaults filled in. A misfit is 402 naming the
method and the parameter."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pymprpc.client import RPC
from pymprpc.errors import LocalProtocolError, ParamError

from .kit import new_server, package, served

TYPES = [
    "list<int>",
    "list<list<int>>",
    "map<str, list<float>>",
    "list<int?>",
    "list<int>?",
    "map<str, Pt?>",
    "list<Color>",
    "map<str, map<str, bool>>",
    "list<Pt>",
    "Pt?",
    "list<bytes>",
    "map<str, str?>",
]
IDL = (
    "enum Color { RED = 1; GREEN = 2; }\n"
    "struct Pt { x: float; y: int = 0; c: Color = Color.RED; }\n"
    "service Nest {\n"
    + "".join(f"    def m{i}(v: {t}) -> str;\n" for i, t in enumerate(TYPES))
    + "}\n"
)
I64_MIN, U64_MAX = -(2**63), 2**64 - 1


def parse(t: str) -> Any:
    """'map<str, list<int>>?' -> ('opt', ('map', ('list', 'int')))."""
    t = t.strip()
    if t.endswith("?"):
        return ("opt", parse(t[:-1]))
    if t.startswith("list<"):
        return ("list", parse(t[5:-1]))
    if t.startswith("map<str,"):
        return ("map", parse(t[8:-1]))
    return t


def fits(t: Any, v: Any) -> bool:
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return v is None or fits(inner, v)
        if kind == "list":
            return type(v) is list and all(fits(inner, x) for x in v)
        return type(v) is dict and all(type(k) is str and fits(inner, x) for k, x in v.items())
    if t == "int":
        return type(v) is int and I64_MIN <= v <= U64_MAX
    if t == "float":
        return type(v) is float or fits("int", v)
    if t == "bool":
        return type(v) is bool
    if t == "str":
        return type(v) is str
    if t == "bytes":
        return type(v) is bytes
    if t == "Color":
        return type(v) is int and v in (1, 2)
    assert t == "Pt"
    return (
        type(v) is dict
        and "x" in v
        and fits("float", v["x"])
        and fits("int", v.get("y", 0))
        and fits("Color", v.get("c", 1))
    )


def received(t: Any, v: Any) -> Any:
    """What the handler must get for a value that fits, normalised as `normal` shows it."""
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return None if v is None else received(inner, v)
        if kind == "list":
            return [received(inner, x) for x in v]
        return {k: received(inner, x) for k, x in v.items()}
    if t == "float":
        return float(v)
    if t == "Color":
        return ("Color", v)
    if t == "Pt":
        return {"Pt": {"x": float(v["x"]), "y": v.get("y", 0), "c": ("Color", v.get("c", 1))}}
    return v


def normal(v: Any) -> Any:
    """The handler's view of its argument, in the form `received` predicts."""
    if isinstance(v, enum.IntEnum):
        return (type(v).__name__, int(v))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {
            type(v).__name__: {f.name: normal(getattr(v, f.name)) for f in dataclasses.fields(v)}
        }
    if isinstance(v, list):
        return [normal(x) for x in v]
    if isinstance(v, dict):
        return {k: normal(x) for k, x in v.items()}
    return v


wrong_leaf = st.one_of(
    st.sampled_from([True, False, 0, 1, 2, 3, -1, 1.5, 2.0, "", "x", b"", b"x", None]),
    st.integers(I64_MIN, U64_MAX),
    st.floats(allow_nan=False),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 2), max_size=2),
)


def value_for(t: Any) -> st.SearchStrategy[Any]:
    """Mostly values of type `t`, sometimes a wrong leaf anywhere inside."""
    return st.one_of(shaped(t), shaped(t), shaped(t), wrong_leaf)


def shaped(t: Any) -> st.SearchStrategy[Any]:
    if isinstance(t, tuple):
        kind, inner = t
        if kind == "opt":
            return st.one_of(st.none(), st.deferred(lambda: value_for(inner)))
        if kind == "list":
            return st.lists(st.deferred(lambda: value_for(inner)), max_size=3)
        return st.dictionaries(
            st.text(max_size=3), st.deferred(lambda: value_for(inner)), max_size=3
        )
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "int": st.one_of(st.sampled_from([I64_MIN, U64_MAX, 2**63]), st.integers(-5, 5)),
        "float": st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)),
        "bool": st.booleans(),
        "str": st.text(max_size=3),
        "bytes": st.binary(max_size=3),
        "Color": st.sampled_from([1, 2]),
    }
    if t in scalars:
        return scalars[t]
    assert t == "Pt"
    return st.fixed_dictionaries(
        {"x": value_for("float")},
        optional={"y": value_for("int"), "c": value_for("Color"), "z": st.integers(0, 3)},
    )


@pytest.fixture(scope="module")
def nest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with package(IDL, "nest_attack", tmp_path_factory.mktemp("nest")) as mod:
        methods = {f"m{i}": (lambda self, v: repr(normal(v))) for i in range(len(TYPES))}
        server = new_server()
        mod.register_nest(server, type("N", (mod.NestServicer,), methods)())
        with served(server) as running:
            yield running.url


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[int, Any]:
    index = draw(st.integers(0, len(TYPES) - 1))
    return index, draw(value_for(parse(TYPES[index])))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=typed_values())
def test_nested_values_are_checked_by_position_and_by_name(
    nest: str, case: tuple[int, Any]
) -> None:
    index, v = case
    t = parse(TYPES[index])
    with RPC(nest) as rpc:
        outcomes = []
        for send in (lambda: rpc.call(f"m{index}", v), lambda: rpc.call(f"m{index}", v=v)):
            try:
                outcomes.append(("ok", send()))
            except ParamError as exc:
                outcomes.append(("param", str(exc)))
            except LocalProtocolError:  # MessagePack cannot carry it (not drawn here)
                raise
    assert outcomes[0][0] == outcomes[1][0], outcomes
    event("fits" if fits(t, v) else "misfit")
    if fits(t, v):
        assert outcomes[0] == ("ok", repr(received(t, v))), (TYPES[index], v, outcomes)
        assert outcomes[1] == outcomes[0]
    else:
        assert outcomes[0][0] == "param", (TYPES[index], v, outcomes)
        assert outcomes[0][1].startswith(f"m{index}(): v"), outcomes
