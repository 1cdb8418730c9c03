"""`codec.find_too_deep`: where a value nests past a number of levels or contains itself
(what a generated client names in its ParamError when MessagePack refused a call's
arguments for that). Compared with a recursive reference on random values, and on
values far deeper than Python's recursion limit."""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.protocol.codec import MSGPACK_MAX_DEPTH, find_too_deep

values = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3)
        | st.tuples(inner, inner)
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    """Maps and arrays on the deepest path, the value itself counted."""
    if isinstance(value, dict):
        return 1 + max((max(_depth(k), _depth(v)) for k, v in value.items()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(values, st.integers(min_value=1, max_value=8))
def test_reports_exactly_the_values_deeper_than_the_limit(value: Any, levels: int) -> None:
    found = find_too_deep(value, "v", levels)
    if _depth(value) > levels:
        assert found is not None and found.startswith("v")
        assert found.endswith(f"is nested deeper than MessagePack carries ({levels} levels)")
    else:
        assert found is None


@settings(max_examples=100, deadline=None)
@given(values, st.integers(min_value=0, max_value=3))
def test_a_value_containing_itself_is_named(value: Any, at: int) -> None:
    """A list put inside itself `at` levels down is found, whatever else the value holds,
    and a value merely shared (the same list twice, side by side) is not."""
    outer: list[Any] = [value]
    inner = outer
    for _ in range(at):
        inner.append([])
        inner = inner[-1]
    inner.append(outer)
    assert (find_too_deep(outer, "v", 1000) or "").endswith(" contains itself")
    shared = [1, 2]
    assert find_too_deep([shared, shared, {"a": shared}], "v", 10) is None


def test_far_deeper_than_the_recursion_limit() -> None:
    value: list[Any] = []
    tip = value
    for _ in range(sys.getrecursionlimit() * 5):
        tip.append([])
        tip = tip[0]
    found = find_too_deep(value, "item", MSGPACK_MAX_DEPTH - 2)
    assert found is not None and found.startswith("item[0][0][0]")
    assert "more)..." in found and len(found) < 200  # the middle of the path is cut


def test_map_keys_count_and_contain() -> None:
    key = ((((1,),),),)
    assert find_too_deep({key: 1}, "v", 4) == (
        "v key ((((...),),),)[0][0][0] is nested deeper than MessagePack carries (4 levels)"
    )
    deep_key: Any = 1
    for _ in range(sys.getrecursionlimit() + 100):  # repr() of it would raise RecursionError
        deep_key = (deep_key,)
    found = find_too_deep({"x": {deep_key: 1}}, "v", 1022)
    assert found is not None and found.startswith("v['x'] key ((((...),),),)[0]")
    assert find_too_deep({key: 1}, "v", 5) is None
    assert find_too_deep(5, "v", 0) is None
