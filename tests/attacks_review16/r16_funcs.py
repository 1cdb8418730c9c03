"""Review 16's hostile values and handlers, at module level (the process pool needs them
importable): container subclasses whose len() and iteration disagree, alone and in
combinations that balance each other out in the packed bytes."""

from __future__ import annotations

import os
from typing import Any


class ShortList(list):  # type: ignore[type-arg]
    """Storage of three, iterates one: two items short."""

    def __iter__(self) -> Any:
        return iter(list.__getitem__(self, slice(0, 1)))


class LongList(list):  # type: ignore[type-arg]
    """Storage of one, iterates three: two items long."""

    def __iter__(self) -> Any:
        return iter(["a", "b", "c"])


class ShortDict(dict):  # type: ignore[type-arg]
    """len() 2, items() gives one pair."""

    def __len__(self) -> int:
        return 2

    def items(self) -> Any:
        return [("k", 1)]


class SelfConsistentShort(list):  # type: ignore[type-arg]
    """Storage of three; __len__ and __iter__ agree with each other (one item), not with
    the storage msgpack reads its length from."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Any:
        return iter([1])


class LenRaisesShort(list):  # type: ignore[type-arg]
    """Iterates one of three; __len__ raises."""

    def __iter__(self) -> Any:
        return iter([1])

    def __len__(self) -> int:
        raise RuntimeError("__len__ raises")


class BadReprKey(str):
    """A plain-looking string key whose repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("key __repr__")

    __hash__ = str.__hash__


class BadKeysDict(dict):  # type: ignore[type-arg]
    """items() short by one pair; keys() raises."""

    def __len__(self) -> int:
        return 2

    def items(self) -> Any:
        return [("k", 1)]

    def keys(self) -> Any:
        raise RuntimeError("keys() raises")


class KeysRaiseDict(dict):  # type: ignore[type-arg]
    """Honest len() and items(); keys() raises."""

    def keys(self) -> Any:
        raise RuntimeError("keys() raises")


def balanced() -> Any:
    """A list two short then a list two long: the packed bytes are one valid value."""
    return [ShortList([1, 2, 3]), LongList([0])]


def balanced_dict() -> Any:
    """A map one pair short whose only value is a list two long."""

    class D(dict):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 2

        def items(self) -> Any:
            return [("k", LongList([0]))]

    return D()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


RESULTS: dict[str, Any] = {
    "balanced": balanced,
    "balanced_dict": balanced_dict,
    "keys_raise": lambda: {"a": KeysRaiseDict(b=ShortList([1, 2, 3]))},
    "self_consistent": lambda: {"a": [1, SelfConsistentShort([1, 2, 3])]},
    "len_raises": lambda: {"a": LenRaisesShort([1, 2, 3])},
    "bad_repr_key": lambda: {BadReprKey("k"): ShortList([1, 2, 3])},
    "bad_keys_dict": lambda: {"a": BadKeysDict({"k": 1, "j": 2})},
    "short": lambda: {"a": [0, ShortList([1, 2, 3])]},
    "deep_and_bad_key": lambda: [{BadReprKey("k"): 1}, nested(1021)],
}


def result(kind: str) -> Any:
    return RESULTS[kind]()


async def aresult(kind: str) -> Any:
    return RESULTS[kind]()


async def sresult(kind: str) -> Any:
    yield 1
    yield RESULTS[kind]()
    yield 2


def echo(value: Any) -> Any:
    return value


async def aecho(value: Any) -> Any:
    return value


def pid() -> int:
    return os.getpid()


async def ping() -> str:
    return "pong"


def id_forger() -> Any:
    """Packed before response metadata (RESULT is then not the last value of MESSAGE):
    a list of one that iterates three (the value, the key "ID", a list of three that
    iterates one), so that the reader takes a second, non-string "ID" swallowing the
    METADATA pair (read back it was one whole value, so the first, read-back check let it
    through)."""

    class Swallow(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(["forged"])

    class Spill(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(["value", "ID", Swallow([0, 0, 0])])

    return Spill([0])


async def with_metadata(kind: str) -> Any:
    from pymprpc import current_call

    current_call().set_response_metadata("k", "v")
    return RESULTS[kind]()


async def slow(seconds: float) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "slow done"


RESULTS["id_forger"] = id_forger


RESULTS["deep_1022"] = lambda: nested(1022)
RESULTS["deep_1021"] = lambda: nested(1021)
RESULTS["deep_1023"] = lambda: nested(1023)


# -- nasty liars: each is sent as what it iterates, or fails its own call ------------------


class HugeLenDict(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 2**40


class NegativeLenDict(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return -1


class FloatLenDict(dict):  # type: ignore[type-arg]
    def __len__(self) -> Any:
        return 1.5


class RaisesMidway(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        yield 1
        raise RuntimeError("__iter__ raises mid-way")


class ClearsItself(list):  # type: ignore[type-arg]
    """Empties itself while packed."""

    def __iter__(self) -> Any:
        first = list.__getitem__(self, 0)
        self.clear()
        yield first


class GrowsItself(list):  # type: ignore[type-arg]
    """Appends to itself while packed."""

    def __iter__(self) -> Any:
        for i in range(3):
            self.append(i)
            yield i


class LyingTupleKey(tuple):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter((1,))


class SelfShort(list):  # type: ignore[type-arg]
    """Iterates only itself, for ever deeper (a lying list containing itself)."""

    def __iter__(self) -> Any:
        return iter([self])


class HonestList(list):  # type: ignore[type-arg]
    pass


class HonestDict(dict):  # type: ignore[type-arg]
    pass


def deep_liar(depth: int) -> Any:
    value: Any = ShortList([1, 2, 3])
    for _ in range(depth):
        value = [value]
    return value


NASTY: dict[str, Any] = {
    "huge_len_dict": lambda: {"a": HugeLenDict(k=1)},
    "negative_len_dict": lambda: {"a": NegativeLenDict(k=1)},
    "float_len_dict": lambda: {"a": FloatLenDict(k=1)},
    "raises_midway": lambda: [RaisesMidway([1, 2, 3])],
    "clears_itself": lambda: [ClearsItself([1, 2, 3])],
    "grows_itself": lambda: [GrowsItself([0])],
    "lying_tuple_key": lambda: {LyingTupleKey((1, 2, 3)): "v"},
    "self_short": lambda: SelfShort([0, 0]),
    "deep_liar_400": lambda: deep_liar(400),
    "deep_liar_1000": lambda: deep_liar(1000),
    "many_liars": lambda: {
        str(i): [ShortList([1, 2, 3]), {"x": ShortDict(a=1)}] for i in range(2000)
    },
    "short": lambda: {"a": [0, ShortList([1, 2, 3])]},
    "long": lambda: {"a": LongList([0])},
    "short_dict": lambda: {"a": ShortDict(k=1, j=2)},
}
RESULTS.update(NASTY)


def honest() -> Any:
    import collections
    import enum

    Point = collections.namedtuple("Point", "x y")

    class Num(enum.IntEnum):
        ONE = 1

    class Name(enum.StrEnum):
        A = "a"

    return {
        "list": HonestList([1, 2, [3]]),
        "dict": HonestDict(a=HonestList([1])),
        "tuple": (1, (2, 3)),
        "point": Point(1, 2),
        "enum": [Num.ONE, Name.A],
        "bytes": [b"ab", bytearray(b"cd"), memoryview(b"ef")],
    }


HONEST_EXPECTED = {
    "list": [1, 2, [3]],
    "dict": {"a": [1]},
    "tuple": [1, [2, 3]],
    "point": [1, 2],
    "enum": [1, "a"],
    "bytes": [b"ab", b"cd", b"ef"],
}
RESULTS["honest"] = honest


def big_list(megabytes: int) -> Any:
    """About `megabytes` MB packed: a list of 1 KiB strings."""
    return ["x" * 1000] * (megabytes * 1000)


def big_bytes(megabytes: int) -> bytes:
    return b"y" * (megabytes * 1_000_000)


def sized(size: int) -> Any:
    """A plain list packing to about `size` bytes (around the checker's reuse bound)."""
    return ["z" * 100] * (size // 102)
