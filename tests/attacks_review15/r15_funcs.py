"""Module-level functions the review-15 attacks run in process-pool workers (importable,
so a worker of any origin reaches them by name). They walk values iteratively: any
RecursionError seen by a test is the library's, not theirs."""

from __future__ import annotations

import os
import pickle
import random
import sys
import time
from typing import Any

from pymprpc import current_call


def nested(depth: int, kind: str = "list") -> Any:
    """`depth` containers wrapped around an empty list (lists, maps or alternating)."""
    value: Any = []
    for i in range(depth):
        value = [value] if kind == "list" or (kind == "mix" and i % 2) else {"k": value}
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while value:
        value = value[0] if isinstance(value, list) else value["k"]
        depth += 1
    return depth


def echo(value: Any) -> Any:
    return value


def echo_kw(*, value: Any) -> Any:
    return value


def measure(value: Any) -> int:
    return depth_of(value)


def make(depth: int, kind: str = "list") -> Any:
    return nested(depth, kind)


def tagged(tag: int, depth: int, nap: float = 0.0) -> Any:
    """[tag, a value `depth` deep] after an optional nap (completion order varies)."""
    if nap:
        time.sleep(nap)
    return [tag, nested(depth, "mix")]


def limit() -> int:
    return sys.getrecursionlimit()


def pid() -> int:
    return os.getpid()


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def add(a: Any, b: Any) -> Any:
    return a + b


def size(value: Any) -> int:
    return 1


class Boom(BaseException):
    """A custom BaseException (not an Exception) carrying a payload."""


def raise_kind(kind: str, depth: int) -> Any:
    payload = nested(depth)
    if kind == "SystemExit":
        raise SystemExit(payload)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt(payload)
    if kind == "Boom":
        raise Boom(payload)
    if kind == "GeneratorExit":
        raise GeneratorExit(payload)
    if kind == "ValueError":
        raise ValueError(payload)
    if kind == "recursion":

        def down(n: int) -> int:
            return down(n + 1) + 1

        return down(0)
    if kind == "chain":
        err: BaseException = ValueError("leaf")
        for _ in range(depth):
            try:
                raise ValueError("up") from err
            except ValueError as up:
                err = up
        raise err
    raise AssertionError(kind)


class ReduceRaises:
    def __reduce__(self) -> Any:
        raise RecursionError("from __reduce__")


class ReduceLoops:
    def __reduce__(self) -> Any:
        return self.__reduce__()


class Node:
    def __init__(self, child: Any) -> None:
        self.child = child


class CNode:
    """Its __reduce__ runs the C pickler on its child: C stack per level."""

    def __init__(self, child: Any) -> None:
        self.child = child

    def __reduce__(self) -> Any:
        return (pickle.loads, (pickle.dumps(self.child),))


class Drained:
    """Reduces to the bytes left in its file: a one-shot __reduce__ (a wrapper of a
    file, a socket, an iterator), harmless when a value is pickled once."""

    def __init__(self, data: bytes) -> None:
        import io

        self.fh = io.BytesIO(data)

    def __reduce__(self) -> Any:
        return (bytes, (self.fh.read(),))


def drained(depth: int) -> Any:
    return [Drained(b"payload"), nested(depth)]


def odd_result(kind: str, depth: int) -> Any:
    if kind == "raises":
        return ReduceRaises()
    if kind == "loops":
        return ReduceLoops()
    if kind in ("Node", "CNode"):
        cls = Node if kind == "Node" else CNode
        value: Any = None
        for _ in range(depth):
            value = cls(value)
        return value
    if kind == "bytes_deep":
        return [b"x" * (1 << 20), nested(depth), bytearray(b"y" * (1 << 17))]
    if kind == "tuple":
        out: Any = ()
        for _ in range(depth):
            out = (out,)
        return out
    raise AssertionError(kind)


def ctx_deep(value: Any) -> Any:
    call = current_call()
    call.set_response_metadata("depth", str(depth_of(value)))
    return {"method": call.method, "meta": dict(call.metadata), "value": value}


def sleepy_echo(value: Any, nap: float) -> Any:
    time.sleep(nap)
    return value


def shuffled(tag: int) -> Any:
    time.sleep(random.random() / 200)
    return tag


def same(a: Any, b: Any) -> bool:
    """a == b, iteratively (a deep value's == recurses past the recursion limit)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if type(x) is not type(y) or len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif type(x) is not type(y) or x != y:
            return False
    return True
