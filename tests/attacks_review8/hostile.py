"""Review8's hostile handlers, at module level (the process pool needs them importable)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import weakref
from typing import Any


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ fails")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ fails")


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of an argument fails")


class HugeRepr:
    size = 10_000_000

    def __repr__(self) -> str:
        return "r" * self.size


class LargeRepr(HugeRepr):
    size = 1_000_000


class MetaRaises(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no __name__")

    @property
    def __module__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no __module__")


class NamelessError(Exception, metaclass=MetaRaises):
    pass


class MetaNonStr(type):
    @property
    def __name__(cls) -> Any:  # type: ignore[override]
        return 42

    @property
    def __module__(cls) -> Any:  # type: ignore[override]
        return b"bytes"


class NonStrNameError(Exception, metaclass=MetaNonStr):
    pass


OddNameError = type("odd\nname ✓", (Exception,), {"__module__": "\n\x00mod é"})
OddNameError.__qualname__ = "\x00q ✓"
EmptyNameError = type("", (Exception,), {"__module__": ""})


class Custom(BaseException):
    pass


def _cyclic() -> BaseException:
    a = ValueError("a")
    b = KeyError("b")
    a.__cause__ = b
    b.__cause__ = a
    b.__context__ = a
    return a


def _deep(n: int = 10_000) -> BaseException:
    exc: BaseException = ValueError("bottom")
    for i in range(n):
        top = ValueError(f"level {i}")
        top.__cause__ = exc
        exc = top
    return exc


class Big:
    """A large local held by a raising frame (freed once the call is over)."""

    def __init__(self) -> None:
        self.data = bytearray(20_000_000)


BIG_REFS: list[weakref.ref[Big]] = []

RAISES: dict[str, Any] = {
    "bad_str": lambda: BadStr("x"),
    "args_repr_raises": lambda: ValueError(BadRepr(), BadRepr()),
    "arg_repr_raises": lambda: ValueError(BadRepr()),
    "args_repr_huge": lambda: ValueError(HugeRepr(), 1),
    "args_repr_large": lambda: ValueError(LargeRepr(), 1),
    "huge_message": lambda: ValueError("m" * 50_000_000),
    "message_2mb": lambda: ValueError("m" * 2_000_000),
    "nameless": lambda: NamelessError("x"),
    "nonstr_name": lambda: NonStrNameError("x"),
    "odd_name": lambda: OddNameError("x\x00\n"),
    "empty_name": lambda: EmptyNameError(),
    "cyclic_cause": _cyclic,
    "deep_cause": _deep,
    "system_exit": lambda: SystemExit(3),
    "keyboard_interrupt": lambda: KeyboardInterrupt(),
    "generator_exit": lambda: GeneratorExit(),
    "custom_base": lambda: Custom("custom"),
    "cancelled": lambda: asyncio.CancelledError(),
    "stop_iteration": lambda: StopIteration(5),
    "stop_async_iteration": lambda: StopAsyncIteration(),
}


def raiser(kind: str) -> Any:
    if kind == "big_locals":
        big = Big()
        BIG_REFS.append(weakref.ref(big))
        raise ValueError("with a big local")
    raise RAISES[kind]()


async def araiser(kind: str) -> Any:
    return raiser(kind)


async def sraiser(kind: str) -> Any:
    yield 1
    raiser(kind)


def ping() -> str:
    return "pong"


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def exiter(how: str) -> None:
    if how == "sys_exit":
        sys.exit(0)
    os._exit(7)


def pid() -> int:
    return os.getpid()


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")

    def __len__(self) -> int:
        raise RuntimeError("__len__")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__")

    def __bool__(self) -> bool:
        raise RuntimeError("__bool__")

    def __index__(self) -> int:
        raise RuntimeError("__index__")

    def __float__(self) -> float:
        raise RuntimeError("__float__")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__")

    def __reduce__(self) -> Any:
        raise RuntimeError("__reduce__")


class ShortList(list):  # type: ignore[type-arg]
    """Says it has three items, iterates one."""

    def __iter__(self) -> Any:
        return iter([1])


class LongList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter(range(5))


class RaisingIterList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("list __iter__")

    def __len__(self) -> int:
        raise RuntimeError("list __len__")

    def __repr__(self) -> str:
        raise RuntimeError("list __repr__")


class LyingDict(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 3

    def items(self) -> Any:
        return [("k", 1)]


class RaisingItemsDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("dict items")

    def __iter__(self) -> Any:
        raise RuntimeError("dict __iter__")

    def __len__(self) -> int:
        raise RuntimeError("dict __len__")


class RaisingInt(int):
    def __index__(self) -> int:
        raise RuntimeError("int __index__")

    def __int__(self) -> int:
        raise RuntimeError("int __int__")

    def __repr__(self) -> str:
        raise RuntimeError("int __repr__")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("int __eq__")

    __hash__ = int.__hash__


class RaisingStr(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        raise RuntimeError("str encode")

    def __len__(self) -> int:
        raise RuntimeError("str __len__")

    def __str__(self) -> str:
        raise RuntimeError("str __str__")

    def __repr__(self) -> str:
        raise RuntimeError("str __repr__")


class RaisingBytes(bytes):
    def __len__(self) -> int:
        raise RuntimeError("bytes __len__")

    def __bytes__(self) -> bytes:
        raise RuntimeError("bytes __bytes__")


class DelRaises(list):  # type: ignore[type-arg]
    def __del__(self) -> None:
        raise RuntimeError("__del__ of a result")


class AsyncIter:
    def __aiter__(self) -> AsyncIter:
        return self

    async def __anext__(self) -> int:
        raise StopAsyncIteration


def _recursive_list() -> Any:
    a: list[Any] = [1]
    a.append(a)
    return a


def _recursive_dict() -> Any:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


def _nested(depth: int) -> Any:
    v: Any = []
    for _ in range(depth):
        v = [v]
    return v


def _coro() -> Any:
    async def inner() -> int:
        return 7

    return inner()


def _sync_gen() -> Any:
    yield 1


RESULTS: dict[str, Any] = {
    "raising_eq": lambda: RaisingEq(),
    "raising_eq_in_list": lambda: [1, RaisingEq(), {1, 2}],
    "short_list": lambda: ShortList([1, 2, 3]),
    "long_list": lambda: LongList([1]),
    "short_list_nested": lambda: {"a": ShortList([1, 2, 3]), "b": "tail"},
    "raising_iter_list": lambda: RaisingIterList([1, 2]),
    "raising_iter_list_and_set": lambda: [RaisingIterList([1]), {1}],
    "lying_dict": lambda: LyingDict(a=1),
    "raising_items_dict": lambda: RaisingItemsDict(a=1),
    "raising_int": lambda: RaisingInt(5),
    "raising_int_and_set": lambda: [RaisingInt(5), {1}],
    "raising_str": lambda: RaisingStr("abc"),
    "raising_str_and_set": lambda: [RaisingStr("abc"), {1}],
    "raising_bytes": lambda: RaisingBytes(b"abc"),
    "non_str_keys": lambda: {1: "a", None: 2, (1, 2): 3, b"k": 4, 1.5: 5},
    "recursive_list": _recursive_list,
    "recursive_dict": _recursive_dict,
    "nested_1000": lambda: _nested(1000),
    "nested_1100": lambda: _nested(1100),
    "nested_100000": lambda: _nested(100_000),
    "set": lambda: {1, 2},
    "object": lambda: object(),
    "del_raises": lambda: DelRaises([1]),
    "coroutine": _coro,
    "sync_generator": _sync_gen,
    "async_iterator": lambda: AsyncIter(),
    "huge_under": lambda: b"x" * (1_000_000 - 200),
    "huge_over": lambda: b"x" * 1_000_001,
    "huge_str_over": lambda: "é" * 600_000,
    "huge_list_over": lambda: [1] * 1_000_001,
}


def result(kind: str) -> Any:
    return RESULTS[kind]()


async def aresult(kind: str) -> Any:
    return RESULTS[kind]()


async def sresult(kind: str) -> Any:
    yield 1
    yield RESULTS[kind]()
    yield 2


async def forever() -> None:
    await asyncio.Event().wait()


async def stubborn() -> None:
    """Swallows every cancellation."""
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


def block(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def close_loop() -> str:
    asyncio.get_event_loop().close()
    return "closed"


async def aclose_loop() -> str:
    asyncio.get_running_loop().close()
    return "closed"


async def stop_loop() -> str:
    asyncio.get_running_loop().stop()
    return "stopped"


def stop_loop_inline() -> str:
    asyncio.get_event_loop().stop()
    return "stopped"


async def cancel_self() -> str:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
    return "not cancelled"


async def cancel_self_uncaught() -> str:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    return "returned after cancel()"


async def ignores_exit(n: int) -> Any:
    """An async generator that keeps yielding when closed."""
    try:
        for i in range(n):
            yield i
            await asyncio.sleep(0.01)
    finally:
        yield -1


async def close_raises(n: int) -> Any:
    try:
        for i in range(n):
            yield i
            await asyncio.sleep(0.01)
    finally:
        raise ValueError("aclose raises")


async def close_hangs(n: int) -> Any:
    try:
        for i in range(n):
            yield i
            await asyncio.sleep(0.01)
    finally:
        await asyncio.Event().wait()


async def close_hangs_stubborn(n: int) -> Any:
    try:
        for i in range(n):
            yield i
            await asyncio.sleep(0.01)
    finally:
        await stubborn()


def thread_raises_in_own_thread() -> str:
    import threading

    def boom() -> None:
        raise RuntimeError("own thread")

    t = threading.Thread(target=boom)
    t.start()
    t.join()
    return "started"


class NeedsTwo(Exception):
    """Cannot be unpickled: __init__ takes two arguments, args holds one."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class ReduceRaises(Exception):
    def __reduce__(self) -> Any:
        raise RuntimeError("exception __reduce__")


class ArgsProperty(Exception):
    @property  # type: ignore[override]
    def args(self) -> Any:
        raise RuntimeError("args")


class ClassProperty(Exception):
    @property  # type: ignore[override]
    def __class__(self) -> Any:
        raise RuntimeError("__class__")


class MetaModuleRaises(type):
    @property
    def __module__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no __module__")


class ModuleRaisesError(Exception, metaclass=MetaModuleRaises):
    pass


class MetaNameRaises(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("no __name__")


class NameRaisesError(Exception, metaclass=MetaNameRaises):
    pass


class NameStr(str):
    def __str__(self) -> str:
        raise RuntimeError("name __str__")

    def __len__(self) -> int:
        raise RuntimeError("name __len__")


class MetaStrSubclassName(type):
    @property
    def __name__(cls) -> Any:  # type: ignore[override]
        return NameStr("Sneaky")


class StrSubclassNameError(Exception, metaclass=MetaStrSubclassName):
    pass


def _notes(notes: Any) -> BaseException:
    exc = ValueError("with notes")
    exc.__notes__ = notes
    return exc


def _group(n: int) -> BaseException:
    exc: BaseException = ValueError("leaf")
    for _ in range(n):
        exc = ExceptionGroup("g", [exc, BadStr()])
    return exc


RAISES.update(
    {
        "needs_two": lambda: NeedsTwo("a", "b"),
        "reduce_raises": lambda: ReduceRaises("r"),
        "args_property": lambda: ArgsProperty("x"),
        "class_property": lambda: ClassProperty("x"),
        "module_raises": lambda: ModuleRaisesError("x"),
        "name_raises": lambda: NameRaisesError("x"),
        "str_subclass_name": lambda: StrSubclassNameError("x"),
        "notes_bad_repr": lambda: _notes([BadRepr(), BadStr()]),
        "notes_not_list": lambda: _notes(42),
        "group_deep": lambda: _group(2000),
    }
)


CANCELLED: list[str] = []


async def watch_cancel(tag: str) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        CANCELLED.append(tag)
        raise
