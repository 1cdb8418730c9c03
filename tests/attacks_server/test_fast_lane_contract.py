"""Attacks on the server's fast lane for plain calls (issue 15), from its contract:
"no behaviour changes: every call still runs in its own task with its context, deadlines,
cancellation and limits as documented" (README: every call runs in its own asyncio task,
started eagerly; `current_task()`, `asyncio.timeout()` and `TaskGroup` work from a
handler's first line; docs/protocol.md: limits, cancel, deadline, oneway, kept results).

Every scenario runs on asyncio and on uvloop, against a real server on 127.0.0.1:0, with
calls sent one per read and pipelined in one write. Where the documents leave an outcome
open, the scenario is run twice, on a server that takes the fast lane and on one with a
pass-through interceptor (the general path), and both must answer the same.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import sys
from typing import Any

import pytest

from .fastlane_kit import (
    ALL,
    VAR,
    State,
    Wire,
    call,
    cancel,
    code,
    mid,
    passthrough,
    result,
    run_on,
    serving,
)

pytestmark = pytest.mark.timeout(90)

N_CONN = 200


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- one task per call, many connections ----------------------------------------------


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_every_call_has_its_own_task_on_200_connections(loop: str, mode: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            wires = await asyncio.gather(*(Wire.open(port) for _ in range(N_CONN)))

            async def one_conn(i: int, w: Wire) -> list[Any]:
                msgs = [
                    call(f"c{i}-{k}", "who" if k % 2 == 0 else "who_await", f"c{i}-{k}")
                    for k in range(6)
                ]
                if mode == "pipelined":
                    return await w.roundtrip(msgs)
                return [(await w.roundtrip([m]))[0] for m in msgs]

            replies = await asyncio.gather(*(one_conn(i, w) for i, w in enumerate(wires)))
            flat = [r for rs in replies for r in rs]
            assert len(flat) == N_CONN * 6
            for r in flat:
                assert code(r) == 200, r
                assert result(r)["id"] == mid(r), r  # current_call() is this call's
                assert result(r)["task"] is True, r
                assert result(r)["var"] is None, r
                assert result(r).get("same", True) is True, r
            tasks = list(state.tasks.values())
            assert len(tasks) == N_CONN * 6
            # distinct objects (all held alive, so id() cannot be reused) ...
            assert len({id(t) for t in tasks}) == len(tasks), "a task was shared by calls"
            # ... each the call's own: finished once its call was answered
            assert all(t is not None and t.done() for t in tasks)
            for w in wires:
                await w.close()

    run_on(loop, main)


def test_current_task_is_not_a_server_task(loop: str) -> None:
    """A handler's task is neither the test's task nor shared with a sibling call in the
    same read (a fast lane that ran the first step in the connection's context would
    report None or the caller's task)."""

    async def main() -> None:
        state = State()
        me = asyncio.current_task()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            rs = await w.roundtrip([call(f"t{k}", "who", f"t{k}") for k in range(50)])
            assert all(code(r) == 200 for r in rs), rs
            assert all(state.tasks[f"t{k}"] is not me for k in range(50))
            assert len({id(t) for t in state.tasks.values()}) == 50
            await w.close()

    run_on(loop, main)


# -- contextvars -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
@pytest.mark.parametrize("setter", ["setvar", "setvar_await", "setvar_raise", "soon", "orphan"])
def test_contextvars_never_leak_into_the_next_call(loop: str, mode: str, setter: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            wires = await asyncio.gather(*(Wire.open(port) for _ in range(N_CONN // 4)))

            async def one_conn(i: int, w: Wire) -> list[Any]:
                msgs = []
                for k in range(4):
                    msgs.append(call(f"s{i}-{k}", setter, f"v{i}-{k}"))
                    msgs.append(call(f"g{i}-{k}", "getvar"))
                    msgs.append(call(f"w{i}-{k}", "who_await", f"w{i}-{k}"))
                if mode == "pipelined":
                    return await w.roundtrip(msgs)
                return [(await w.roundtrip([m]))[0] for m in msgs]

            replies = await asyncio.gather(*(one_conn(i, w) for i, w in enumerate(wires)))
            for r in (r for rs in replies for r in rs):
                if mid(r).startswith("s"):
                    if setter == "setvar_raise":
                        assert code(r) == 404, r
                    else:
                        assert code(r) == 200, r
                        # what the setter saw before setting: no earlier call's value
                        if setter in ("setvar", "setvar_await"):
                            assert result(r) is None, r
                elif mid(r).startswith("g"):
                    assert code(r) == 200 and result(r) is None, ("leaked", r)
                else:
                    assert code(r) == 200 and result(r)["var"] is None, ("leaked", r)
            if setter == "soon":
                await state.wait_until(lambda: len(state.soon) == len(wires) * 4)
                for tag, seen, no_task in state.soon:
                    assert seen == tag, "call_soon from a handler ran outside its context"
                    assert no_task
            if setter == "orphan":
                for key in list(state.events):
                    state.events[key].set()
                for i in range(len(wires)):
                    for k in range(4):
                        state.event(f"orphan-v{i}-{k}").set()
                await state.wait_until(lambda: len(state.orphans) == len(wires) * 4)
                assert all(tag == seen for tag, seen in state.orphans.items()), state.orphans
            for w in wires:
                await w.close()
        assert VAR.get() is None, "a handler's value leaked into the loop's own context"

    run_on(loop, main)


def test_contextvars_do_not_leak_across_connections_in_one_loop_pass(loop: str) -> None:
    """Connection A sets, connection B reads, interleaved so that both reads land in the
    same loop iteration."""

    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            setters = await asyncio.gather(*(Wire.open(port) for _ in range(50)))
            readers = await asyncio.gather(*(Wire.open(port) for _ in range(50)))
            for rnd in range(5):
                for i, (a, b) in enumerate(zip(setters, readers, strict=True)):
                    a.write([call(f"a{rnd}-{i}", "setvar", f"A{rnd}-{i}")])
                    b.write([call(f"b{rnd}-{i}", "getvar")])
                for a, b in zip(setters, readers, strict=True):
                    ra, rb = await a.recv(), await b.recv()
                    assert code(ra) == 200 and result(ra) is None, ra
                    assert code(rb) == 200 and result(rb) is None, rb
            for w in setters + readers:
                await w.close()

    run_on(loop, main)


def test_current_call_in_pipelined_calls_is_each_calls_own(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            msgs = []
            for k in range(60):
                extra: dict[str, Any] = {}
                if k % 3 == 1:
                    extra["DEADLINE"] = 30
                if k % 4 == 2:
                    extra["METADATA"] = {"k": str(k)}
                msgs.append(call(f"r{k}", "remaining", **extra))
            rs = {mid(r): r for r in await w.roundtrip(msgs)}
            for k in range(60):
                r = rs[f"r{k}"]
                assert code(r) == 200, r
                got = result(r)
                assert got["id"] == f"r{k}" and got["method"] == "remaining", got
                if k % 3 == 1:
                    assert got["left"] is not None and 0 < got["left"] <= 30, got
                else:
                    assert got["left"] is None, got
                assert got["meta"] == ({"k": str(k)} if k % 4 == 2 else {}), got
            await w.close()

    run_on(loop, main)


# -- handlers that raise -----------------------------------------------------------------

KINDS = [
    "SystemExit",
    "KeyboardInterrupt",
    "GeneratorExit",
    "CustomBase",
    "StopIteration",
    "StopAsyncIteration",
    "ValueError",
]


@pytest.mark.parametrize("after_await", [False, True], ids=["sync", "after-await"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_raising_handler_fails_only_its_call(loop: str, kind: str, after_await: bool) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            w = await Wire.open(port)
            other = await Wire.open(port)
            for mode in ("alone", "batch"):
                batch = [
                    call(f"{mode}-a", "echo", 1),
                    call(f"{mode}-n", "nasty", kind, after_await),
                    call(f"{mode}-b", "echo_await", 2),
                    call(f"{mode}-c", "echo", 3),
                ]
                if mode == "alone":
                    rs = [(await w.roundtrip([m]))[0] for m in batch]
                else:
                    rs = await w.roundtrip(batch)
                by = {mid(r): r for r in rs}
                assert set(by) == {f"{mode}-{x}" for x in "anbc"}, rs
                bad = by[f"{mode}-n"]
                assert code(bad) == 404, bad
                # the class named: a coroutine's StopIteration surfaces as RuntimeError
                named = bad["MESSAGE"]["EXCEPTION"]
                expect = {"StopIteration": ("StopIteration", "RuntimeError")}.get(kind, (kind,))
                assert named in expect, bad
                assert [result(by[f"{mode}-{x}"]) for x in "abc"] == [1, 2, 3]
            # the connection, another connection and the counters are intact
            assert result((await other.roundtrip([call("o", "echo", 9)]))[0]) == 9
            assert result((await w.roundtrip([call("alone-n", "echo", 5)]))[0]) == 5
            assert server.running_call_count == 0
            await w.close()
            await other.close()

    run_on(loop, main)


@pytest.mark.parametrize(
    "features", [ALL, [f for f in ALL if f != "cancel"]], ids=["cancel", "no-cancel"]
)
@pytest.mark.parametrize("after_await", [False, True], ids=["sync", "after-await"])
def test_a_stray_cancellederror_is_407_or_404_and_frees_the_id(
    loop: str, after_await: bool, features: list[str]
) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            w = await Wire.open(port, features=features)
            rs = await w.roundtrip(
                [
                    call("x", "nasty", "CancelledError", after_await),
                    call("y", "echo", "y"),
                ]
            )
            by = {mid(r): r for r in rs}
            assert code(by["x"]) == (407 if "cancel" in features else 404), by["x"]
            assert result(by["y"]) == "y"
            # ID free again, and the call counted nowhere
            r = (await w.roundtrip([call("x", "echo", "again")]))[0]
            assert code(r) == 200 and result(r) == "again", r
            assert server.running_call_count == 0
            assert await w.sync_point() == []
            await w.close()

    run_on(loop, main)


# -- results that cannot be sent -------------------------------------------------------


@pytest.mark.parametrize("after_await", [False, True], ids=["sync", "after-await"])
@pytest.mark.parametrize("kind", ["set", "object", "bigint", "cycle", "nested_set"])
def test_an_unencodable_result_is_405_for_that_call_only(
    loop: str, kind: str, after_await: bool
) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            rs = await w.roundtrip(
                [
                    call("a", "echo", "a"),
                    call("bad", "bad_result", kind, after_await),
                    call("b", "echo_await", "b"),
                ]
            )
            by = {mid(r): r for r in rs}
            assert code(by["bad"]) == 405, by["bad"]
            assert "cannot encode" in by["bad"]["MESSAGE"]["MESSAGE"], by["bad"]
            assert result(by["a"]) == "a" and result(by["b"]) == "b"
            assert await w.sync_point() == []
            await w.close()

    run_on(loop, main)


@pytest.mark.parametrize("after_await", [False, True], ids=["sync", "after-await"])
def test_a_result_holding_the_separator_is_405_in_separator_framing(
    loop: str, after_await: bool
) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port, features=None)  # 0.0.3: separator framing
            rs = await w.roundtrip(
                [call("a", "echo", 1), call("s", "sep_result", after_await), call("b", "echo", 2)]
            )
            by = {mid(r): r for r in rs}
            assert code(by["s"]) == 405, by["s"]
            assert result(by["a"]) == 1 and result(by["b"]) == 2
            await w.close()

    run_on(loop, main)


# -- deadlines ---------------------------------------------------------------------------


def test_a_suspended_call_past_its_deadline_is_408_and_cancelled(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            w = await Wire.open(port)
            rs = await w.roundtrip(
                [
                    call("d1", "hold", "d1", DEADLINE=0.05),
                    call("e", "echo", "e", DEADLINE=30),
                    call("d2", "hold", "d2", DEADLINE=0.05),
                ]
            )
            by = {mid(r): r for r in rs}
            assert code(by["e"]) == 200
            assert code(by["d1"]) == 408 and code(by["d2"]) == 408, rs
            await state.wait_until(lambda: sorted(state.cancelled) == ["d1", "d2"])
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main)


async def _outcomes(
    port: int, batches: list[list[dict[str, Any]]], features: Any = ALL, allowed: int = 0
) -> Any:
    """The (ID, code, result) of every reply to `batches`, each sent in one write, then
    the replies read up to a sync point."""
    w = await Wire.open(port, features=features)
    out = []
    for batch in batches:
        w.write(batch)
        out.extend(await w.sync_point(allowed))
    await w.close()
    return sorted(
        (str(mid(r)), code(r), repr(result(r)), repr((r.get("MESSAGE") or {}).get("METADATA")))
        for r in out
    )


async def _differential(
    batches: list[list[dict[str, Any]]], settle: Any = None, allowed: int = 0, **options: Any
) -> tuple[Any, Any]:
    """Run `batches` on a server without interceptors (fast lane) and one with a
    pass-through interceptor (general path)."""
    got = []
    for interceptors in ((), (passthrough,)):
        state = State()
        async with serving(state, interceptors=interceptors, **options) as (_server, port):
            got.append(await _outcomes(port, batches, allowed=allowed))
            if settle is not None:
                await settle(state)
    return got[0], got[1]


@pytest.mark.parametrize(
    "name,batch",
    [
        ("sync-deadline-0", [call("z", "echo", 1, DEADLINE=0)]),
        ("await-deadline-0", [call("z", "echo_await", 1, DEADLINE=0)]),
        ("spin-past-deadline", [call("z", "spin_then", 0.1, False, DEADLINE=0.02)]),
        ("spin-then-await", [call("z", "spin_then", 0.1, True, DEADLINE=0.02)]),
        ("stream-deadline-0", [call("z", "count", 2, DEADLINE=0)]),
    ],
)
def test_deadline_outcome_is_the_same_on_the_fast_and_general_paths(
    loop: str, name: str, batch: list[dict[str, Any]]
) -> None:
    async def main() -> None:
        fast, general = await _differential([batch])
        assert fast == general, f"fast lane {fast} vs general path {general}"

    run_on(loop, main)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_running_call(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            w = await Wire.open(port)
            # in separate reads
            w.write([call("x", "hold", "x")])
            await state.started_event("x").wait()
            w.write([cancel("x")])
            await state.wait_until(lambda: "x" in state.cancelled)
            # in one read with the call, and a sync call after it
            w.write([call("y", "hold", "y"), cancel("y"), call("e", "echo", "e")])
            rs = await w.sync_point()
            assert [(mid(r), code(r)) for r in rs] == [("e", 200)], rs
            await state.wait_until(lambda: "y" in state.cancelled)
            # a cancel read after a call that finished in its first step: the docs leave
            # open whether its reply (not yet written) still goes out; at most that reply
            w.write([call("s", "echo", "s"), cancel("s")])
            rs = await w.sync_point()
            assert [(mid(r), code(r), result(r)) for r in rs] in ([("s", 200, "s")], []), rs
            # IDs are free again; nothing else ever arrived for x or y
            rs = await w.roundtrip([call("x", "echo", 1), call("y", "echo", 2)])
            assert sorted((mid(r), code(r), result(r)) for r in rs) == [
                ("x", 200, 1),
                ("y", 200, 2),
            ]
            assert await w.sync_point() == []
            assert state.finished == []
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main)


# -- in-flight limits ------------------------------------------------------------------------


def test_max_inflight_refuses_the_next_call_and_never_leaks(loop: str) -> None:
    limit = 4

    async def main() -> None:
        state = State()
        async with serving(state, max_inflight=limit) as (server, port):
            w = await Wire.open(port)

            async def at_the_limit(tag: str) -> None:
                keys = [f"{tag}-h{i}" for i in range(limit)]
                w.write([call(k, "hold", k) for k in keys] + [call(f"{tag}-over", "echo", 1)])
                r = await w.recv()
                assert (mid(r), code(r)) == (f"{tag}-over", 503), r
                assert "DATA" not in r["MESSAGE"], r
                for k in keys:
                    state.event(k).set()
                rs = await w.recv_n(limit)
                assert sorted(mid(x) for x in rs) == sorted(keys)
                assert all(code(x) == 200 for x in rs), rs

            await at_the_limit("first")
            rng = random.Random(15)
            for rnd in range(150):
                batch: list[dict[str, Any]] = []
                kinds = []
                for k in range(limit):
                    kind = rng.choice(
                        [
                            "sync",
                            "await",
                            "raise",
                            "stray-cancel",
                            "405",
                            "cancelled",
                            "deadline",
                            "oneway",
                            "unknown",
                            "402",
                            "kept",
                            "stream",
                        ]
                    )
                    i = f"{rnd}-{k}"
                    kinds.append(kind)
                    batch += {
                        "sync": [call(i, "echo", 1)],
                        "await": [call(i, "echo_await", 1)],
                        "raise": [call(i, "nasty", "ValueError", rng.random() < 0.5)],
                        "stray-cancel": [call(i, "nasty", "CancelledError", rng.random() < 0.5)],
                        "405": [call(i, "bad_result", "set", rng.random() < 0.5)],
                        "cancelled": [call(i, "hold", i), cancel(i)],
                        "deadline": [call(i, "hold", i, DEADLINE=0)],
                        "oneway": [call(i, "echo_await", 1, ONEWAY=True)],
                        "unknown": [call(i, "nope")],
                        "402": [call(i, "echo", 1, 2, 3)],
                        "kept": [call(i, "echo_await", 1, RETURN=False)],
                        "stream": [call(i, "count_await", 2)],
                    }[kind]
                w.write(batch)
                await w.sync_point()
                await state.wait_until(lambda: server.running_call_count == 0)
            await w.sync_point()  # replies written after a round's sync point
            await at_the_limit("last")
            await w.close()

    run_on(loop, main)


@pytest.mark.parametrize("method", ["echo", "echo_await", "who_await"])
def test_max_inflight_with_a_pipelined_read_matches_the_general_path(
    loop: str, method: str
) -> None:
    async def main() -> None:
        batch = [call(f"p{i}", method, f"p{i}") for i in range(10)]
        fast, general = await _differential([batch], max_inflight=2)
        # who_await's result holds the call's ID only; compare codes and IDs
        assert [x[:2] for x in fast] == [x[:2] for x in general], (fast, general)

    run_on(loop, main)


def test_sync_calls_in_one_read_are_not_counted_against_max_inflight(loop: str) -> None:
    """README: a coroutine that returns without awaiting is answered within that read;
    protocol.md: only calls *running* count. 20 such calls in one read, limit 2."""

    async def main() -> None:
        state = State()
        async with serving(state, max_inflight=2) as (_server, port):
            w = await Wire.open(port)
            rs = await w.roundtrip([call(f"q{i}", "echo", i) for i in range(20)])
            assert sorted((code(r), result(r)) for r in rs) == [(200, i) for i in range(20)]
            await w.close()

    run_on(loop, main)


def test_the_server_wide_running_count_returns_to_zero(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (server, port):
            wires = await asyncio.gather(*(Wire.open(port) for _ in range(N_CONN)))

            async def storm(i: int, w: Wire) -> None:
                batch = [
                    call(f"{i}-a", "echo", 1),
                    call(f"{i}-b", "nasty", "KeyboardInterrupt", i % 2 == 0),
                    call(f"{i}-c", "hold", f"{i}-c"),
                    cancel(f"{i}-c"),
                    call(f"{i}-d", "bad_result", "set", False),
                    call(f"{i}-e", "hold", f"{i}-e", DEADLINE=0.01),
                    call(f"{i}-f", "echo_await", 1, ONEWAY=True),
                ]
                w.write(batch)
                await w.sync_point()

            await asyncio.gather(*(storm(i, w) for i, w in enumerate(wires)))
            await state.wait_until(lambda: server.running_call_count == 0)
            r = (await wires[0].roundtrip([call("u", "system.lenUndoneTasks")]))[0]
            assert result(r) == 1, r  # this call only
            for w in wires:
                await w.close()
            await state.wait_until(lambda: server.connection_count == 0)

    run_on(loop, main)


# -- interceptors ---------------------------------------------------------------------------


def test_an_interceptor_sees_every_call_including_synchronous_ones(loop: str) -> None:
    async def main() -> None:
        state = State()
        seen: list[tuple[str, str]] = []

        async def spy(ctx: Any, call_next: Any) -> Any:
            if ctx.id.startswith("__sync"):
                return await call_next(ctx)
            try:
                value = await call_next(ctx)
            except BaseException as exc:
                seen.append((ctx.id, type(exc).__name__))
                raise
            seen.append((ctx.id, "ok"))
            return value

        async with serving(state, interceptors=[spy]) as (_server, port):
            wires = await asyncio.gather(*(Wire.open(port) for _ in range(50)))
            expect: dict[str, str] = {}

            async def one(i: int, w: Wire) -> None:
                batch = [
                    call(f"{i}-a", "echo", 1),
                    call(f"{i}-b", "echo_await", 1),
                    call(f"{i}-c", "nasty", "ValueError", False),
                    call(f"{i}-d", "nasty", "SystemExit", True),
                    call(f"{i}-e", "who", f"{i}-e"),
                    call(f"{i}-f", "echo", 1, ONEWAY=True),
                    call(f"{i}-g", "echo", 1, RETURN=False),
                ]
                expect.update(
                    {
                        f"{i}-a": "ok",
                        f"{i}-b": "ok",
                        f"{i}-c": "ValueError",
                        f"{i}-d": "SystemExit",
                        f"{i}-e": "ok",
                        f"{i}-f": "ok",
                        f"{i}-g": "ok",
                    }
                )
                w.write(batch)
                await w.sync_point()

            await asyncio.gather(*(one(i, w) for i, w in enumerate(wires)))
            await state.wait_until(lambda: len(seen) >= len(expect))
            got: dict[str, str] = {}
            for i, outcome in seen:
                assert i not in got, f"{i} seen twice"
                got[i] = outcome
            # SystemExit may be wrapped by the runtime before interceptors see it
            assert {k: v for k, v in got.items() if v != "ok"}.keys() == {
                k for k, v in expect.items() if v != "ok"
            }
            assert got.keys() == expect.keys()
            for w in wires:
                await w.close()

    run_on(loop, main)


# -- asyncio.timeout, TaskGroup, call_soon ---------------------------------------------------


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_timeout_and_taskgroup_work_from_the_first_line(loop: str, mode: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            wires = await asyncio.gather(*(Wire.open(port) for _ in range(20)))
            msgs = [
                call("t0", "timeout_first_line", False),
                call("t1", "timeout_first_line", True),
                call("g0", "taskgroup_first_line", 3, False),
                call("g1", "taskgroup_first_line", 3, True),
                call("g2", "taskgroup_first_line", 0, False),
            ]
            expect = {
                "t0": "no-timeout",
                "t1": "timed-out",
                "g0": [0, 2, 4],
                "g1": "group-failed",
                "g2": [],
            }

            async def one(w: Wire) -> None:
                if mode == "pipelined":
                    rs = await w.roundtrip(msgs)
                else:
                    rs = [(await w.roundtrip([m]))[0] for m in msgs]
                got = {mid(r): (code(r), result(r)) for r in rs}
                assert got == {k: (200, v) for k, v in expect.items()}, got

            await asyncio.gather(*(one(w) for w in wires))
            for w in wires:
                await w.close()

    run_on(loop, main)


# -- ordering ----------------------------------------------------------------------------------


def test_pipelined_sync_and_suspending_calls_match_their_ids(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            n = 60
            batch = [
                call(f"i{k}", "add", k, 1000) if k % 2 == 0 else call(f"i{k}", "hold", f"i{k}")
                for k in range(n)
            ]
            w.write(batch)
            # the synchronous half is answered without anything being released
            first = await w.recv_n(n // 2)
            assert sorted((mid(r), result(r)) for r in first) == sorted(
                (f"i{k}", k + 1000) for k in range(0, n, 2)
            )
            held = [f"i{k}" for k in range(1, n, 2)]
            random.Random(3).shuffle(held)
            for key in held:
                state.event(key).set()
            rest = await w.recv_n(n // 2)
            assert sorted((mid(r), code(r), result(r)) for r in rest) == sorted(
                (k, 200, k) for k in held
            )
            assert await w.sync_point() == []
            await w.close()

    run_on(loop, main)


# -- disconnects -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_client_gone_mid_batch_cancels_its_calls_only(loop: str, how: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state, half_close_timeout=0) as (server, port):
            other = await Wire.open(port)
            other.write([call("keep", "hold", "keep")])
            await state.started_event("keep").wait()
            w = await Wire.open(port)
            batch = []
            for k in range(100):
                batch.append(call(f"b{k}", "hold", f"b{k}") if k % 2 else call(f"b{k}", "echo", k))
            raw = b"".join(w.frame(m) for m in batch) + struct.pack(">I", 100) + b"partial"
            sock = w.writer.get_extra_info("socket")
            if how == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.writer.write(raw)
            await w.writer.drain()
            await state.wait_until(lambda: len(state.started) >= 51)
            w.writer.close()
            await state.wait_until(lambda: len(state.cancelled) == 50)
            assert "keep" not in state.cancelled
            state.event("keep").set()
            r = await other.recv()
            assert (mid(r), code(r), result(r)) == ("keep", 200, "keep")
            await state.wait_until(lambda: server.running_call_count == 0)
            await other.close()

    run_on(loop, main)


# -- streams, oneway and kept calls mixed in one read -----------------------------------------


def test_streams_notify_and_delay_mixed_with_plain_calls_in_one_read(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            batch = [
                call("a", "echo", "a"),
                call("s", "count", 3),
                call("n", "bump", ONEWAY=True),
                call("d", "echo", "kept", RETURN=False),
                call("b", "echo_await", "b"),
                call("s2", "count_await", 2),
                call("n2", "bump", ONEWAY=True),
                call("c", "old_echo", "c"),
                call("d2", "nasty", "ValueError", False, RETURN=False),
            ]
            w.write(batch)
            rs = await w.sync_point()
            while len(rs) < 2 + 5 + 4 + 1:
                rs.append(await w.recv())
            by: dict[str, list[int]] = {}
            for r in rs:
                by.setdefault(mid(r), []).append(code(r))
            assert by == {
                "a": [200],
                "b": [200],
                "c": [300],
                "s": [201, 202, 202, 202, 206],
                "s2": [201, 202, 202, 206],
            }, by
            items = [result(r) for r in rs if mid(r) == "s" and code(r) == 202]
            assert items == [0, 1, 2]
            await state.wait_until(lambda: state.bumps == 2)
            r = (await w.roundtrip([call("g", "system.getresult", "d")]))[0]
            assert (code(r), result(r)) == (200, "kept"), r
            r = (await w.roundtrip([call("g2", "system.getresult", "d2")]))[0]
            assert code(r) == 404, r
            assert await w.sync_point() == []
            await w.close()

    run_on(loop, main)


# -- one connection floods, another calls ------------------------------------------------------


def test_a_flood_of_synchronous_calls_does_not_starve_another_connection(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            flood = await Wire.open(port)
            victim = await Wire.open(port)
            stop = asyncio.Event()
            sent = 0
            cap = 200_000

            async def writer() -> None:
                nonlocal sent
                while not stop.is_set() and sent < cap:
                    flood.write([call(f"f{sent + k}", "echo", k) for k in range(1000)])
                    sent += 1000
                    await flood.writer.drain()
                    await asyncio.sleep(0)  # drain() does not yield below the high-water mark

            async def reader() -> None:
                while code(await flood.recv()) != 101:  # until the pong sent after the flood
                    pass

            wt = asyncio.create_task(writer())
            rt = asyncio.create_task(reader())
            while sent < 20_000:
                await asyncio.sleep(0.001)
            # the victim's calls are answered while the flood goes on
            for k in range(20):
                r = (await victim.roundtrip([call(f"v{k}", "echo_await", k)]))[0]
                assert result(r) == k
            assert sent < cap, "the other connection waited for the whole flood"
            stop.set()
            await wt
            flood.write([{"MPRPC": "0.1", "HEARTBEAT": "ping"}])
            await rt
            await flood.close()
            await victim.close()

    run_on(loop, main)


# -- errors in a batch ---------------------------------------------------------------------


def test_errors_in_one_call_of_a_batch_do_not_touch_the_others(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            batch: list[dict[str, Any]] = []
            expect: dict[Any, int] = {}
            rng = random.Random(7)
            for k in range(200):
                i = f"e{k}"
                kind = rng.choice(["ok", "ok-await", "401", "402", "404", "405", "400", "406"])
                if kind == "ok":
                    batch.append(call(i, "add", k, 1))
                elif kind == "ok-await":
                    batch.append(call(i, "echo_await", k + 1))
                elif kind == "401":
                    batch.append(call(i, "missing"))
                elif kind == "402":
                    batch.append(call(i, "add"))
                elif kind == "404":
                    batch.append(call(i, "raise_value", k))
                elif kind == "405":
                    batch.append(call(i, "bad_result", "bigint", rng.random() < 0.5))
                elif kind == "400":
                    batch.append({"MPRPC": "0.1", "ID": i, "METHOD": "echo", "ARGS": 5})
                else:
                    batch.append(call(i, "system.nope"))
                expect[i] = 200 if kind.startswith("ok") else int(kind)
            rs = await w.roundtrip(batch)
            got = {mid(r): r for r in rs}
            assert {i: code(r) for i, r in got.items()} == expect
            for i, r in got.items():
                if expect[i] == 200:
                    assert result(r) == int(i[1:]) + 1
            await w.close()

    run_on(loop, main)


# -- call shapes the fast lane might special-case ------------------------------------------------


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_call_shapes_answer_as_on_the_general_path(loop: str, mode: str) -> None:
    batch = [
        call("a1", "add", 1),
        call("a2", "add", 1, 2),
        call("a3", "add", 1, 2, 3),
        call("a4", "add"),
        call("a5", "add", KWARGS={"a": 1, "b": 5}),
        call("a6", "add", 1, KWARGS={"b": 7}),
        call("a7", "add", 1, KWARGS={"a": 7}),
        {"MPRPC": "0.1", "ID": "a8", "METHOD": "add", "ARGS": None, "KWARGS": {"a": 2}},
        {"MPRPC": "0.1", "ID": "a9", "METHOD": "getvar"},
        call("o1", "old_echo", 1),
        call("m1", "meth", 2),
        call("p1", "partial", 3),
        call("r1", "echo", 1, RETURN=True),
        call(7, "echo", 1),
        call("", "echo", 1),
        call("dup", "hold", "dup"),
        call("dup", "echo", 2),
        call("s1", "echo", 1, ONEWAY=False),
        call("x1", "echo", b"\x00" * 10),
        call("x2", "echo", {"nested": [1, {"a": None}]}),
        call("md1", "set_meta", "v1", False),
        call("md2", "set_meta", "v2", True),
        call("md3", "set_meta", "v3", False, METADATA={"in": "x"}),
        call("md4", "stream_meta", 2),
    ]
    batches = [batch] if mode == "pipelined" else [[m] for m in batch]

    async def settle(state: State) -> None:
        state.event("dup").set()

    async def main() -> None:
        fast, general = await _differential(batches, settle=settle, allowed=1)
        assert fast == general, f"fast lane {fast}\ngeneral path {general}"

    run_on(loop, main)


@pytest.mark.parametrize("features", [None, ["cancel"], ALL], ids=["0.0.3", "separator", "all"])
def test_old_and_modern_framings_answer_alike(loop: str, features: Any) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port, features=features)
            msgs = [
                call(f"k{i}", "who" if i % 2 else "add", f"k{i}" if i % 2 else i) for i in range(40)
            ]
            rs = await w.roundtrip(msgs)
            for r in rs:
                assert code(r) == 200, r
                i = int(mid(r)[1:])
                assert result(r) == ({"id": mid(r), "var": None, "task": True} if i % 2 else i + 1)
            await w.close()

    run_on(loop, main)


# -- the application's own task factory -------------------------------------------------------


@pytest.mark.parametrize("max_inflight", [4, 0])
@pytest.mark.xfail(
    sys.version_info >= (3, 12),
    strict=True,
    reason="BUG: with asyncio.eager_task_factory a call finishing in its first step stays "
    "in the connection's running calls for ever: max_inflight fills up (503 for every "
    "call), running_call_count never returns to 0",
)
def test_calls_under_asyncio_eager_task_factory_release_their_slot(max_inflight: int) -> None:
    """Python 3.12's `asyncio.eager_task_factory` is the application's choice of how
    tasks start (uvloop refuses it). A call still runs in its own task; what it may not do
    is keep counting as running once answered (protocol.md: max_inflight counts calls
    *running*; `Server.running_call_count`: calls running now)."""
    if not hasattr(asyncio, "eager_task_factory"):
        pytest.skip("asyncio.eager_task_factory is Python 3.12+")

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        for interceptors in ((), (passthrough,)):
            state = State()
            async with serving(state, interceptors=interceptors, max_inflight=max_inflight) as (
                server,
                port,
            ):
                w = await Wire.open(port)
                for k in range(12):  # one per read: the fast lane where it applies
                    r = (await w.roundtrip([call(f"k{k}", "echo", k)]))[0]
                    assert (code(r), result(r)) == (200, k), (interceptors, r)
                rs = await w.roundtrip([call(f"p{k}", "echo", k) for k in range(12)])
                assert sorted(code(r) for r in rs) == [200] * 12, (interceptors, rs)
                assert server.running_call_count == 0, (interceptors, "calls leaked")
                await w.close()

    run_on("asyncio", main)


def test_a_plain_task_factory_still_gives_each_call_its_own_task(loop: str) -> None:
    """A task factory of the application's (here: plain tasks, recorded): every call is
    still its own task, limits are still released, contextvars still do not leak."""

    async def main() -> None:
        made: list[asyncio.Task[Any]] = []

        def factory(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=lp, **kw)
            made.append(task)
            return task

        asyncio.get_running_loop().set_task_factory(factory)  # type: ignore[arg-type]
        state = State()
        async with serving(state, max_inflight=3) as (server, port):
            w = await Wire.open(port)
            for k in range(10):
                rs = await w.roundtrip([call(f"s{k}", "setvar", k), call(f"g{k}", "getvar")])
                assert sorted((mid(r), code(r), result(r)) for r in rs) == [
                    (f"g{k}", 200, None),
                    (f"s{k}", 200, None),
                ]
                r = (await w.roundtrip([call(f"w{k}", "who", f"w{k}")]))[0]
                assert code(r) == 200 and result(r)["id"] == f"w{k}", r
            tasks = [state.tasks[f"w{k}"] for k in range(10)]
            assert len({id(t) for t in tasks}) == 10 and all(t in made for t in tasks)
            await state.wait_until(lambda: server.running_call_count == 0)
            await w.close()

    run_on(loop, main)


# -- random calls, fast lane against general path ------------------------------------------------


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 1:
        return rng.choice(["", "x", "é", "a##PRO-END##b", "\x00"])
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return rng.random() * 1e6
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
    if kind == 5:
        return rng.randint(-5, 5)
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {str(i): _random_value(rng, depth + 1) for i in range(rng.randrange(3))}
    return {rng.randint(0, 3): _random_value(rng, depth + 1)}  # a non-string key


METHODS = [
    "echo",
    "echo_await",
    "add",
    "getvar",
    "setvar",
    "setvar_await",
    "old_echo",
    "count",
    "count_await",
    "raise_value",
    "partial",
    "meth",
    "bump",
    "missing",
    "system.nope",
    "system.lenUndoneTasks",
]


def _random_call(rng: random.Random, k: int, ids: list[str]) -> dict[str, Any]:
    id: Any = f"r{k}" if rng.random() < 0.9 or not ids else rng.choice(ids)
    ids.append(id)
    msg: dict[str, Any] = {"MPRPC": "0.1", "ID": id, "METHOD": rng.choice(METHODS)}
    if msg["METHOD"] in ("count", "count_await"):
        msg["ARGS"] = [rng.randrange(4)]
    elif rng.random() < 0.8:
        msg["ARGS"] = [_random_value(rng) for _ in range(rng.randrange(4))]
    elif rng.random() < 0.5:
        msg["ARGS"] = rng.choice([None, 5, "x", {}])
    if rng.random() < 0.2:
        msg["KWARGS"] = rng.choice([{}, None, {"x": 1}, {"a": 1, "b": 2}, [1], {"b": 3}])
    extra = rng.random()
    if extra < 0.05:
        msg["RETURN"] = rng.choice([True, False, 1])
    elif extra < 0.1:
        msg["ONEWAY"] = rng.choice([True, False])
    elif extra < 0.15:
        msg["DEADLINE"] = rng.choice([30, 0, -1, "x"])
    elif extra < 0.2:
        msg["METADATA"] = rng.choice([{}, {"a": "b"}, {"a": 1}])
    elif extra < 0.22:
        msg["EXTRA"] = 1
    one_arg = ("echo", "old_echo", "raise_value", "setvar", "setvar_await")
    args = msg.get("ARGS")
    fits = rng.random() < 0.7  # mostly calls that fit, some that do not
    if msg["METHOD"] in one_arg and isinstance(args, list) and len(args) != 1 and fits:
        msg["ARGS"] = [_random_value(rng)]
    return msg


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_random_calls_answer_alike_on_the_fast_and_general_paths(
    loop: str, seed: int, mode: str
) -> None:
    rng = random.Random(seed)
    ids: list[str] = []
    msgs = [_random_call(rng, k, ids) for k in range(60)]
    if mode == "one-per-read":
        batches = [[m] for m in msgs]
    else:
        batches = [msgs[i : i + 7] for i in range(0, len(msgs), 7)]

    async def main() -> None:
        got = []
        for interceptors in ((), (passthrough,)):
            state = State()
            async with serving(state, interceptors=interceptors) as (_server, port):
                w = await Wire.open(port)
                seen: list[tuple[str, int, str]] = []
                for batch in batches:
                    w.write(batch)
                    for r in await w.sync_point():
                        seen.append((repr(mid(r)), code(r), repr(result(r))))
                got.append(sorted(seen))
                await w.close()
        assert got[0] == got[1], [(a, b) for a, b in zip(got[0], got[1], strict=False) if a != b][
            :5
        ]

    run_on(loop, main)


# -- a call's context asked for after the call returned ---------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="BUG: without interceptors, current_call() asked for after the handler returned "
    "(call_soon, a task outliving it) stores a context that the next call reusing the ID "
    "gets as its own: wrong method in current_call(), the old call's response metadata sent",
)
@pytest.mark.parametrize("after_await", [False, True], ids=["sync", "after-await"])
def test_a_context_asked_for_late_never_becomes_the_next_calls(
    loop: str, after_await: bool
) -> None:
    """An ID is free again once its call is answered (protocol.md), and a call's context
    is its own (issue 15: every call runs with its own context). A callback the handler
    scheduled asks for the context after the call returned; then a new call reuses the ID.
    The new call must see its own method and send no metadata it did not set. (With an
    interceptor installed, contexts are built up front and this holds.)"""

    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            r = (await w.roundtrip([call("x", "late_context", "first", after_await)]))[0]
            assert result(r) == "first"
            await state.wait_until(lambda: len(state.soon) == 1)
            assert state.soon == [("first", "x", "late_context")]  # its own, while it lasts
            r = (await w.roundtrip([call("x", "remaining")]))[0]
            assert result(r)["method"] == "remaining", r
            assert "METADATA" not in r["MESSAGE"], r
            await w.close()

    run_on(loop, main)


@pytest.mark.xfail(
    strict=True,
    reason="BUG: without interceptors, each call whose context is asked for after it "
    "returned leaves a CallContext on its connection for the connection's life "
    "(~0.5 KB a call, 3,000 calls: >1 MB)",
)
def test_contexts_asked_for_late_are_not_kept_per_call(loop: str) -> None:
    import gc
    import tracemalloc

    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            for k in range(200):  # warm up: buffers, caches, interned strings
                await w.roundtrip([call(f"warm{k}", "late_context", "quiet", False)])
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for k in range(3000):
                    await w.roundtrip([call(f"m{k}", "late_context", "quiet", False)])
                await asyncio.sleep(0)  # the last call's callback
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert grown < 300_000, f"{grown} bytes kept after 3,000 answered calls"
            await w.close()

    run_on(loop, main)


# -- shutdown, half-close and idle timeout with calls taken one per read ---------------------------


@pytest.mark.parametrize("features", [ALL, ["length-framing"]], ids=["cancel", "no-cancel"])
def test_shutdown_answers_calls_started_one_per_read(loop: str, features: list[str]) -> None:
    async def main() -> None:
        state = State()
        server_cm = serving(state, grace_period=0.2)
        server, port = await server_cm.__aenter__()
        try:
            w = await Wire.open(port, features=features)
            for k in range(3):
                w.write([call(f"h{k}", "hold", f"h{k}")])
                await state.started_event(f"h{k}").wait()
            closing = asyncio.create_task(server.close())
            await state.wait_until(lambda: server.draining)
            w.write([call("late", "echo", 1)])
            w.write([call("health", "system.health")])
            replies = []
            while True:
                try:
                    replies.append(await w.recv())
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
            await closing
            by = {mid(r): (code(r), result(r)) for r in replies}
            assert by["late"][0] == 503, replies
            assert by["health"] == (200, "NOT_SERVING"), replies
            expect = 407 if "cancel" in features else 503
            assert [by[f"h{k}"][0] for k in range(3)] == [expect] * 3, replies
            assert sorted(state.cancelled) == ["h0", "h1", "h2"]
        finally:
            await server_cm.__aexit__(None, None, None)

    run_on(loop, main)


@pytest.mark.parametrize("kind", ["sync", "held"])
def test_half_close_after_a_call_read_alone_gets_its_reply_then_eof(loop: str, kind: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            if kind == "sync":
                w.write([call("a", "echo", "a")])
            else:
                w.write([call("a", "hold", "a")])
                await state.started_event("a").wait()
            w.writer.write_eof()
            if kind == "held":
                state.event("a").set()
            r = await w.recv()
            assert (mid(r), code(r), result(r)) == ("a", 200, "a")
            with pytest.raises(asyncio.IncompleteReadError):
                await w.recv()  # then the server closes
            await w.close()

    run_on(loop, main)


def test_a_running_call_read_alone_keeps_its_connection_from_idling(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state, idle_timeout=0.2) as (server, port):
            w = await Wire.open(port)
            w.write([call("a", "hold", "a")])
            await state.started_event("a").wait()
            await asyncio.sleep(0.7)  # the time that would make it idle, not a sync point
            assert server.connection_count == 1
            state.event("a").set()
            r = await w.recv()
            assert (mid(r), code(r)) == ("a", 200), r
            r = await w.recv()  # and once nothing runs, the idle close
            assert code(r) == 504, r

    run_on(loop, main)


# -- the application cancels its own handler's task -----------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a handler whose task the application itself cancels (task.cancel() from "
    "its own code or watchdog timer) is never answered, and its ID stays in flight for "
    "ever (each reuse: 400 duplicate); fast lane and general path alike",
)
@pytest.mark.parametrize("features", [ALL, ["length-framing"]], ids=["cancel", "no-cancel"])
@pytest.mark.parametrize("how", ["now", "watchdog"])
@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_a_handler_cancelled_by_the_application_is_answered_and_frees_its_id(
    loop: str, how: str, features: list[str], mode: str
) -> None:
    """protocol.md: "a CancelledError the method raises while its call was not cancelled
    gets 407 when CANCEL is negotiated, else 404, and its ID is free again". Neither the
    client (CANCEL) nor the server (deadline, shutdown, disconnect) cancelled this call."""

    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port, features=features)
            batch = [call("x", "app_cancels_itself", how)]
            if mode == "pipelined":
                batch.append(call("y", "echo", "y"))
            w.write(batch)
            replies = await w.sync_point()  # once no call runs any more
            by = {mid(r): code(r) for r in replies}
            assert by.get("x") == (407 if "cancel" in features else 404), replies
            r = (await w.roundtrip([call("x", "echo", "again")]))[0]
            assert (code(r), result(r)) == (200, "again"), r
            await w.close()

    run_on(loop, main)


# -- oneway and kept calls against the limits ------------------------------------------------------


@pytest.mark.parametrize("kind", ["ONEWAY", "RETURN"])
def test_oneway_and_kept_calls_count_towards_max_inflight_while_they_run(
    loop: str, kind: str
) -> None:
    extra = {"ONEWAY": True} if kind == "ONEWAY" else {"RETURN": False}

    async def main() -> None:
        state = State()
        async with serving(state, max_inflight=2) as (server, port):
            w = await Wire.open(port)
            for k in range(2):
                w.write([call(f"h{k}", "hold", f"h{k}", **extra)])
                await state.started_event(f"h{k}").wait()
            r = (await w.roundtrip([call("over", "echo", 1)]))[0]
            assert (mid(r), code(r)) == ("over", 503), r
            state.event("h0").set()
            state.event("h1").set()
            await state.wait_until(lambda: server.running_call_count == 0)
            rs = await w.roundtrip([call(f"q{k}", "echo", k) for k in range(3)])
            assert sorted(code(r) for r in rs) == [200, 200, 200]
            await w.close()

    run_on(loop, main)


def test_orphaned_oneway_calls_run_on_up_to_kept_results_server_wide(loop: str) -> None:
    """protocol.md: a oneway call runs to completion if its client disconnects, at most
    `kept_results` such orphaned calls at a time server-wide; beyond that they are
    cancelled."""

    async def main() -> None:
        state = State()
        async with serving(state, kept_results=3, half_close_timeout=0) as (server, port):
            wires = [await Wire.open(port) for _ in range(5)]
            for i, w in enumerate(wires):
                w.write([call(f"o{i}", "hold", f"o{i}", ONEWAY=True)])
                await state.started_event(f"o{i}").wait()
            for w in wires:
                await w.close()
            await state.wait_until(lambda: len(state.cancelled) >= 2)
            await state.wait_until(lambda: server.connection_count == 0)
            assert len(state.cancelled) == 2, state.cancelled
            assert server.running_call_count == 3
            for i in range(5):
                state.event(f"o{i}").set()
            await state.wait_until(lambda: server.running_call_count == 0)
            assert len(state.finished) == 3

    run_on(loop, main)


# -- a client that does not read: calls wait for the output, then start in order ---------------


def test_calls_waiting_for_the_output_start_in_order_then_the_fast_lane_resumes(loop: str) -> None:
    async def main() -> None:
        state = State()
        async with serving(state, max_output_buffer=65536) as (server, port):
            w = await Wire.open(port)
            n = 200
            for k in range(n):  # one per read while the client reads nothing
                w.write([call(f"b{k}", "big", 100_000)])
                await w.writer.drain()
            for k in range(50):
                w.write([call(f"o{k}", "order", f"o{k}")])
                await w.writer.drain()
            w.write([cancel("o49")])
            await w.writer.drain()
            got: dict[str, list[int]] = {}
            while len(got) < n + 49:
                r = await w.recv()
                got.setdefault(mid(r), []).append(code(r))
            rest = await w.sync_point()
            for r in rest:
                got.setdefault(mid(r), []).append(code(r))
            assert all(v == [200] for v in got.values()), {
                k: v for k, v in got.items() if v != [200]
            }
            assert set(got) >= {f"b{k}" for k in range(n)} | {f"o{k}" for k in range(49)}
            started = [t for t in state.finished if t.startswith("o")]
            assert started[:49] == [f"o{k}" for k in range(49)], started
            # and the connection serves one-per-read calls as before
            for k in range(5):
                r = (await w.roundtrip([call(f"after{k}", "who", f"after{k}")]))[0]
                assert code(r) == 200 and result(r)["id"] == f"after{k}"
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main)


@pytest.mark.parametrize("mode", ["one-per-read", "pipelined"])
def test_response_metadata_set_by_a_handler_goes_back_with_its_own_reply(
    loop: str, mode: str
) -> None:
    async def main() -> None:
        state = State()
        async with serving(state) as (_server, port):
            w = await Wire.open(port)
            msgs = [call(f"m{k}", "set_meta", f"v{k}", k % 2 == 1) for k in range(10)]
            msgs += [call(f"e{k}", "echo", k) for k in range(5)]
            if mode == "pipelined":
                rs = await w.roundtrip(msgs)
            else:
                rs = [(await w.roundtrip([m]))[0] for m in msgs]
            for r in rs:
                meta = r["MESSAGE"].get("METADATA")
                if mid(r).startswith("m"):
                    assert meta == {"k": "v" + mid(r)[1:]}, r
                else:
                    assert meta is None, r
            await w.close()

    run_on(loop, main)


# -- over TLS ----------------------------------------------------------------------------------


def test_tasks_and_contextvars_over_tls(loop: str, tmp_path: Any) -> None:
    from helpers import tls_contexts

    server_ctx, client_ctx = tls_contexts(tmp_path)

    async def main() -> None:
        state = State()
        async with serving(state, ssl=server_ctx) as (_server, port):
            wires = [await Wire.open(port, ssl=client_ctx) for _ in range(20)]

            async def one(i: int, w: Wire) -> None:
                msgs = []
                for k in range(4):
                    msgs += [
                        call(f"s{i}-{k}", "setvar", k),
                        call(f"g{i}-{k}", "getvar"),
                        call(f"w{i}-{k}", "who", f"w{i}-{k}"),
                    ]
                for r in [(await w.roundtrip([m]))[0] for m in msgs] + await w.roundtrip(msgs):
                    assert code(r) == 200, r
                    if mid(r).startswith(("s", "g")):
                        assert result(r) is None, r
                    else:
                        assert result(r)["id"] == mid(r) and result(r)["var"] is None, r

            await asyncio.gather(*(one(i, w) for i, w in enumerate(wires)))
            assert len({id(t) for t in state.tasks.values()}) == len(state.tasks) == 20 * 4
            for w in wires:
                await w.close()

    run_on(loop, main)
