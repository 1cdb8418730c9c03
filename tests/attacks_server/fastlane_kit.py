"""Kit for the fast-lane contract attacks: a real in-process Server on 127.0.0.1:0 run on
asyncio or uvloop, and a raw asyncio wire client that can pipeline many calls in one write.

Everything here talks to the server through the wire (and its public properties); nothing
reads the server's internals."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgpack
import pytest

from pymprpc import current_call
from pymprpc.server import Server

SEP = b"##PRO-END##"
ALL = ["length-framing", "cancel", "deadline", "metadata", "oneway"]

# The variable handlers set and read: a leak between calls shows as a non-None value.
VAR: contextvars.ContextVar[Any] = contextvars.ContextVar("fastlane_attack_var", default=None)


class Escaped(AssertionError):
    """A BaseException escaped the event loop: the server let a handler stop it."""


def run_on(loop: str, main: Callable[[], Awaitable[Any]], timeout: float = 40.0) -> Any:
    """Run `main()` on a fresh asyncio or uvloop loop, bounded in time. A BaseException
    (SystemExit, KeyboardInterrupt) escaping the loop becomes a test failure, not the end
    of the pytest session."""
    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(main(), timeout))  # type: ignore[arg-type]
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        raise Escaped(f"{type(exc).__name__} escaped the event loop: {exc!r}") from None


def code(m: Any) -> int:
    return int(m.get("CODE", -1))


def mid(m: Any) -> Any:
    return (m.get("MESSAGE") or {}).get("ID")


def result(m: Any) -> Any:
    return (m.get("MESSAGE") or {}).get("RESULT")


class Wire:
    """A raw client on one connection: frames by hand, sends batches in one write."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.length = False
        self.welcome: Any = None
        self.syncs = 0

    @classmethod
    async def open(
        cls,
        port: int,
        features: list[str] | None = ALL,
        ssl: Any = None,
        limit: int = 2**16,
    ) -> Wire:
        """Connected and logged in; `limit`: the reader's, the largest reply under
        separator framing."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl, limit=limit)
        wire = cls(reader, writer)
        auth: dict[str, Any] = {"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}
        if features is not None:
            auth["FEATURES"] = features
        wire.write([auth])
        wire.welcome = await wire.recv()
        assert code(wire.welcome) == 100, wire.welcome
        if "length-framing" in (wire.welcome.get("FEATURES") or []):
            wire.length = True
        return wire

    def frame(self, msg: Any) -> bytes:
        payload = msgpack.packb(msg, use_bin_type=True)
        if self.length:
            return struct.pack(">I", len(payload)) + payload
        return payload + SEP

    def write(self, msgs: Iterable[Any]) -> None:
        """All of `msgs` in one write (the server sees them in one read when they fit)."""
        self.writer.write(b"".join(self.frame(m) for m in msgs))

    async def recv(self) -> Any:
        if self.length:
            (n,) = struct.unpack(">I", await self.reader.readexactly(4))
            payload = await self.reader.readexactly(n)
        else:
            payload = (await self.reader.readuntil(SEP))[: -len(SEP)]
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)

    async def recv_n(self, n: int) -> list[Any]:
        return [await self.recv() for _ in range(n)]

    async def roundtrip(self, msgs: list[Any], n: int | None = None) -> list[Any]:
        self.write(msgs)
        return await self.recv_n(len(msgs) if n is None else n)

    async def sync_point(self, allowed: int = 0) -> list[Any]:
        """Call the server's `drain` method, which answers once no call but `allowed`
        others runs on the server; returns every message that arrived before its reply.
        (A ping is no barrier: its pong may overtake replies to calls sent before it,
        on the fast and the general path alike.)"""
        seen = []
        while True:
            self.syncs += 1
            key = f"__sync{self.syncs}"
            self.write([call(key, "drain", allowed)])
            while True:
                m = await self.recv()
                if mid(m) == key:
                    break
                seen.append(m)
            if code(m) == 200:
                return seen
            # refused over max_inflight while the calls before it run: ask again
            assert code(m) == 503, m
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def call(id: Any, method: str, *args: Any, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"MPRPC": "0.1", "ID": id, "METHOD": method, "ARGS": list(args)}
    m.update(extra)
    return m


def cancel(id: Any) -> dict[str, Any]:
    return {"MPRPC": "0.1", "ID": id, "CANCEL": True}


class CustomBase(BaseException):
    """A BaseException subclass of the application's own."""


def _raise(kind: str) -> None:
    if kind == "SystemExit":
        raise SystemExit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "GeneratorExit":
        raise GeneratorExit
    if kind == "CustomBase":
        raise CustomBase("mine")
    if kind == "StopIteration":
        raise StopIteration(5)
    if kind == "StopAsyncIteration":
        raise StopAsyncIteration
    if kind == "CancelledError":
        raise asyncio.CancelledError
    if kind == "ValueError":
        raise ValueError("boom")
    raise AssertionError(kind)


class _Cyclic(list):  # type: ignore[type-arg]
    pass


def unencodable(kind: str) -> Any:
    if kind == "set":
        return {1, 2}
    if kind == "object":
        return object()
    if kind == "bigint":
        return 2**70
    if kind == "cycle":
        c: list[Any] = []
        c.append(c)
        return c
    if kind == "nested_set":
        return {"a": [1, {2}]}
    raise AssertionError(kind)


class State:
    """What the handlers saw, for the test to check (on the server's loop)."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[Any] | None] = {}
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.soon: list[tuple[str, Any, bool]] = []
        self.orphans: dict[str, Any] = {}
        self.keep: set[asyncio.Task[Any]] = set()
        self.bumps = 0
        self.drains = 0
        self.seen_by_interceptor: list[tuple[str, str]] = []

    def event(self, key: str) -> asyncio.Event:
        if key not in self.events:
            self.events[key] = asyncio.Event()
        return self.events[key]

    def started_event(self, key: str) -> asyncio.Event:
        if key not in self.started:
            self.started[key] = asyncio.Event()
        return self.started[key]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Yield to the loop until `predicate()` holds (the test's timeout bounds it)."""
        while not predicate():
            await asyncio.sleep(0.001)


class AsyncCallableObject:
    """A callable object whose __call__ is a coroutine function."""

    async def __call__(self, x: Any) -> Any:
        return ["obj", x, current_call().id]


class Box:
    async def meth(self, x: Any) -> Any:
        return ["meth", x, current_call().id]


async def _partial_target(a: Any, b: Any) -> Any:
    return ["partial", a, b]


def build(state: State, **options: Any) -> Server:
    """A server with every attack handler; all are coroutines or async generators (no
    process pool is started)."""
    options.setdefault("grace_period", 1)
    server = Server(("127.0.0.1", 0), **options)
    server.register_introspection_functions()
    reg = server.register_function

    @reg()
    async def drain(allowed: int) -> Any:
        state.drains += 1
        try:
            # Started eagerly, this task is counted as running only once its first step
            # has suspended: before that it would subtract itself from the others.
            await asyncio.sleep(0)
            while server.running_call_count - state.drains > allowed:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)  # replies of calls that just finished are written first
        finally:
            state.drains -= 1
        return "drained"

    @reg()
    async def echo(x: Any) -> Any:
        return x

    @reg()
    async def echo_await(x: Any) -> Any:
        await asyncio.sleep(0)
        return x

    @reg()
    async def add(a: Any, b: Any = 1) -> Any:
        return a + b

    @reg()
    async def who(tag: str) -> Any:
        task = asyncio.current_task()
        state.tasks[tag] = task
        return {"id": current_call().id, "var": VAR.get(), "task": task is not None}

    @reg()
    async def who_await(tag: str) -> Any:
        before = asyncio.current_task()
        await asyncio.sleep(0)
        after = asyncio.current_task()
        state.tasks[tag] = after
        return {
            "id": current_call().id,
            "var": VAR.get(),
            "task": after is not None,
            "same": before is after,
        }

    @reg()
    async def setvar(value: Any) -> Any:
        old = VAR.get()
        VAR.set(value)
        return old

    @reg()
    async def setvar_await(value: Any) -> Any:
        old = VAR.get()
        VAR.set(value)
        await asyncio.sleep(0)
        assert VAR.get() == value
        return old

    @reg()
    async def setvar_raise(value: Any) -> Any:
        VAR.set(value)
        raise ValueError("after set")

    @reg()
    async def getvar() -> Any:
        return VAR.get()

    @reg()
    async def hold(key: str) -> Any:
        state.started_event(key).set()
        try:
            await state.event(key).wait()
        except asyncio.CancelledError:
            state.cancelled.append(key)
            raise
        state.finished.append(key)
        return key

    @reg()
    async def nasty(kind: str, after_await: bool) -> Any:
        if after_await:
            await asyncio.sleep(0)
        _raise(kind)

    @reg()
    async def bad_result(kind: str, after_await: bool) -> Any:
        if after_await:
            await asyncio.sleep(0)
        return unencodable(kind)

    @reg()
    async def sep_result(after_await: bool) -> Any:
        if after_await:
            await asyncio.sleep(0)
        return "a##PRO-END##b"

    @reg()
    async def spin_then(seconds: float, then_await: bool) -> Any:
        import time

        time.sleep(seconds)  # blocks the loop: the call cannot be interrupted meanwhile
        if then_await:
            await asyncio.sleep(0)
        return "spun"

    @reg()
    async def remaining() -> Any:
        ctx = current_call()
        return {
            "id": ctx.id,
            "method": ctx.method,
            "left": ctx.time_remaining(),
            "meta": dict(ctx.metadata),
        }

    @reg()
    async def timeout_first_line(wait: bool) -> Any:
        try:
            async with asyncio.timeout(0.01 if wait else 30):
                if wait:
                    await asyncio.Event().wait()
                return "no-timeout"
        except TimeoutError:
            return "timed-out"

    @reg()
    async def taskgroup_first_line(n: int, fail: bool) -> Any:
        async def child(i: int) -> int:
            if fail and i == n - 1:
                raise ValueError("child")
            return i * 2

        try:
            async with asyncio.TaskGroup() as tg:
                kids = [tg.create_task(child(i)) for i in range(n)]
        except BaseExceptionGroup as group:
            assert group.subgroup(ValueError) is not None, group
            return "group-failed"
        return [k.result() for k in kids]

    @reg()
    async def soon(tag: str) -> Any:
        VAR.set(tag)

        def cb() -> None:
            state.soon.append((tag, VAR.get(), asyncio.current_task() is None))

        asyncio.get_running_loop().call_soon(cb)
        return tag

    @reg()
    async def late_context(tag: str, after_await: bool) -> Any:
        """Asks for its call's context only after it returned (from call_soon)."""
        if after_await:
            await asyncio.sleep(0)

        def cb() -> None:
            try:
                ctx = current_call()
            except LookupError:
                state.soon.append((tag, None, None))
                return
            if tag != "quiet":
                state.soon.append((tag, ctx.id, ctx.method))
            ctx.set_response_metadata("late", tag)

        asyncio.get_running_loop().call_soon(cb)
        return tag

    @reg()
    async def app_cancels_itself(how: str) -> Any:
        """The application cancels the handler's task itself (not the client, not the
        server): at once, or from a watchdog timer (the pre-3.11 timeout idiom)."""
        task = asyncio.current_task()
        assert task is not None
        if how == "now":
            task.cancel()
            await asyncio.sleep(0)
        else:
            asyncio.get_running_loop().call_later(0.01, task.cancel)
            await asyncio.Event().wait()
        return "not reached"

    @reg()
    async def set_meta(value: str, after_await: bool) -> Any:
        current_call().set_response_metadata("k", value)
        if after_await:
            await asyncio.sleep(0)
        return value

    @reg()
    async def stream_meta(n: int) -> Any:
        current_call().set_response_metadata("s", str(n))
        for i in range(n):
            yield i

    @reg()
    async def big(n: int) -> Any:
        return "x" * n

    @reg()
    async def order(tag: str) -> Any:
        state.finished.append(tag)
        return tag

    @reg()
    async def orphan(tag: str) -> Any:
        VAR.set(tag)

        async def later() -> None:
            await state.event("orphan-" + tag).wait()
            state.orphans[tag] = VAR.get()

        t = asyncio.get_running_loop().create_task(later())
        state.keep.add(t)
        t.add_done_callback(state.keep.discard)
        return tag

    @reg()
    async def count(n: int) -> Any:
        for i in range(n):
            yield i

    @reg()
    async def count_await(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @reg()
    async def bump() -> Any:
        state.bumps += 1
        return state.bumps

    @reg(deprecated=True)
    async def old_echo(x: Any) -> Any:
        return x

    @reg()
    async def raise_value(x: Any) -> Any:
        raise ValueError(f"bad {x}")

    reg("obj")(AsyncCallableObject())  # an object with an async __call__
    reg("meth")(Box().meth)
    reg("partial")(functools.partial(_partial_target, "p"))
    return server


async def passthrough(ctx: Any, call_next: Any) -> Any:
    """An interceptor that changes nothing: a server with it takes the general path."""
    return await call_next(ctx)


@contextlib.asynccontextmanager
async def serving(state: State, **options: Any) -> AsyncIterator[tuple[Server, int]]:
    """A started server (see `build`) and its port; closed on exit."""
    server = build(state, **options)
    await server.start()
    try:
        yield server, server.address[1]
    finally:
        await server.close()
