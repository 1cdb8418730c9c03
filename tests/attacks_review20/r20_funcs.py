"""Review 20's handlers, at module level so that the process pool can run them."""

from __future__ import annotations

import dataclasses
from typing import Any

SEP = "##PRO-END##"


def nest(levels: int, kind: str = "list") -> Any:
    value: Any = [] if kind != "dict" else {}
    for i in range(levels - 1):
        if kind == "list":
            value = [value]
        elif kind == "dict":
            value = {"k": value}
        elif kind == "mix":
            value = [value] if i % 2 else {"k": value}
        elif kind == "tuple":
            value = (value,)
    return value


@dataclasses.dataclass
class Node:
    child: Any


class Bin(bytes):
    pass


def make(kind: str, levels: int) -> Any:
    if kind in ("list", "dict", "mix", "tuple"):
        return nest(levels, kind)
    if kind == "wide":
        return [list(range(10))] * 20000 + [nest(levels)]
    if kind == "self":
        x: list[Any] = [1]
        x.append(x)
        return x
    if kind == "selfdict":
        d: dict[str, Any] = {}
        d["d"] = d
        return d
    if kind == "dataclass":
        v: Any = None
        for _ in range(levels):
            v = Node(v)
        return v
    if kind == "bytesub":
        return nest(levels - 1, "list") if False else _wrap(Bin(b"x"), levels - 1)
    if kind == "memoryview":
        return _wrap(memoryview(b"x"), levels - 1)
    if kind == "tuplekey":
        k: Any = 1
        for _ in range(levels - 1):
            k = (k,)
        return {k: 1}
    raise ValueError(kind)


def _wrap(leaf: Any, levels: int) -> Any:
    v = leaf
    for _ in range(levels):
        v = [v]
    return v


def deep(kind: str, levels: int) -> Any:
    return make(kind, levels)


async def adeep(kind: str, levels: int) -> Any:
    return make(kind, levels)


def echo_depth(value: Any) -> int:
    d = 0
    while isinstance(value, list) and value:
        value = value[0]
        d += 1
    return d


def ping() -> str:
    return "pong"


def text(s: str) -> str:
    return s


def raise_value(s: str) -> None:
    raise ValueError(s)


def raise_sep() -> None:
    raise ValueError("boom ##PRO-END##")


def raise_tail(tail: str) -> None:
    raise ValueError("boom " + tail)


class SepError(Exception):
    pass


def raise_custom(tail: str) -> None:
    raise SepError(tail)


async def stream_items(tail: str) -> Any:
    yield 1
    yield "x" + tail
    yield 3


def tail_text(tail: str) -> str:
    return "x" + tail.replace("!", "#")


def deep_meta(levels: int) -> int:
    from pymprpc import current_call

    current_call().set_response_metadata("k", "v" * levels)
    return 1


async def astream_tail(tail: str) -> Any:
    yield 1
    yield "x" + tail.replace("!", "#")
    yield 3


def raise_bang(tail: str) -> None:
    raise ValueError("boom " + tail.replace("!", "#"))


def raise_bang_data(tail: str) -> None:
    from pymprpc.errors import RPCRuntimeError

    raise RPCRuntimeError("boom", data={"d": "x" + tail.replace("!", "#")})


class Lazy:
    """Not encodable here; unpickles as a list nested 1,100 deep."""

    def __reduce__(self) -> Any:
        return (nest, (1100,))


class DeepList(list):  # type: ignore[type-arg]
    pass


def deep2(kind: str, levels: int) -> Any:
    if kind == "lazy":
        return Lazy()
    if kind == "lazy_in_list":
        return [1, [Lazy()]]
    if kind == "listsub":
        v: Any = DeepList()
        for _ in range(levels - 1):
            v = DeepList([v])
        return v
    if kind == "huge":
        return nest(levels)
    if kind == "exc_data":
        from pymprpc.errors import RPCRuntimeError

        raise RPCRuntimeError("deep data", data={"d": nest(levels)})
    if kind == "exc_notdict":
        from pymprpc.errors import RPCRuntimeError

        raise RPCRuntimeError("not a map", data=[1, 2])  # type: ignore[arg-type]
    if kind == "exc_arg":
        raise ValueError(nest(levels))
    return make(kind, levels)


async def adeep2(kind: str, levels: int) -> Any:
    return deep2(kind, levels)


def raise_shallow_data() -> None:
    from pymprpc.errors import RPCRuntimeError

    raise RPCRuntimeError("shallow", data={"d": 1})


def random_with_sep(seed: int, tail_only: bool) -> bytes:
    import random

    rng = random.Random(seed)
    head = bytes(rng.getrandbits(8) for _ in range(3000))
    if tail_only:
        return head + b"##PRO-END"
    return head + SEP.encode() + bytes(rng.getrandbits(8) for _ in range(3000))


async def deep_stream(levels: int) -> Any:
    yield 1
    yield nest(levels)
    yield 3


def meta_deep() -> int:
    from pymprpc import current_call

    current_call().set_response_metadata("k", nest(1100))  # type: ignore[arg-type]
    return 1


async def ameta_deep() -> int:
    return meta_deep()
