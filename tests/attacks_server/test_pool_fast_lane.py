"""Plain functions on the process pool take the server's fast lane (no interceptors, a
call by the exact name with positional arguments that fit): every outcome must be the
one the general path gives (a server with a pass-through interceptor), on asyncio and
uvloop, one call per read and pipelined: results, errors the function raises (any
BaseException), a worker that dies, values that cannot cross, typed parameters and
results, `current_call()` and response metadata in the worker, cancel, and functions
that must not take the lane (a thread or an Executor of the application's own)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pymprpc.context import current_call
from pymprpc.schema import INT, STR, Param, Signature
from pymprpc.server import Server

from .fastlane_kit import Wire, call, cancel, code, mid, passthrough, run_on

pytestmark = pytest.mark.timeout(120)


# Module-level: importable wherever the workers come from.
def padd(a: int, b: int = 1) -> int:
    return a + b


def raises(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad value")
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt("stop")
    if kind == "cancelled":
        raise asyncio.CancelledError("inner")
    if kind == "base":
        raise BaseException("base")
    raise KeyError(kind)


def die() -> None:
    os._exit(3)


def unpicklable() -> Any:
    return threading.Lock()


def who() -> list[Any]:
    ctx = current_call()
    return [ctx.method, ctx.id]


def meta(value: str) -> str:
    current_call().response_metadata["k"] = value
    return value


def typed_len(s: str) -> int:
    return len(s)


def typed_wrong(n: int) -> Any:
    return "not an int" if n else threading.Lock()


def where() -> str:
    return "worker" if threading.current_thread() is threading.main_thread() else "thread"


def block(seconds: float, pid_file: str = "") -> int:
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


_LEN = Signature((Param("s", STR),), INT, name="typed_len")
_WRONG = Signature((Param("n", INT),), INT, name="typed_wrong")


def build(interceptors: tuple[Any, ...], app_pool: ThreadPoolExecutor) -> Server:
    server = Server(("127.0.0.1", 0), max_workers=2, interceptors=list(interceptors))
    for func in (padd, raises, die, unpicklable, who, meta, block):
        server.register_function()(func)
    server.register_function(schema=_LEN)(typed_len)
    server.register_function(schema=_WRONG)(typed_wrong)
    server.register_function(name="on_thread", executor="thread")(where)
    server.register_function(name="on_app_pool", executor=app_pool)(where)
    server.register_function(name="in_pool")(where)
    return server


@asynccontextmanager
async def serving(interceptors: tuple[Any, ...]) -> AsyncIterator[int]:
    with ThreadPoolExecutor(1, thread_name_prefix="app") as app_pool:
        server = build(interceptors, app_pool)
        await server.start()
        try:
            yield server.address[1]
        finally:
            await server.close()


def outcome(m: dict[str, Any]) -> tuple[Any, ...]:
    """What a reply says, without what may differ between two runs (a traceback's
    frames, a worker's pid)."""
    body = m.get("MESSAGE") or {}
    error = {k: v for k, v in body.items() if k not in ("ID", "TRACEBACK", "RESULT", "METADATA")}
    if isinstance(error.get("MESSAGE"), str):
        error["MESSAGE"] = re.sub(r"\(pid \d+\)", "(pid N)", error["MESSAGE"])
    return (mid(m), code(m), body.get("RESULT"), sorted(error.items()), body.get("METADATA"))


CALLS = [
    call("1", "padd", 2, 3),
    call("2", "padd", 2),
    call("3", "padd", 2, KWARGS={"b": 5}),  # kwargs: the general path on both servers
    call("4", "padd"),  # 402
    call("5", "padd", 1, 2, 3),  # 402
    call("6", "padd", "x", 1),  # TypeError in the worker: 404
    call("7", "raises", "value"),
    call("8", "raises", "key"),
    call("9", "raises", "exit"),
    call("10", "raises", "interrupt"),
    call("11", "raises", "cancelled"),
    call("12", "raises", "base"),
    call("13", "unpicklable"),
    call("14", "who"),
    call("15", "meta", "v"),
    call("16", "typed_len", "abcd"),
    call("17", "typed_len", 5),  # 402: not a str
    call("18", "typed_wrong", 1),  # a wrong result: 404 naming the method
    call("19", "typed_wrong", 0),  # a result the worker cannot send back
    call("20", "on_thread"),
    call("21", "on_app_pool"),
    call("22", "in_pool"),
    call("23", "die"),
    call("24", "padd", 40, 2),  # after a worker died: served by its replacement
]


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_pool_calls_answer_alike_on_the_fast_and_general_paths(loop: str, mode: str) -> None:
    async def run(interceptors: tuple[Any, ...]) -> dict[str, tuple[Any, ...]]:
        async with serving(interceptors) as port:
            w = await Wire.open(port)
            seen: dict[str, tuple[Any, ...]] = {}
            if mode == "pipelined":
                w.write(CALLS[:-2])  # all but the worker's death and the call after it
                for m in await w.recv_n(len(CALLS) - 2):
                    seen[mid(m)] = outcome(m)
                rest = CALLS[-2:]
            else:
                rest = CALLS
            for c in rest:
                (m,) = await w.roundtrip([c])
                seen[mid(m)] = outcome(m)
            await w.close()
            return seen

    async def main() -> None:
        fast = await run(())
        general = await run((passthrough,))
        assert fast == general, {k: (fast[k], general[k]) for k in fast if fast[k] != general[k]}
        # And what they say is what the contract says.
        assert fast["1"][1:3] == (200, 5)
        assert fast["2"][1:3] == (200, 3)
        assert fast["3"][1:3] == (200, 7)
        assert fast["4"][1] == fast["5"][1] == 402
        assert {fast[k][1] for k in ("6", "7", "8", "9", "10", "12", "13")} == {404}
        assert fast["11"][1] in (404, 407)
        assert fast["14"][1:3] == (200, ["who", "14"])
        assert fast["15"][1:3] == (200, "v") and fast["15"][4] == {"k": "v"}
        assert fast["16"][1:3] == (200, 4)
        assert fast["17"][1] == 402
        assert fast["18"][1] == fast["19"][1] == 404
        assert "typed_wrong" in repr(fast["18"][3]) and "typed_wrong" in repr(fast["19"][3])
        assert fast["20"][1:3] == (200, "thread")
        assert fast["21"][1:3] == (200, "thread")
        assert fast["22"][1:3] == (200, "worker")
        assert fast["23"][1] == 404 and "die" in repr(fast["23"][3])
        assert fast["24"][1:3] == (200, 42)

    run_on(loop, main, timeout=100)


def test_a_cancelled_pool_call_on_the_fast_lane_stops_its_worker(loop: str, tmp_path: Any) -> None:
    """CANCEL of a pool call that runs stops the worker running it (the call's only way
    to end early) and sends nothing for its ID, which is free again; the calls after it
    are served (by the other worker and the replacement)."""
    pid_file = tmp_path / "pid"

    async def main() -> None:
        async with serving(()) as port:
            w = await Wire.open(port)
            w.write([call("b", "block", 30.0, str(pid_file))])
            for _ in range(2000):  # until the call runs in its worker (bounded)
                if pid_file.exists() and pid_file.read_text():
                    break
                await asyncio.sleep(0.005)
            pid = int(pid_file.read_text())
            w.write([cancel("b")])
            for _ in range(2000):  # until that worker is gone (bounded)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"the worker {pid} running the cancelled call still runs")
            got = await w.roundtrip([call(str(i), "padd", i, 1) for i in range(8)])
            got += await w.roundtrip([call("b", "padd", 1, 1)])
            assert sorted((mid(r), code(r)) for r in got) == sorted(
                [(str(i), 200) for i in range(8)] + [("b", 200)]
            )
            await w.close()

    run_on(loop, main, timeout=60)
