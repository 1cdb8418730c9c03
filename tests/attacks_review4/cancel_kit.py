"""A server with coroutine, process-pool, thread and stream methods for the CANCEL/ID-reuse
attacks, and a checker for what one ID received."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from attacks_server.fastlane_kit import Wire, call, cancel, code, mid, passthrough

from pymprpc.server import Server

from . import r4_funcs as f


class Seen:
    def __init__(self) -> None:
        self.unwound: list[Any] = []
        self.drains = 0


def build(seen: Seen, general: bool, **options: Any) -> Server:
    options.setdefault("grace_period", 1)
    options.setdefault("max_workers", 2)
    server = Server(("127.0.0.1", 0), interceptors=[passthrough] if general else [], **options)
    server.register_introspection_functions()
    reg = server.register_function

    @reg()
    async def c_echo(x: Any) -> Any:
        return ["c", x]

    @reg()
    async def c_drain(extra: float) -> Any:
        """Answers once no other call runs (bounded), then `extra` seconds later."""
        seen.drains += 1
        try:
            await asyncio.sleep(0)
            for _ in range(6000):
                if server.running_call_count - seen.drains <= 0:
                    break
                await asyncio.sleep(0.005)
            if extra:
                await asyncio.sleep(extra)
            await asyncio.sleep(0)
        finally:
            seen.drains -= 1
        return "drained"

    @reg()
    async def c_sleep(seconds: float, tag: Any) -> Any:
        await asyncio.sleep(seconds)
        return ["c-slept", tag]

    @reg()
    async def c_swallow(tag: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.unwound.append(tag)
            return ["swallowed", tag]
        return ["not-cancelled", tag]

    @reg()
    async def c_swallow_raise(tag: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.unwound.append(tag)
            raise ValueError(f"raised on cancel {tag}") from None
        return ["not-cancelled", tag]

    @reg()
    async def c_swallow_slow(tag: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.15)
            seen.unwound.append(tag)
            return ["swallowed-late", tag]
        return ["not-cancelled", tag]

    @reg()
    async def c_unwind_slow(tag: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.15)  # cleanup that takes a while, then re-raise
            seen.unwound.append(tag)
            raise
        return ["not-cancelled", tag]

    @reg()
    async def s_count(n: int, delay: float) -> Any:
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield i

    @reg()
    async def s_old(n: int, delay: float) -> Any:
        for i in range(n):
            await asyncio.sleep(delay)
            yield ["old", i]

    @reg()
    async def s_swallow(tag: Any) -> Any:
        yield ["old", 0]
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.unwound.append(tag)
            yield ["old", "after-cancel"]
            yield ["old", "after-cancel-2"]

    @reg()
    async def s_swallow_raise(tag: Any) -> Any:
        yield ["old", 0]
        try:
            await asyncio.sleep(30)
        except (asyncio.CancelledError, GeneratorExit):
            seen.unwound.append(tag)
            raise ValueError("stream raised on cancel") from None

    reg()(f.p_echo)
    reg()(f.p_sleep)
    reg(executor="thread")(f.t_echo)
    reg(executor="thread")(f.t_sleep)
    return server


@contextlib.asynccontextmanager
async def serving(seen: Seen, general: bool, **options: Any) -> AsyncIterator[Server]:
    server = build(seen, general, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


# --- what the old (to be cancelled) call is -------------------------------------------


def old_call(kind: str, id: str) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "c": call(id, "c_sleep", 30, "old"),
        "p": call(id, "p_sleep", 30, "old"),
        "t": call(id, "t_sleep", 0.1, "old"),
        "s": call(id, "s_old", 1000, 0.01),
        "c_swallow": call(id, "c_swallow", "old"),
        "c_swallow_raise": call(id, "c_swallow_raise", "old"),
        "c_swallow_slow": call(id, "c_swallow_slow", "old"),
        "s_swallow": call(id, "s_swallow", "old"),
        "s_swallow_raise": call(id, "s_swallow_raise", "old"),
        "c_deadline": call(id, "c_sleep", 30, "old", DEADLINE=0.1),
        "p_deadline": call(id, "p_sleep", 30, "old", DEADLINE=0.1),
        "s_deadline": call(id, "s_old", 1000, 0.01, DEADLINE=0.1),
        "c_retfalse": call(id, "c_sleep", 30, "old", RETURN=False),
        "p_retfalse": call(id, "p_sleep", 30, "old", RETURN=False),
        "c_oneway": call(id, "c_sleep", 30, "old", ONEWAY=True),
        "p_oneway": call(id, "p_sleep", 30, "old", ONEWAY=True),
        "t_oneway": call(id, "t_sleep", 0.1, "old", ONEWAY=True),
    }
    return table[kind]


OLD_KINDS = [
    "c",
    "p",
    "t",
    "s",
    "c_swallow",
    "c_swallow_raise",
    "c_swallow_slow",
    "s_swallow",
    "s_swallow_raise",
    "c_deadline",
    "p_deadline",
    "s_deadline",
    "c_retfalse",
    "p_retfalse",
    "c_oneway",
    "p_oneway",
    "t_oneway",
]

Seq = list[tuple[int, Any]]


def new_call(kind: str, long: bool, id: str, tag: str) -> tuple[dict[str, Any], Seq]:
    """The reusing call and the replies it alone must get."""
    if kind == "c":
        if long:
            return call(id, "c_sleep", 0.2, tag), [(200, ["c-slept", tag])]
        return call(id, "c_echo", tag), [(200, ["c", tag])]
    if kind == "p":
        if long:
            return call(id, "p_sleep", 0.2, tag), [(200, ["p-slept", tag])]
        return call(id, "p_echo", tag), [(200, ["p", tag])]
    if kind == "t":
        if long:
            return call(id, "t_sleep", 0.2, tag), [(200, ["t-slept", tag])]
        return call(id, "t_echo", tag), [(200, ["t", tag])]
    if kind == "s":
        items = [(202, i) for i in range(3)]
        return call(id, "s_count", 3, 0.07 if long else 0), [(201, None), *items, (206, None)]
    raise AssertionError(kind)


TERMINAL = {200, 206, 300}


def terminal(m: Any) -> bool:
    return code(m) in TERMINAL or code(m) >= 400


def flat(m: Any) -> tuple[int, Any]:
    body = m.get("MESSAGE") or {}
    if code(m) >= 400 or code(m) < 0:
        return (code(m), body.get("EXCEPTION"))
    return (code(m), body.get("RESULT"))


def only_new(got: list[Any], expected: Seq, old_stream: bool) -> bool:
    """`got` (the replies for the ID, in order) is the new call's `expected`, after at
    most a prefix of the old stream's own replies sent before the CANCEL was read."""
    seq = [flat(m) for m in got]
    if seq == expected:
        return True
    if not old_stream:
        return False
    for k in range(1, len(seq)):
        head, rest = seq[:k], seq[k:]
        if head[0][0] != 201:
            return False
        if not all(c == 202 and isinstance(r, list) and r[:1] == ["old"] for c, r in head[1:]):
            return False
        if rest == expected:
            return True
    return False


async def barrier(w: Wire, key: str, extra: float = 0.0) -> list[Any]:
    """Sends `c_drain` and returns every message that arrived before its reply."""
    w.write([call(key, "c_drain", extra)])
    out = []
    while True:
        m = await asyncio.wait_for(w.recv(), 60)
        if mid(m) == key:
            return out
        out.append(m)


async def scenario(
    server: Server, w: Wire, old: str, new: str, long: bool, how: str, n: int
) -> Any:
    """One cancel-then-reuse round on ID `id{n}`; None if all is well, else what is
    wrong."""
    id = f"id{n}"
    msg, expected = new_call(new, long, id, f"new{n}")
    if how == "one-write":
        w.write([old_call(old, id), cancel(id), msg])
    else:
        w.write([old_call(old, id)])
        await asyncio.sleep(0.03)
        w.write([cancel(id), msg])
    extra = 0.15 if old.startswith("t") else 0.0
    got = await barrier(w, f"sync{n}", extra)
    mine = [m for m in got if mid(m) == id]
    others = [m for m in got if mid(m) != id]
    if others or not only_new(mine, expected, old.startswith("s")):
        return (old, new, long, how, [flat(m) for m in mine], others)
    return None
