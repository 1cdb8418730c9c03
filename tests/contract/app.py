"""The service every contract test talks to: one server definition, built from the
public API only (handlers at module level so the process pool can run them however it
starts its workers)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from pymprpc import Server, current_call, errors
from pymprpc.context import CallContext
from pymprpc.testing import RunningServer

# Coordination between a test and handlers on the server's loop: named events, created
# on first use on that loop. Keys carry a per-test unique part, so servers never share.
_events: dict[str, asyncio.Event] = {}


def _event(name: str) -> asyncio.Event:
    event = _events.get(name)
    if event is None:
        event = _events[name] = asyncio.Event()
    return event


class CustomBase(BaseException):
    """A BaseException that is neither Exception nor a cancellation."""


async def block(key: str) -> str:
    """Run until `release(key)`; records start, cancellation and exit."""
    _event("started:" + key).set()
    try:
        await _event("release:" + key).wait()
        return key
    except asyncio.CancelledError:
        _event("cancelled:" + key).set()
        raise
    finally:
        _event("finally:" + key).set()


async def release(key: str) -> bool:
    _event("release:" + key).set()
    return True


async def wait_event(name: str, timeout: float = 10.0) -> bool:
    """True once the named event is set (False if not within `timeout`)."""
    try:
        await asyncio.wait_for(_event(name).wait(), timeout)
    except TimeoutError:
        return False
    return True


async def is_set(name: str) -> bool:
    return _event(name).is_set()


async def bump(key: str) -> str:
    _event("bumped:" + key).set()
    return key


async def sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def add(a: Any, b: Any) -> Any:
    """Add two values."""
    return a + b


async def add_coro(a: Any, b: Any) -> Any:
    return a + b


def echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


def _raise(kind: str) -> None:
    if kind == "ValueError":
        raise ValueError("bad value")
    if kind == "SystemExit":
        sys.exit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "GeneratorExit":
        raise GeneratorExit
    if kind == "CancelledError":
        raise asyncio.CancelledError
    if kind == "CustomBase":
        raise CustomBase("custom")
    # A pymprpc error class by name: it keeps its own code.
    raise getattr(errors, kind)("raised by the method")


async def raise_coro(kind: str) -> None:
    _raise(kind)


def raise_sync(kind: str) -> None:
    _raise(kind)


def nap(seconds: float) -> float:
    """Block the worker (thread or process) for `seconds`."""
    time.sleep(seconds)
    return seconds


def raise_text(a: str, b: str) -> None:
    raise ValueError(a + b)


def value(kind: str) -> Any:
    """Values at the edges of what the encodings carry."""
    return {
        "big-int": 2**64,
        "min-int": -(2**63),
        "max-uint": 2**64 - 1,
        "surrogate": "a\ud800b",
        "keys": {1: "a", 2.5: "b", None: "c", False: "d", b"k": "e"},
        "json-keys": {1: "a", 2.5: "b", None: "c", False: "d"},
        "deep": _nest(501),
        "ok-deep": _nest(100),
    }[kind]


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def unencodable() -> Any:
    return {"a": [1, 2, {3, 4}]}


def nan() -> float:
    return float("nan")


def blob(n: int) -> bytes:
    return b"x" * n


def with_separator() -> bytes:
    return b"a##PRO-END##b"


def length(value: Any) -> int:
    return len(value)


def void() -> None:
    return None


async def count(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def count_fail(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i
    raise ValueError("stream broke")


async def gen_block(key: str) -> AsyncIterator[int]:
    try:
        yield 0
        _event("started:" + key).set()
        await _event("release:" + key).wait()
        yield 1
    finally:
        _event("finally:" + key).set()


async def gen_raise(kind: str) -> AsyncIterator[int]:
    yield 0
    _raise(kind)


async def gen_values(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def gen_separator() -> AsyncIterator[Any]:
    yield 1
    yield b"a##PRO-" + b"END##b"
    yield 3


async def gen_raise_text(a: str, b: str) -> AsyncIterator[int]:
    yield 0
    raise ValueError(a + b)


def nest(depth: int) -> Any:
    return _nest(depth)


async def gen_unencodable() -> AsyncIterator[Any]:
    yield 1
    yield {1, 2}
    yield 3


def old_add(a: Any, b: Any) -> Any:
    return a + b


async def old_count(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class Inner:
    def hello(self, name: str) -> str:
        return f"hello {name}"

    def _secret(self) -> str:
        return "secret"


class Store:
    """Its public methods become remote methods (register_instance)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.inner = Inner()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def get(self, key: str) -> Any:
        return self.data.get(key)

    async def aget(self, key: str) -> Any:
        return self.data.get(key)

    def _hidden(self) -> str:
        return "hidden"


def add_one(a: int) -> int:
    return a + 1


def _fields(call: CallContext) -> dict[str, Any]:
    remaining = call.time_remaining()
    return {
        "id": call.id,
        "method": call.method,
        "peer": list(call.peer) if call.peer is not None else None,
        "user": call.user,
        "has_deadline": call.deadline is not None,
        "remaining_positive": remaining is not None and remaining > 0,
        "metadata": dict(call.metadata),
        "returns": call.returns,
        "streaming": call.streaming,
    }


async def first_line() -> list[Any]:
    """What works from a handler's first line (eager start): the task, asyncio.timeout."""
    task = asyncio.current_task()
    async with asyncio.timeout(5):
        pass
    return [task is not None, task is not None and not task.done()]


async def ctx_coro() -> dict[str, Any]:
    return _fields(current_call())


def ctx_sync() -> dict[str, Any]:
    return _fields(current_call())


async def ctx_stream() -> AsyncIterator[dict[str, Any]]:
    yield _fields(current_call())


async def reply_metadata(ctx: CallContext, call_next: Any) -> Any:
    """Echo request metadata key `want` back as response metadata `got`."""
    want = ctx.metadata.get("want")
    if want is not None:
        ctx.set_response_metadata("got", want)
    return await call_next(ctx)


USERS = [("alice", "a-pw")]


def build(**options: Any) -> Server:
    """A server on 127.0.0.1:0 with every contract method registered; `echo_metadata=True`
    installs `reply_metadata` (outermost), other options go to `Server`."""
    options.setdefault("max_workers", 2)
    interceptors = list(options.pop("interceptors", ()))
    if options.pop("echo_metadata", False):
        interceptors.insert(0, reply_metadata)
    # No interceptor unless asked: plain calls then take the server's plainest path.
    server = Server(("127.0.0.1", 0), interceptors=interceptors, **options)
    server.register_introspection_functions()
    inline = {"executor": "inline"}
    for func in (
        add,
        echo,
        unencodable,
        nan,
        blob,
        with_separator,
        void,
        length,
        raise_text,
        value,
        nest,
    ):
        server.register_function(**inline)(func)
    for coro in (
        block,
        release,
        wait_event,
        is_set,
        bump,
        sleep,
        add_coro,
        raise_coro,
        ctx_coro,
        first_line,
    ):
        server.register_function()(coro)
    for gen in (
        count,
        count_fail,
        gen_block,
        ctx_stream,
        gen_raise,
        gen_unencodable,
        gen_values,
        gen_raise_text,
        gen_separator,
    ):
        server.register_function()(gen)
    server.register_function("add_thread", executor="thread")(add)
    server.register_function("add_process", executor="process")(add)
    server.register_function("raise_thread", executor="thread")(raise_sync)
    server.register_function("raise_process", executor="process")(raise_sync)
    server.register_function("ctx_thread", executor="thread")(ctx_sync)
    server.register_function("nap_thread", executor="thread")(nap)
    server.register_function("nap_process", executor="process")(nap)
    server.register_function("ctx_process", executor="process")(ctx_sync)
    server.register_function(deprecated=True, executor="inline")(old_add)
    server.register_function("legacy.add-one", executor="inline")(add_one)
    server.register_function("system.custom", executor="inline")(add_one)
    server.register_instance(Store(), allow_dotted_names=True)
    server.register_function(deprecated=True)(old_count)
    return server


def serve(**options: Any) -> RunningServer:
    running = RunningServer(build(**options))
    running.start()
    return running
