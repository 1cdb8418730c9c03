"""Review 17's values and handlers: honest values of every shape, liars, values whose
iteration re-enters pymprpc's encoder, bytes subclasses with `__buffer__` (3.12+)."""

from __future__ import annotations

import asyncio
import collections
import enum
from typing import Any, NamedTuple

OTHER: dict[str, str] = {}  # url of a second server, for values that call it


class Point(NamedTuple):
    x: Any
    y: Any


Pair = collections.namedtuple("Pair", "a b")


class Color(enum.IntEnum):
    RED = 1
    BIG = 2**64 - 1


class Name(enum.StrEnum):
    A = "a"
    E = "é"


class HonestList(list):  # type: ignore[type-arg]
    pass


class HonestTuple(tuple):  # type: ignore[type-arg]
    pass


class HonestDict(dict):  # type: ignore[type-arg]
    pass


class LyingStr(str):
    def __str__(self) -> str:
        return "not stored"


class LyingInt(int):
    def __int__(self) -> int:
        return -1

    def __index__(self) -> int:
        return -2


class LyingFloat(float):
    def __float__(self) -> float:
        return 0.0


class LyingBytes(bytes):
    def __bytes__(self) -> bytes:
        return b"not stored"


class BufferBytes(bytes):
    """A bytes subclass whose `__buffer__` (PEP 688, 3.12+) shows other bytes."""

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(b"LIE")


class BufferBytearray(bytearray):
    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(b"LIE")


class ShortList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter(list.__getitem__(self, slice(0, 1)))


class Endless(list):  # type: ignore[type-arg]
    """Iterates up to a cap (millions of items): "endless" for any sane message size."""

    cap = 3_000_000

    def __iter__(self) -> Any:
        i = 0
        while i < self.cap:
            yield i
            i += 1


class RaisesInIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("boom in __iter__")


class NotifiesOther(list):  # type: ignore[type-arg]
    """Its iteration sends a notification with a blocking client to another server (a
    value that reports being read, or fetches its items lazily)."""

    def __iter__(self) -> Any:
        from pymprpc import RPC

        with RPC(OTHER["url"], timeout=5) as other:
            other.notify("note", [1, 2, 3])
        return iter([1, 2])


class CallsOther(list):  # type: ignore[type-arg]
    """Its items are fetched, as it is iterated, from another server."""

    def __iter__(self) -> Any:
        from pymprpc import RPC

        with RPC(OTHER["url"], timeout=5) as other:
            return iter([other.aecho(i) for i in range(2)])


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def honest_values() -> list[Any]:
    """Honest values of every shape (exact types, subclasses, namedtuples, enums,
    bytes-likes, range edges, non-finite floats, tuple keys, empties)."""
    return [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        2**63,
        -1,
        1.5,
        float("inf"),
        float("-inf"),
        float("nan"),
        -0.0,
        "",
        "é" * 40,
        "x" * 70_000,
        b"",
        b"\x00" * 300,
        bytearray(b"ba"),
        memoryview(b"mv"),
        [],
        (),
        {},
        [[], {}, ()],
        (1, (2, (3, ()))),
        HonestList([1, HonestList([2])]),
        HonestTuple((1, 2)),
        HonestDict(a=HonestDict(b=[1])),
        Point(1, Point(2, 3)),
        Pair("a", b"b"),
        Color.RED,
        Color.BIG,
        Name.A,
        Name.E,
        {Name.A: Color.RED, Color.BIG: Name.E},
        {(1, 2): "tuple key", (): "empty tuple key", ((1,), "a"): {"x": (1,)}},
        {1: [1.0, "1", b"1"], -1: None, 2.5: True},
        LyingStr("stored"),
        LyingInt(7),
        LyingFloat(0.25),
        LyingBytes(b"stored"),
        [LyingStr("s"), {LyingStr("k"): LyingInt(3)}],
        list(range(20)),
        {str(i): i for i in range(20)},
    ]


async def aecho(value: Any) -> Any:
    return value


async def ping() -> str:
    return "pong"


async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow done"


async def note(value: Any) -> None:
    return None


async def kind(name: str) -> Any:
    return KINDS[name]()


async def kind_stream(name: str) -> Any:
    yield 1
    yield KINDS[name]()
    yield 2


KINDS: dict[str, Any] = {
    "notifies_other": lambda: {"a": [NotifiesOther([0])], "b": "after"},
    "calls_other": lambda: {"a": CallsOther([0]), "b": "after"},
    "raises_in_iter": lambda: [RaisesInIter([1])],
    "endless": lambda: {"a": Endless([0])},
    "buffer_bytes": lambda: [BufferBytes(b"stored"), BufferBytearray(b"stored")],
    "honest": honest_values,
}
