"""CANCEL then reuse: several times in a row, many rounds (nothing leaks, running_call_count
back to 0), the connection closing right after, shutdown while a cancelled call unwinds,
and DEADLINE on the old and the new call."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from attacks_server.fastlane_kit import Wire, call, cancel, code, mid, result, run_on

from .cancel_kit import Seen, barrier, flat, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("kind", ["c", "p", "s"])
def test_reused_several_times_in_a_row_in_one_write(loop: str, general: bool, kind: str) -> None:
    long = {
        "c": lambda i: call("x", "c_sleep", 30, f"old{i}"),
        "p": lambda i: call("x", "p_sleep", 30, f"old{i}"),
        "s": lambda i: call("x", "s_count", 1000, 0.01),
    }[kind]

    async def main() -> Any:
        seen = Seen()
        async with serving(seen, general) as server:
            w = await Wire.open(server.address[1])
            msgs: list[Any] = []
            for i in range(6):
                msgs += [long(i), cancel("x")]
            msgs.append(call("x", "c_sleep", 0.05, "last"))
            w.write(msgs)
            got = await barrier(w, "sync")
            mine = [flat(m) for m in got if mid(m) == "x"]
            # stream starts/items sent before a CANCEL was read are the old calls' own
            tail = [m for m in mine if m[0] not in (201, 202)]
            assert tail == [(200, ["c-slept", "last"])], mine
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
def test_many_cancel_reuse_rounds_leak_nothing(loop: str, general: bool) -> None:
    async def main() -> Any:
        seen = Seen()
        async with serving(seen, general) as server:
            w = await Wire.open(server.address[1])
            # warm up (pool workers started, buffers grown)
            for i in range(10):
                w.write([call("x", "p_sleep", 30, "o"), cancel("x"), call("x", "p_echo", i)])
                await barrier(w, f"warm{i}")
            before_fd = fds()
            before_tasks = len(asyncio.all_tasks())
            for i in range(100):
                kind = ("c_sleep", "p_sleep", "t_sleep", "s_count")[i % 4]
                old = (
                    call("x", kind, 30, "o") if kind != "s_count" else call("x", kind, 10**6, 0.001)
                )
                if kind == "t_sleep":
                    old = call("x", kind, 0.0, "o")
                w.write([old, cancel("x"), call("x", "c_echo", i)])
                got = await barrier(w, f"s{i}")
                mine = [flat(m) for m in got if mid(m) == "x"]
                tail = [m for m in mine if m[0] not in (201, 202)]
                assert tail == [(200, ["c", i])], (i, mine)
            await asyncio.sleep(0.3)
            assert server.running_call_count == 0
            after_tasks = len(asyncio.all_tasks())
            after_fd = fds()
            assert after_tasks <= before_tasks, (before_tasks, after_tasks)
            assert after_fd <= before_fd + 2, (before_fd, after_fd)
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("old", ["c_sleep", "p_sleep", "c_swallow_slow"])
def test_connection_closes_right_after_cancel_and_reuse(loop: str, general: bool, old: str) -> None:
    async def main() -> Any:
        seen = Seen()
        async with serving(seen, general) as server:
            for round in range(3):
                w = await Wire.open(server.address[1])
                first = call("x", old, 30, "o") if old != "c_swallow_slow" else call("x", old, "o")
                w.write([first, cancel("x"), call("x", "p_sleep", 0.1, "new")])
                await asyncio.sleep(0.02 * round)
                w.writer.transport.abort()  # a reset: the server sees the end at once
                await w.close()
            for _ in range(2000):
                if server.running_call_count == 0:
                    break
                await asyncio.sleep(0.005)
            assert server.running_call_count == 0
            w = await Wire.open(server.address[1])
            got = await w.roundtrip([call("a", "p_echo", 1), call("b", "c_echo", 2)])
            assert sorted((mid(m), code(m), result(m)) for m in got) == [
                ("a", 200, ["p", 1]),
                ("b", 200, ["c", 2]),
            ]
            await w.close()

    run_on(loop, main)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("new", ["c_sleep", "p_sleep"])
@pytest.mark.parametrize("old", ["c_unwind_slow", "c_swallow_slow"])
def test_shutdown_while_cancelled_call_unwinds_and_reuser_runs(
    loop: str, general: bool, new: str, old: str
) -> None:
    """docs: at shutdown calls still running are answered 407 (cancel negotiated). The ID
    gets one reply (the new call's: its result or 407), never the old handler's value."""

    async def main() -> Any:
        seen = Seen()
        server_cm = serving(seen, general)
        server = await server_cm.__aenter__()
        try:
            w = await Wire.open(server.address[1])
            w.write([call("x", old, "old"), cancel("x"), call("x", new, 5, "new")])
            await asyncio.sleep(0.05)
            closing = asyncio.ensure_future(server.close())
            got = []
            while True:
                try:
                    got.append(await asyncio.wait_for(w.recv(), 20))
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
            await asyncio.wait_for(closing, 30)
        finally:
            await server_cm.__aexit__(None, None, None)
        mine = [flat(m) for m in got if mid(m) == "x"]
        assert len(mine) == 1 and mine[0][0] in (200, 407), mine
        assert mine[0][1] != ["swallowed-late", "old"], mine

    run_on(loop, main, timeout=90)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("new", ["c_sleep", "p_sleep", "t_sleep"])
def test_reusing_call_with_its_own_deadline_gets_one_408(
    loop: str, general: bool, new: str
) -> None:
    async def main() -> Any:
        seen = Seen()
        async with serving(seen, general) as server:
            w = await Wire.open(server.address[1])
            w.write(
                [
                    call("x", "c_sleep", 30, "old", DEADLINE=0.05),
                    cancel("x"),
                    call("x", new, 0.5, "new", DEADLINE=0.15),
                ]
            )
            got = await barrier(w, "sync", 0.6 if new == "t_sleep" else 0.1)
            mine = [flat(m) for m in got if mid(m) == "x"]
            assert mine == [(408, mine[0][1])], mine
            await w.close()

    run_on(loop, main)
