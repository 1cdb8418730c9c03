"""Review 18's handlers, at module level so that the process pool can run them."""

from __future__ import annotations

from typing import Any

MAX = 64 * 1024
SEP = b"##PRO-END##"


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


class Opaque:
    """Picklable, not encodable."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    def __hash__(self) -> int:
        return 1


def make(kind: str) -> Any:
    """The value of `kind` (a fresh one each time)."""
    if kind == "object":
        return Opaque()
    if kind == "set":
        return {1, 2}
    if kind == "frozenset":
        return frozenset({1})
    if kind == "big_int":
        return 2**70
    if kind == "int_2_64":
        return 2**64
    if kind == "neg_int":
        return -(2**63) - 1
    if kind == "too_large_str":
        return "x" * (MAX + 10)
    if kind == "too_large_bytes":
        return b"\0" * (MAX + 10)
    if kind == "too_large_list":
        return ["y" * 100] * (MAX // 100 + 10)
    if kind == "too_deep":
        return deep(1100)
    if kind == "bad_key":
        return {(1, Opaque()): 1}
    if kind == "tuple_key":
        return {(1, 2): 1}
    if kind == "nested_object":
        return {"a": [1, 2, {"b": [Opaque()]}]}
    if kind == "complex":
        return 1j
    if kind == "sep_str":
        return {"a": "x" + SEP.decode() + "y"}
    if kind == "sep_bytes":
        return [b"x" + SEP]
    if kind == "sep_key":
        return {SEP.decode(): 1}
    # Sendable.
    if kind == "ok":
        return {"ok": [1, 2.5, "x", b"y", None]}
    if kind == "int_max":
        return [2**64 - 1, -(2**63)]
    if kind == "bulk":
        return b"\1" * (MAX - 200)
    if kind == "deep_ok":
        return deep(500)
    raise ValueError(kind)


UNSENDABLE = [
    "object",
    "set",
    "frozenset",
    "big_int",
    "int_2_64",
    "neg_int",
    "too_large_str",
    "too_large_bytes",
    "too_large_list",
    "too_deep",
    "bad_key",
    "nested_object",
    "complex",
]
SEPARATED = ["sep_str", "sep_bytes", "sep_key"]
SENDABLE = ["ok", "int_max", "bulk", "deep_ok", "tuple_key"]


def plain(kind: str) -> Any:
    """A plain function (process pool by default, or the executor registered)."""
    return make(kind)


async def coro(kind: str) -> Any:
    return make(kind)


def unpicklable() -> Any:
    """A result the process pool cannot bring back."""
    return lambda: 1


def raises_unpicklable() -> Any:
    class Local(Exception):
        pass

    raise Local("local")
