"""A container subclass whose length disagrees with its items is refused before it is
sent (msgpack would write a corrupt frame, which a peer cannot tell from a broken
connection), and honest values of every shape still encode as before."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.errors import LocalProtocolError
from pymprpc.protocol.codec import Codec, miscounted
from pymprpc.server.kept_results import _pack as kept_pack

pytestmark = pytest.mark.timeout(60)


class ShortList(list):  # type: ignore[type-arg]
    """Three items stored, one iterated."""

    def __iter__(self) -> Any:
        return iter([self[0]])


class LongTuple(tuple):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter(range(len(self) + 2))


class LyingDict(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 3

    def items(self) -> Any:
        return [("k", 1)]


class HonestList(list):  # type: ignore[type-arg]
    """A subclass that does not lie: encoded as any list."""


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
honest = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.lists(inner, max_size=5).map(HonestList),
        st.dictionaries(st.text(max_size=8), inner, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(honest)
def test_every_honest_value_packs_whole(value: Any) -> None:
    data = msgpack.packb({"ID": "x", "RESULT": value}, use_bin_type=True)
    assert miscounted(data) is None
    assert Codec().encode({"ID": "x", "RESULT": value}) == data


def _liar(kind: str) -> Any:
    return {"short": ShortList([1, 2, 3]), "long": LongTuple((1, 2)), "dict": LyingDict(a=1)}[kind]


@settings(max_examples=200, deadline=None)
@given(honest, st.sampled_from(["short", "long", "dict"]), st.integers(0, 3), st.data())
def test_a_liar_anywhere_is_refused_naming_where(
    around: Any, kind: str, depth: int, data: st.DataObject
) -> None:
    value: Any = _liar(kind)
    path = ""
    for _ in range(depth):
        if data.draw(st.booleans(), label="in a map"):
            value, path = {"k": value, "other": around}, f"['k']{path}"
        else:
            value, path = [around, value], f"[1]{path}"
    with pytest.raises(LocalProtocolError) as info:
        Codec().encode({"ID": "x", "RESULT": value})
    message = str(info.value)
    assert f"RESULT{path} ({type(_liar(kind)).__name__}, len()" in message, message
    assert "send a plain list or dict" in message
    with pytest.raises(Exception, match="disagrees with what iterating it gives"):
        kept_pack(value)


def test_the_reused_checker_recovers_after_a_refusal() -> None:
    for kind in ("short", "long", "dict"):
        with pytest.raises(LocalProtocolError):
            Codec().encode({"ID": "x", "RESULT": [_liar(kind), "tail"]})
        # The next honest message is checked from a clean start.
        assert Codec().encode({"ID": "y", "RESULT": [1, 2]}) == msgpack.packb(
            {"ID": "y", "RESULT": [1, 2]}
        )


@pytest.mark.parametrize("size", [10, 300_000, 3_000_000])
def test_large_honest_payloads_and_liars_in_them(size: int) -> None:
    honest_value = list(range(size))
    data = msgpack.packb(honest_value)
    assert miscounted(data) is None
    assert miscounted(data) is None  # twice: the reused checker is clean
    with pytest.raises(LocalProtocolError, match=r"\[1\] \(ShortList"):
        Codec().encode({"ID": "x", "RESULT": [honest_value, ShortList([1, 2, 3])]})


def test_a_value_as_deep_as_msgpack_reads_still_encodes() -> None:
    value: Any = 1
    for _ in range(1000):
        value = [value]
    data = Codec().encode({"ID": "x", "RESULT": value})
    assert msgpack.unpackb(data)["ID"] == "x"
