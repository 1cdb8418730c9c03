"""Messages are packed from exact types only: a list, tuple or dict subclass goes out as
what iterating it (items()) gives, so no length can disagree with what follows it (msgpack
left to pack subclasses itself wrote a corrupt or silently shifted message for one that
lied); honest values of every shape encode to the same bytes as before."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.errors import LocalProtocolError, ResultLimitError
from pymprpc.protocol.codec import Codec
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
def test_every_honest_value_encodes_as_msgpack_always_did(value: Any) -> None:
    message = {"ID": "x", "RESULT": value}
    assert Codec().encode(message) == msgpack.packb(message, use_bin_type=True)


def _liar(kind: str) -> Any:
    return {"short": ShortList([1, 2, 3]), "long": LongTuple((1, 2)), "dict": LyingDict(a=1)}[kind]


def iterated(value: Any) -> Any:
    """What a reader must get: each list, tuple or dict as what iterating it gives."""
    if isinstance(value, list | tuple):
        return [iterated(item) for item in list(value)]
    if isinstance(value, dict):
        return {k: iterated(v) for k, v in dict(value.items()).items()}
    return value


@settings(max_examples=200, deadline=None)
@given(honest, st.sampled_from(["short", "long", "dict"]), st.integers(0, 3), st.data())
def test_a_liar_anywhere_is_sent_as_what_it_iterates(
    around: Any, kind: str, depth: int, data: st.DataObject
) -> None:
    value: Any = _liar(kind)
    for _ in range(depth):
        if data.draw(st.booleans(), label="in a map"):
            value = {"k": value, "other": around}
        else:
            value = [around, value]
    encoded = Codec().encode({"ID": "x", "RESULT": value})
    # One whole message, every length the count of what follows it.
    assert msgpack.unpackb(encoded, strict_map_key=False) == {
        "ID": "x",
        "RESULT": iterated(value),
    }
    assert msgpack.unpackb(kept_pack(value), strict_map_key=False) == iterated(value)


def test_lies_that_would_balance_out_are_not_shifted() -> None:
    value = [ShortList([1, 2, 3]), LongTuple((9,))]
    assert msgpack.unpackb(Codec().encode({"R": value})) == {"R": [[1], [0, 1, 2]]}


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    def __str__(self) -> str:
        return "not what is stored"


class Raw(bytes):
    def __bytes__(self) -> bytes:
        return b"not what is stored"


class Half(float):
    def __float__(self) -> float:
        return 0.0


class Point(NamedTuple):
    x: int
    y: int


def test_scalar_subclasses_are_sent_as_what_they_store() -> None:
    """As msgpack packed them before (their stored value, not what __str__, __bytes__
    or __float__ say); a namedtuple as an array."""
    value = [Color.RED, Name("stored"), Raw(b"stored"), Half(0.5), Point(1, 2), True]
    assert msgpack.unpackb(Codec().encode({"R": value})) == {
        "R": [1, "stored", b"stored", 0.5, [1, 2], True]
    }


def test_what_cannot_be_encoded_is_still_named() -> None:
    with pytest.raises(LocalProtocolError, match=r"RESULT\['k'\]\[1\] is a set"):
        Codec().encode({"ID": "x", "RESULT": {"k": [1, {2}]}})
    with pytest.raises(LocalProtocolError, match="raised RuntimeError while encoded"):
        Codec().encode({"ID": "x", "RESULT": [RaisingIter([1])]})


class RaisingIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("no")


@pytest.mark.parametrize("size", [10, 300_000, 3_000_000])
def test_large_values_with_liars_in_them(size: int) -> None:
    honest_value = list(range(size))
    value = [honest_value, ShortList([1, 2, 3])]
    encoded = Codec().encode({"ID": "x", "RESULT": value})
    assert msgpack.unpackb(encoded)["RESULT"][1] == [1]


def test_one_level_past_msgpacks_parser_is_refused_as_too_deep() -> None:
    value: Any = []
    for _ in range(1021):
        value = [value]
    Codec().encode({"ID": "x", "RESULT": [value]})  # 1,024 levels in all: read whole
    with pytest.raises(LocalProtocolError, match="nests deeper than MessagePack"):
        Codec().encode({"ID": "x", "RESULT": [[value]]})  # the packer's one more
    kept_pack([[value]])  # 1,024 on its own
    with pytest.raises(ResultLimitError, match="nests deeper than MessagePack"):
        kept_pack([[[value]]])


def test_nothing_of_a_message_is_kept_after_it_is_encoded() -> None:
    """The exact-types packer gives up on a tuple by raising: neither that exception's
    traceback nor the packers keep the message (or a large buffer) afterwards."""
    import gc
    import tracemalloc
    import weakref

    big = HonestList(range(300_000))  # a subclass: the exact packer gives up at once
    ref = weakref.ref(big)
    Codec().encode({"ID": "x", "RESULT": [list(range(300_000)), big, (1, 2)]})
    del big
    assert ref() is None  # freed by reference counting alone
    values = ([list(range(300_000)), (1,)], {"k": b"x" * 8_000_000})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for value in values:
            data = Codec().encode({"ID": "x", "RESULT": value})
            del data
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, kept
