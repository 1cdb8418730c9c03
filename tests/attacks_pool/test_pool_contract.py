"""The process pool's promises in the README ("The process pool"), each checked on a
server without interceptors (pool calls by name with positional arguments take the fast
lane) and with a pass-through interceptor (the general path): both must keep them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from attacks_server.fastlane_kit import Wire, call, code, mid, result, run_on

from pymprpc.server.workers import framing

from . import pool_funcs as f
from .pool_kit import serving
from .test_pool_lifecycle import release, wait_dead, wait_pid

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def failures(replies: list[Any]) -> list[Any]:
    return [
        (mid(m), code(m), (m.get("MESSAGE") or {}).get("MESSAGE"))
        for m in replies
        if code(m) != 200
    ]


async def _idle_kill(general: bool, n: int, rounds: int) -> list[Any]:
    """Kill the one idle worker, then at once send `n` calls (in one write)."""
    failed: list[Any] = []
    async with serving(general, max_workers=1) as (_s, port):
        w = await Wire.open(port)
        for r in range(rounds):
            (p,) = await w.roundtrip([call("p", "pid")])
            await asyncio.sleep(0.05)  # idle: past its spin window
            os.kill(result(p), signal.SIGKILL)
            got = await w.roundtrip([call(f"{r}.{i}", "add", i, 1) for i in range(n)])
            failed += failures(got)
        await w.close()
    return failed


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
def test_killing_an_idle_worker_fails_no_single_call_sent_to_it(loop: str, general: bool) -> None:
    """README: killing an idle worker fails nothing, not even a call sent to it as it
    died (it runs on the replacement)."""
    assert run_on(loop, lambda: _idle_kill(general, 1, 5), timeout=100) == []


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
def test_killing_an_idle_worker_fails_no_pipelined_call_sent_to_it(
    loop: str, general: bool
) -> None:
    assert run_on(loop, lambda: _idle_kill(general, 8, 5), timeout=100) == []


def test_system_exit_and_keyboard_interrupt_keep_the_worker(loop: str) -> None:
    """sys.exit() or KeyboardInterrupt fails that call with 404 (SystemExit or
    KeyboardInterrupt); the worker keeps going (the same process answers next)."""

    async def scenario(general: bool) -> Any:
        async with serving(general, max_workers=1) as (_s, port):
            w = await Wire.open(port)
            out = []
            (p0,) = await w.roundtrip([call("p", "pid")])
            for kind in ("exit", "exit0", "interrupt", "custom", "genexit", "recursion"):
                (e,) = await w.roundtrip([call(kind, "raises", kind)])
                (p,) = await w.roundtrip([call("p", "pid")])
                body = e.get("MESSAGE") or {}
                out.append((kind, code(e), body.get("EXCEPTION"), result(p) == result(p0)))
            await w.close()
            return out

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast == [
        ("exit", 404, "SystemExit", True),
        ("exit0", 404, "SystemExit", True),
        ("interrupt", 404, "KeyboardInterrupt", True),
        ("custom", 404, "CustomBase", True),
        ("genexit", 404, "GeneratorExit", True),
        ("recursion", 404, "RecursionError", True),
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_workers_ignore_sigterm_and_sigint(loop: str, tmp_path: Path, sig: int) -> None:
    async def scenario(general: bool, tmp: Path) -> Any:
        async with serving(general) as (_s, port):
            w = await Wire.open(port)
            w.write([call("s", "block", str(tmp), "s")])
            pid = await wait_pid(tmp, "s")
            os.kill(pid, sig)
            await asyncio.sleep(0.1)
            release(tmp, "s")
            (m,) = await w.recv_n(1)
            await w.close()
            return mid(m), code(m), result(m)

    async def main() -> tuple[Any, Any]:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        return await scenario(False, tmp_path / "a"), await scenario(True, tmp_path / "b")

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general == ("s", 200, ["released", "s"])


def test_workers_have_exited_when_close_returns(loop: str) -> None:
    async def scenario(general: bool) -> Any:
        async with serving(general) as (server, port):
            w = await Wire.open(port)
            got = await w.roundtrip([call(str(i), "pid") for i in range(40)])
            pids = {result(m) for m in got}
            await w.close()
            await server.close()
            still = [p for p in pids if not await wait_dead(p)]  # bounded; see the report
            return still, len(pids) >= 1

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general == ([], True)


def late_one(x: Any) -> Any:
    return ["late", x, f.where()]


def late_two(x: Any) -> Any:
    return ["late-two", x]


def test_functions_registered_or_replaced_while_serving(loop: str) -> None:
    """A function registered after the workers started runs in them; one replaced
    (replace=True) answers as the new one, on the pool or off it."""

    async def scenario(general: bool) -> Any:
        async with serving(general) as (server, port):
            w = await Wire.open(port)
            out = []
            out += await w.roundtrip([call("warm", "add", 1, 1)])
            server.register_function(name="late")(late_one)
            out += await w.roundtrip([call("l1", "late", 1)])
            server.register_function(name="late", replace=True)(late_two)
            out += await w.roundtrip([call("l2", "late", 2)])
            server.register_function(name="late", replace=True, executor="thread")(late_one)
            out += await w.roundtrip([call("l3", "late", 3)])
            server.register_function(name="add", replace=True)(late_two)
            out += await w.roundtrip([call("l4", "add", 4)])
            out += await w.roundtrip([call("l5", "add", 4, 5)])

            async def coro(x: Any) -> Any:
                return ["coro", x]

            server.register_function(name="late", replace=True)(coro)
            out += await w.roundtrip([call("l6", "late", 6)])

            def nested(x: Any) -> Any:  # not picklable: the server forks again
                return ["nested", x, f.where()]

            server.register_function(name="late", replace=True)(nested)
            out += await w.roundtrip([call("l7", "late", 7)])
            out += await w.roundtrip([call("l8", "add", 8)])
            await w.close()
            return [(mid(m), code(m), result(m)) for m in out]

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast == [
        ("warm", 200, 2),
        ("l1", 200, ["late", 1, ["main-thread", "other-process"]]),
        ("l2", 200, ["late-two", 2]),
        ("l3", 200, ["late", 3, ["other", "server-process"]]),
        ("l4", 200, ["late-two", 4]),
        ("l5", 402, None),
        ("l6", 200, ["coro", 6]),
        ("l7", 200, ["nested", 7, ["main-thread", "other-process"]]),
        ("l8", 200, ["late-two", 8]),
    ]


def test_many_connections_pipelining_pool_calls_get_their_own_results(loop: str) -> None:
    async def scenario(general: bool) -> Any:
        async with serving(general, max_workers=2) as (_s, port):

            async def one(c: int) -> list[Any]:
                w = await Wire.open(port)
                msgs = []
                for i in range(60):
                    if i == 30 and c == 0:
                        msgs.append(call(f"{c}.{i}", "die"))
                    elif i % 7 == 3:
                        msgs.append(call(f"{c}.{i}", "raises", "value"))
                    else:
                        msgs.append(call(f"{c}.{i}", "add", c * 1000, i))
                got = await w.roundtrip(msgs)
                await w.close()
                return [(mid(m), code(m), result(m)) for m in got]

            rows = await asyncio.gather(*(one(c) for c in range(6)))
            return sorted(r for row in rows for r in row)

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    want = []
    for c in range(6):
        for i in range(60):
            if (i == 30 and c == 0) or i % 7 == 3:
                want.append((f"{c}.{i}", 404, None))
            else:
                want.append((f"{c}.{i}", 200, c * 1000 + i))
    assert fast == sorted(want)


def test_a_plain_function_returning_an_async_iterator_streams_alike(loop: str) -> None:
    async def scenario(general: bool) -> Any:
        async with serving(general) as (server, port):
            server.register_function(name="aiter_p", executor="process")(f.returns_async_iter)
            server.register_function(name="aiter_t", executor="thread")(f.returns_async_iter)
            w = await Wire.open(port)
            out = []
            for name in ("aiter_p", "aiter_t"):
                w.write([call(name, name)])
                while True:
                    m = await w.recv()
                    out.append((mid(m), code(m), result(m)))
                    if code(m) != 202 and code(m) != 201:
                        break
            await w.close()
            return out

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general


@pytest.mark.parametrize("default", ["thread", "app-threads", "inline", "process"])
def test_a_server_with_another_default_executor_answers_alike(loop: str, default: str) -> None:
    """Server(executor=...): plain functions run there, not in the pool; those registered
    with executor="process" still do."""

    async def scenario(general: bool, chosen: Any) -> Any:
        async with serving(general, default=chosen) as (_s, port):
            w = await Wire.open(port)
            out = []
            for cid, name, args in (
                ("w", "where", []),
                ("pw", "p_where2", []),
                ("ctx", "ctx_fields", []),
                ("c", "returns_coro", [3]),
                ("g", "returns_gen", [3]),
                ("a", "add", [1, 2]),
                ("a2", "add", [1, 2, 3]),
                ("m", "set_meta", ["x"]),
                ("pc", "p_where", []),
                ("cw", "c_where", []),
                ("x", "raises", ["exit"]),
            ):
                (m,) = await w.roundtrip([call(cid, name, *args)])
                body = {k: v for k, v in (m.get("MESSAGE") or {}).items() if k != "TRACEBACK"}
                out.append((code(m), sorted(body.items(), key=repr)))
            await w.close()
            return out

    async def main() -> tuple[Any, Any]:
        with contextlib.ExitStack() as stack:
            chosen: Any = default
            if default == "app-threads":
                chosen = stack.enter_context(ThreadPoolExecutor(2))
            return await scenario(False, chosen), await scenario(True, chosen)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    by = {dict(b).get("ID"): (c, dict(b).get("RESULT")) for c, b in fast}
    where = {
        "inline": ["main-thread", "server-process"],
        "process": ["main-thread", "other-process"],
    }.get(default, ["other", "server-process"])
    assert by["w"] == (200, where)
    assert by["cw"] == (200, where)  # Server(executor=...) covers bound methods too
    assert by["pw"] == (200, ["main-thread", "other-process"])
    assert by["pc"] == (200, ["main-thread", "other-process"])
    if default == "process":
        assert by["c"][0] == 404  # a coroutine cannot leave a worker
    else:
        assert by["c"] == (200, ["awaited", 3])
    assert by["g"][0] == 404
    assert by["a"] == (200, 3)
    assert by["a2"][0] == 402


def test_calls_sent_after_a_call_turned_slow_do_not_wait_behind_it(
    loop: str, tmp_path: Path
) -> None:
    """README: a call waits behind a slow one only if it was sent ahead before that one
    turned slow. With one worker blocked in a call that has run for a while, calls sent
    afterwards are all answered (by the other worker) while it still blocks."""

    async def scenario(general: bool, tmp: Path) -> Any:
        async with serving(general, max_workers=2) as (_s, port):
            w = await Wire.open(port)
            await w.roundtrip([call(str(i), "add", i, 0) for i in range(8)])  # both warm
            w.write([call("A", "block", str(tmp), "A")])
            await wait_pid(tmp, "A")
            await asyncio.sleep(0.05)  # "A" has turned slow
            got = []
            for r in range(3):
                w.write([call(f"{r}.{i}", "add", i, r) for i in range(10)])
                got += await asyncio.wait_for(w.recv_n(10), 30)  # a bound, not a timing
            release(tmp, "A")
            (a,) = await w.recv_n(1)
            await w.close()
            return sorted((mid(m), code(m)) for m in got), (mid(a), code(a))

    async def main() -> tuple[Any, Any]:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        return await scenario(False, tmp_path / "a"), await scenario(True, tmp_path / "b")

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast == (sorted((f"{r}.{i}", 200) for r in range(3) for i in range(10)), ("A", 200))


def _nest(n: int) -> Any:
    x: Any = []
    for _ in range(n):
        x = [x]
    return x


def test_values_too_deep_to_pickle_fail_their_call_with_a_clear_error(loop: str) -> None:
    """README: an argument or result that cannot be pickled fails its call with 404
    and a clear message (here: nested past pickle's recursion limit); a result nested
    deeper than MessagePack goes gets the 405 it gets on any executor."""

    async def scenario(general: bool) -> Any:
        async with serving(general) as (_s, port):
            w = await Wire.open(port)
            out = []
            for cid, name, args in (
                ("arg", "arg_info", [_nest(1000)]),
                ("res", "deep", [2000]),
                ("ok", "deep", [50]),
                ("after", "add", [1, 1]),
            ):
                (m,) = await w.roundtrip([call(cid, name, *args)])
                body = m.get("MESSAGE") or {}
                out.append((mid(m), code(m), body.get("EXCEPTION"), body.get("MESSAGE")))
            await w.close()
            return out

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    (arg, res, ok, after) = fast
    if _pickles(_nest(1000)):  # (it does since the MessagePack fallback)
        assert arg[1] == 200
    else:
        assert arg[1] == 404 and "arguments of 'arg_info' cannot be sent" in arg[3]
    # Too deep for MessagePack, whether or not it pickles here: 405, naming the method,
    # as on any other executor (it was 404 "cannot be sent back" where it did not pickle).
    assert res[1] == 405 and "deep(): result not delivered" in res[3]
    assert ok[:2] == ("ok", 200) and after[:2] == ("after", 200)


def _pickles(value: Any) -> bool:
    """Whether the pool's pickling takes `value` on this Python (nesting depth is its
    limit here: lists 1,000 deep everywhere since the MessagePack fallback, 2,000 on
    3.13)."""
    try:
        framing.encode(0, framing.OK, value)
    except RecursionError:
        return False
    return True


def test_response_metadata_a_client_cannot_take_fails_alike_everywhere(loop: str) -> None:
    """Response metadata set in a worker is checked as on a thread or inline: the same
    reply (405 for what cannot be sent, 404 for a TypeError from the API), with and
    without interceptors."""
    kinds = ("int-value", "int-key", "api-int", "big", "many", "reserved")

    async def scenario(general: bool) -> Any:
        async with serving(general) as (_s, port):
            w = await Wire.open(port)
            out: dict[str, Any] = {}
            for name in ("bad_meta", "t_bad_meta", "i_bad_meta"):
                for kind in kinds:
                    (m,) = await w.roundtrip([call(kind, name, kind)])
                    body = {k: v for k, v in (m.get("MESSAGE") or {}).items() if k != "TRACEBACK"}
                    text = str(body.pop("MESSAGE", "")).replace(f"{name}()", "<name>()")
                    body.pop("DATA", None)
                    out.setdefault(name, []).append((code(m), text, sorted(body.items())))
            await w.close()
            return out

    async def main() -> tuple[Any, Any]:
        return await scenario(False), await scenario(True)

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general
    assert fast["bad_meta"] == fast["t_bad_meta"] == fast["i_bad_meta"]
    assert [c for c, _, _ in fast["bad_meta"]] == [405, 405, 404, 405, 405, 200]


def test_a_worker_dying_while_its_child_holds_its_socket_fails_its_call(
    loop: str, tmp_path: Path
) -> None:
    """The worker forks a child that keeps the worker's socket open, then dies: no end
    of file comes, yet its call fails with 404 WorkerDied (the process's exit is seen)
    long before the child lets go, and the server serves on."""

    async def scenario(general: bool, tmp: Path) -> Any:
        async with serving(general) as (_s, port):
            w = await Wire.open(port)
            try:
                # The child holds the socket for 60 s; the reply is awaited at most 30 s
                # (a bound on a hang, not a measure of speed).
                (m,) = await asyncio.wait_for(
                    w.roundtrip([call("f", "fork_and_die", str(tmp), 60.0)]), 30
                )
            finally:
                with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                    os.kill(int((tmp / "child.pid").read_text()), signal.SIGKILL)
            rest = await w.roundtrip([call(str(i), "add", i, 1) for i in range(6)])
            await w.close()
            body = m.get("MESSAGE") or {}
            return code(m), body.get("EXCEPTION"), sorted(code(r) for r in rest)

    async def main() -> tuple[Any, Any]:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        return await scenario(False, tmp_path / "a"), await scenario(True, tmp_path / "b")

    fast, general = run_on(loop, main, timeout=100)
    assert fast == general == (404, "WorkerDied", [200] * 6)
