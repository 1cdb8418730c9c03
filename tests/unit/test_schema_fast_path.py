"""Signature's precomputed checks agree with the full decoding path on any input."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pymprpc.schema import (
    ANY,
    BOOL,
    BYTES,
    FLOAT,
    INT,
    NONE,
    STR,
    Param,
    Schema,
    Signature,
    ValidationError,
)

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
        want: Any = [s.encode(v) for s, v in pairs]
    except ValidationError as exc:
        want = str(exc)
    try:
        got: Any = sig.encode_args(*(v for _, v in pairs))
    except ValidationError as exc:
        got = str(exc)
    assert got == want
