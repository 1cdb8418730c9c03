"""Handlers for the callables contract attacks, written as a user writes them.

Module-level (importable, picklable) so that a user `ProcessPoolExecutor` can run them
too. Each `where*` handler answers where it ran: the process id, the thread's name and
whether it runs inside the user's own process pool."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

IN_USER_POOL = False


def mark_user_pool() -> None:
    """`ProcessPoolExecutor(initializer=...)`: tells its workers apart from pymprpc's."""
    global IN_USER_POOL
    IN_USER_POOL = True


def here(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "user_pool": IN_USER_POOL,
        "args": list(args),
        "kwargs": kwargs,
    }


# --- plain functions ----------------------------------------------------------------


def where(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Where this call ran."""
    return here(*args, **kwargs)


def whoami(*args: Any) -> str:
    """The method name this call was made under (`current_call()`)."""
    from pymprpc import current_call

    return current_call().method


def add(a: int, b: int = 10) -> int:
    """Add two numbers."""
    return a + b


def kwonly(a: int, *, scale: int = 2) -> int:
    return a * scale


def posonly(a: int, b: int, /) -> list[int]:
    return [a, b]


def varargs(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), dict(sorted(kwargs.items()))]


def strann(a: "int", b: "NotDefinedAnywhere" = None) -> "AlsoUndefined":  # type: ignore[name-defined]  # noqa: F821, UP037
    """Annotations that are strings naming nothing."""
    return [a, b]


def sync_gen(n: int) -> Any:
    yield from range(n)


# --- coroutines and streams -----------------------------------------------------------


async def awhere(*args: Any, **kwargs: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return here(*args, **kwargs)


async def aadd(a: int, b: int = 10) -> int:
    """Add, asynchronously."""
    await asyncio.sleep(0)
    return a + b


async def agen(n: int, start: int = 0) -> AsyncIterator[int]:
    """Count from start."""
    for i in range(n):
        await asyncio.sleep(0)
        yield start + i


# --- decorators -----------------------------------------------------------------------


def logged(f: Callable[..., Any]) -> Callable[..., Any]:
    """A well-behaved decorator (functools.wraps)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def sync_around_async(f: Callable[..., Any]) -> Callable[..., Any]:
    """A sync wrapper around an async def: calling it returns the coroutine."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def async_around_sync(f: Callable[..., Any]) -> Callable[..., Any]:
    """An async wrapper around a plain function (it runs on the event loop)."""

    @functools.wraps(f)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def with_unit(f: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that adds a keyword argument of its own (`unit=`)."""

    @functools.wraps(f)
    def wrapper(*args: Any, unit: str = "", **kwargs: Any) -> str:
        return f"{f(*args, **kwargs)}{unit}"

    return wrapper


@logged
def w_where(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Where this decorated call ran."""
    return here(*args, **kwargs)


@sync_around_async
async def sa_add(a: int, b: int = 10) -> int:
    """Decorated async def behind a sync wrapper."""
    await asyncio.sleep(0)
    return a + b


@async_around_sync
def as_where(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return here(*args, **kwargs)


@with_unit
def u_add(a: int, b: int = 10) -> int:
    """Add, with a unit."""
    return a + b


def sync_around_agen(f: Callable[..., Any]) -> Callable[..., Any]:
    """A sync wrapper around an async generator function: calling it returns the stream."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


@sync_around_agen
async def sg_agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


# --- blocking: a call that holds a pool thread until released --------------------------

EVENTS: dict[str, tuple[threading.Event, threading.Event]] = {}


def _events(key: str) -> tuple[threading.Event, threading.Event]:
    return EVENTS.setdefault(key, (threading.Event(), threading.Event()))


def hold(key: str) -> bool:
    """Runs on a thread until `release(key)` (at most 20 s); says whether it was released."""
    started, released = _events(key)
    started.set()
    return released.wait(20)


def started(key: str) -> bool:
    return _events(key)[0].is_set()


def release(key: str) -> None:
    _events(key)[1].set()


# --- classes --------------------------------------------------------------------------


class Counter:
    """State that must be shared (thread) or per worker (process)."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def bump(self) -> list[int]:
        with self.lock:
            self.n += 1
            return [os.getpid(), self.n]

    def __getstate__(self) -> dict[str, Any]:  # picklable for a user ProcessPoolExecutor
        return {"n": self.n}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.n = state["n"]
        self.lock = threading.Lock()


class Service:
    """A servicer with every kind of method."""

    greeting = "hi"  # not callable: not a method

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def where(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Where a plain method ran."""
        return here(*args, **kwargs)

    def bump(self) -> int:
        with self.lock:
            self.n += 1
            return self.n

    def count(self) -> int:
        return self.n

    async def acount(self) -> int:
        """The counter, from the event loop."""
        await asyncio.sleep(0)
        return self.n

    async def stream(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield self.n + i

    @staticmethod
    def swhere(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return here(*args, **kwargs)

    @classmethod
    def cwhere(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**here(*args, **kwargs), "cls": cls.__name__}

    @staticmethod
    async def sacount() -> str:
        return "static-async"

    @property
    def prop(self) -> int:
        return self.n

    def _private(self) -> str:
        return "private"

    def __getstate__(self) -> dict[str, Any]:
        return {"n": self.n}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.n = state["n"]
        self.lock = threading.Lock()


class SyncCallable:
    """A handler object with dependencies and a plain __call__."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        return {**here(*args, **kwargs), "calls": self.calls}


class AsyncCallable:
    async def __call__(self, a: int, b: int = 10) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {**here(a, b), "sum": a + b}


class StreamCallable:
    async def __call__(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 10


class SyncGenCallable:
    def __call__(self, n: int) -> Any:
        yield from range(n)


class Point:
    """A class registered as a callable: its instance is the result."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y
