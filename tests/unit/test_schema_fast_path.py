"""Signature's precomputed checks agree with the full decoding path on any input."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pymprpc.errors import ParamError
from pymprpc.schema import _NOT_EXACT as NOT_EXACT
from pymprpc.schema import (
    ANY,
    BOOL,
    BYTES,
    FLOAT,
    INT,
    INT_MAX,
    INT_MIN,
    NONE,
    STR,
    List,
    Param,
    Schema,
    Signature,
    ValidationError,
)
from pymprpc.schema import _exact_type as schema_exact

PRIMITIVES = [ANY, BOOL, BYTES, FLOAT, INT, NONE, STR]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def reference(params: list[Schema[Any]], args: list[Any]) -> dict[str, Any] | str:
    """What decoding each value on its own gives (or the error it raises)."""
    out = {}
    for i, (schema, value) in enumerate(zip(params, args, strict=True)):
        try:
            out[f"p{i}"] = schema.decode(value, f"p{i}")
        except ValidationError as exc:
            return str(exc)
    return out


@given(
    st.lists(st.sampled_from(PRIMITIVES), max_size=4).flatmap(
        lambda schemas: st.tuples(
            st.just(schemas), st.lists(values, min_size=len(schemas), max_size=len(schemas))
        )
    )
)
def test_decode_args_agrees_with_each_schema(case: tuple[list[Schema[Any]], list[Any]]) -> None:
    schemas, args = case
    sig = Signature(tuple(Param(f"p{i}", s) for i, s in enumerate(schemas)), ANY)
    try:
        got: dict[str, Any] | str = sig.decode_args(args, {})
    except ValidationError as exc:
        got = str(exc)
    want = reference(schemas, args)
    assert got == want
    if isinstance(got, dict) and isinstance(want, dict):
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@given(st.lists(st.tuples(st.sampled_from(PRIMITIVES), values), max_size=4))
def test_encode_args_agrees_with_each_schema(pairs: list[tuple[Schema[Any], Any]]) -> None:
    sig = Signature(tuple(Param(f"p{i}", s) for i, (s, _) in enumerate(pairs)), ANY)
    try:
        want: Any = [s.encode(v, f"p{i}") for i, (s, v) in enumerate(pairs)]
    except ValidationError as exc:
        want = f"(): {exc}"
    try:
        got: Any = sig.encode_args(*(v for _, v in pairs))
    except ParamError as exc:
        got = str(exc)
    assert got == want
    if isinstance(got, list):
        assert [type(v) for v in got] == [type(v) for v in want]


def reference_fits(schemas: list[Schema[Any]], args: list[Any]) -> bool:
    """`Signature.fits` as first written: a loop over (exact type, value) pairs."""
    exact = [schema_exact(s) for s in schemas]
    if any(k is NOT_EXACT for k in exact) or len(args) != len(exact):
        return False
    for kind, value in zip(exact, args, strict=True):
        if kind is not None and type(value) is not kind:
            return False
        if kind is int and not INT_MIN <= value <= INT_MAX:
            return False
    return True


# Ints at and past the 64-bit edges, often: where the range checks decide.
edges = st.sampled_from([INT_MIN - 1, INT_MIN, -1, 0, INT_MAX, INT_MAX + 1, 2**70, True])
wide_values = st.one_of(values, edges, st.integers(-(2**70), 2**70))
# Past _UNROLL_MAX parameters the checks are a loop rather than compiled code: both kinds.
many_schemas = st.lists(st.sampled_from([*PRIMITIVES, List(INT)]), max_size=20)


def draw_args(data: st.DataObject, count: int) -> list[Any]:
    """Mostly `count` values (where the types decide), sometimes one more or fewer."""
    size = data.draw(st.sampled_from([count] * 4 + [max(0, count - 1), count + 1]))
    return data.draw(st.lists(wide_values, min_size=size, max_size=size))


@settings(max_examples=400)
@given(many_schemas, st.data())
def test_compiled_fits_agrees_with_the_loop(
    schemas: list[Schema[Any]], data: st.DataObject
) -> None:
    sig = Signature(tuple(Param(f"p{i}", s) for i, s in enumerate(schemas)), ANY)
    args = draw_args(data, len(schemas))
    assert sig.fits(args) is reference_fits(schemas, args)
    assert sig.fits(tuple(args)) is reference_fits(schemas, args)


@settings(max_examples=400)
@given(many_schemas, st.data())
def test_compiled_wire_args_agrees_with_encode_args(
    schemas: list[Schema[Any]], data: st.DataObject
) -> None:
    sig = Signature(tuple(Param(f"p{i}", s) for i, s in enumerate(schemas)), ANY)
    args = tuple(draw_args(data, len(schemas)))
    try:
        want: Any = sig.encode_args(*args)
    except ParamError as exc:
        want = (type(exc).__name__, str(exc))
    try:
        got: Any = sig.wire_args(args)
    except ParamError as exc:
        assert want == (type(exc).__name__, str(exc))
        return
    # The arguments themselves (no copy) when they go out as they are, else the list.
    assert got is args or type(got) is list
    assert list(got) == want


@settings(max_examples=400)
@given(many_schemas, st.data())
def test_fits_unpacked_agrees_with_fits_on_what_msgpack_decodes(
    schemas: list[Schema[Any]], data: st.DataObject
) -> None:
    # The server's fast lane checks values MessagePack decoded without the int range
    # test: for anything MessagePack can carry, the answer must be `fits`'s.
    sig = Signature(tuple(Param(f"p{i}", s) for i, s in enumerate(schemas)), ANY)
    try:
        packed = msgpack.packb(draw_args(data, len(schemas)))
    except OverflowError:  # no peer can send it
        assume(False)
    decoded = msgpack.unpackb(packed)
    assert sig._fits_unpacked(decoded) is sig.fits(decoded)


@settings(max_examples=400)
@given(many_schemas, st.data())
def test_unranged_wire_args_then_unsendable_agree_with_encode_args(
    schemas: list[Schema[Any]], data: st.DataObject
) -> None:
    # The async client's `_wire_args` leaves an int out of range to the packer; the
    # call then raises what `unsendable` says. Together: what `encode_args` gives.
    sig = Signature(tuple(Param(f"p{i}", s) for i, s in enumerate(schemas)), ANY)
    args = tuple(draw_args(data, len(schemas)))
    try:
        want: Any = sig.encode_args(*args, method="x.m")
    except ParamError as exc:
        want = str(exc)
    else:
        try:
            msgpack.packb(want)
        except OverflowError:  # inside an `any` value, which encode_args does not check
            want = str(sig.unsendable(want, "x.m"))
    try:
        try:
            wire = sig._wire_args(args)
        except ParamError:  # again, naming the method as called (as AsyncRPC._call does)
            wire = sig.encode_args(*args, method="x.m")
        msgpack.packb(list(wire))
        got: Any = list(wire)
    except ParamError as exc:
        got = str(exc)
    except (OverflowError, TypeError, ValueError):
        error = sig.unsendable(wire, "x.m")
        assert error is not None
        got = str(error)
    assert got == want


def test_compiled_checks_hold_no_names_from_the_schema() -> None:
    # Parameter names are what a user (an IDL) chose: none may reach the compiled source.
    odd = ["args", "f", "MIN", "k0", "a0", "return", "x\nimport os", "encode"]
    sig = Signature(tuple(Param(n, INT) for n in odd), INT)
    assert sig.fits(list(range(len(odd))))
    assert not sig.fits([*range(len(odd) - 1), 2**64])
    assert sig.wire_args(tuple(range(len(odd)))) == tuple(range(len(odd)))


# -- the server's binding of typed calls (Method.bind) -----------------------------------

bind_values = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=3), st.none(), st.booleans())


def make_function(names: list[str], defaults: int) -> Any:
    """A function with parameters `names` (the last `defaults` of them with a default)
    returning what it was called with, by name."""
    params = [f"{n}=None" if i >= len(names) - defaults else n for i, n in enumerate(names)]
    namespace: dict[str, Any] = {}
    body = ", ".join(f"{n!r}: {n}" for n in names)
    exec(f"def f({', '.join(params)}):\n    return {{{body}}}", namespace)
    return namespace["f"]


def outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared as type and text
        return (type(exc).__name__, str(exc))


FITTING = {
    INT: st.integers(-(2**64), 2**65),
    STR: st.text(max_size=3),
    BOOL: st.booleans(),
    ANY: bind_values,
    NONE: st.none(),
    FLOAT: st.floats(allow_nan=False) | st.integers(0, 9),
}


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(list(FITTING)), max_size=3),
    st.sampled_from(["same", "renamed", "extra", "fewer", "reordered"]),
    st.data(),
)
def test_a_typed_method_binds_by_position_as_decode_args_binds_by_name(
    schemas: list[Schema[Any]], shape: str, data: st.DataObject
) -> None:
    """Checked arguments are passed by position (no map) only where that binds them as
    passing decode_args' map by name does: same results, same errors, whatever the
    function's parameters are called."""
    from pymprpc.server.registry import make_method

    if data.draw(st.integers(0, 3)):  # mostly one value per parameter, of its type
        args = [data.draw(FITTING[schema]) for schema in schemas]
        kwargs: dict[str, Any] = {}
    else:
        args = data.draw(st.lists(bind_values, max_size=4))
        kwargs = data.draw(st.dictionaries(st.sampled_from(["p0", "p1", "q"]), bind_values))
    names = [f"p{i}" for i in range(len(schemas))]
    func_names = {
        "same": names,
        "renamed": [f"x{i}" for i in range(len(names))],
        "extra": [*names, "extra"],
        "fewer": names[:-1],
        "reordered": names[::-1],
    }[shape]
    func = make_function(func_names, 1 if shape == "extra" else 0)
    sig = Signature(tuple(Param(n, s) for n, s in zip(names, schemas, strict=True)), ANY)
    try:
        method = make_method("m", func, key="m", schema=sig)
    except TypeError:
        # Refused at registration exactly when it cannot take the declared parameters by
        # name, as the server passes them (renamed, fewer).
        with pytest.raises(TypeError):
            inspect.signature(func).bind(**dict.fromkeys(names))
        return
    inspect.signature(func).bind(**dict.fromkeys(names))

    def fast() -> Any:
        a, k = method.bind(list(args), dict(kwargs))
        return func(*a, **k)

    def by_name() -> Any:
        try:
            bound = sig.decode_args(list(args), dict(kwargs))
        except ValidationError as exc:
            raise ParamError(f"m(): {exc}") from None
        return func(**bound)

    assert outcome(fast) == outcome(by_name)


@given(st.sampled_from(PRIMITIVES), st.one_of(values, st.integers(-(2**70), 2**70)))
def test_a_typed_result_is_encoded_as_its_schema_encodes_it(
    schema: Schema[Any], value: Any
) -> None:
    """The server's shortcut for results of the declared plain type (returned as they
    are) gives what the schema's `encode` gives, or raises what it raises."""
    from pymprpc.server.dispatch import Dispatcher
    from pymprpc.server.registry import make_method

    async def method() -> Any:
        return value

    sig = Signature((), schema)
    compiled = make_method("m", method, key="m", schema=sig)
    assert outcome(lambda: Dispatcher.encode_result(compiled, value)) == outcome(
        lambda: schema.encode(value, "m()")
    )


def test_a_signature_survives_pickling_with_its_compiled_checks() -> None:
    # Compiled functions cannot be pickled: a Signature is rebuilt from its fields.
    sig = Signature((Param("a", INT), Param("b", STR, "x")), INT, name="m", wire="w")
    back = pickle.loads(pickle.dumps(sig))
    assert (back.name, back.wire, [p.name for p in back.params]) == ("m", "w", ["a", "b"])
    assert back.fits([1, "y"]) and not back.fits([2**64, "y"])
    assert back.wire_args((1, "y")) == (1, "y")
    assert back.decode_args([1], {}) == {"a": 1, "b": "x"}
