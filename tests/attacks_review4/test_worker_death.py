"""README "The process pool": a worker that dies fails exactly the call it was running
with 404 WorkerDied naming the method, and is replaced; calls queued behind it run on
other workers; killing an idle worker fails nothing, not even calls sent to it as it
died. No descriptors leak in the server; close() leaves no worker running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from attacks_pool import pool_funcs as pf
from attacks_server.fastlane_kit import Wire, call, code, mid, passthrough, result, run_on

from pymprpc.server import Server

from . import r4_funcs as f

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def pool_server(workers: int, general: bool = False) -> AsyncIterator[Server]:
    server = Server(
        ("127.0.0.1", 0),
        max_workers=workers,
        interceptors=[passthrough] if general else [],
        grace_period=1,
    )
    for fn in (pf.block, pf.add, f.my_pid, f.ctx_loop, f.ctx_after_go, f.big_result):
        server.register_function()(fn)
    server.register_function()(f.popen_then_exit)
    server.register_function()(f.spawn_then_exit)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def wait_file(p: Path) -> int:
    for _ in range(6000):  # bounded: about 30 s
        if p.exists():
            return int(p.read_text())
        await asyncio.sleep(0.005)
    raise AssertionError(f"{p} never appeared")


async def worker_pids(w: Wire, tmp: Path, n: int, round: str) -> list[int]:
    """The pids of the `n` workers: `n` blocking calls at once, then released."""
    tags = [f"{round}w{i}" for i in range(n)]
    w.write([call(t, "block", str(tmp), t) for t in tags])
    pids = [await wait_file(tmp / f"{t}.pid") for t in tags]
    for t in tags:
        (tmp / f"{t}.go").write_text("")
    got = await w.recv_n(n)
    assert sorted(code(m) for m in got) == [200] * n, got
    return pids


async def recv_all(w: Wire, ids: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while set(out) != ids:
        m = await asyncio.wait_for(w.recv(), 60)
        assert mid(m) not in out, ("two replies", m)
        out[mid(m)] = m
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def died(m: Any, method: str) -> bool:
    body = m.get("MESSAGE") or {}
    return (
        code(m) == 404
        and body.get("EXCEPTION") == "WorkerDied"
        and method in str(body.get("MESSAGE"))
    )


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("when", ["before-send", "after-send"])
def test_killing_an_idle_worker_fails_nothing(
    loop: str, tmp_path: Path, workers: int, when: str
) -> None:
    async def main() -> None:
        async with pool_server(workers) as server:
            w = await Wire.open(server.address[1])
            for r in range(3):
                pids = await worker_pids(w, tmp_path, workers, f"r{r}")
                msgs = [call(f"{r}-{i}", "add", i, 1) for i in range(8)]
                if when == "before-send":
                    for p in pids:
                        os.kill(p, signal.SIGKILL)
                    w.write(msgs)
                else:
                    w.write(msgs)
                    for p in pids:
                        os.kill(p, signal.SIGKILL)
                got = await recv_all(w, {f"{r}-{i}" for i in range(8)})
                assert {k: (code(m), result(m)) for k, m in got.items()} == {
                    f"{r}-{i}": (200, i + 1) for i in range(8)
                }
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_while_running_call_1_of_8_pipelined(
    loop: str, tmp_path: Path, workers: int, general: bool
) -> None:
    async def main() -> None:
        async with pool_server(workers, general) as server:
            w = await Wire.open(server.address[1])
            # warm the workers' averages with short calls (they then take several at once)
            await w.roundtrip([call(f"warm{i}", "add", i) for i in range(16)])
            msgs = [call("k", "block", str(tmp_path), "k")]
            msgs += [call(f"q{i}", "add", i, 1) for i in range(7)]
            w.write(msgs)
            pid = await wait_file(tmp_path / "k.pid")
            os.kill(pid, signal.SIGKILL)
            got = await recv_all(w, {"k"} | {f"q{i}" for i in range(7)})
            assert died(got["k"], "block"), got["k"]
            assert {k: (code(m), result(m)) for k, m in got.items() if k != "k"} == {
                f"q{i}": (200, i + 1) for i in range(7)
            }
            more = await w.roundtrip([call(f"m{i}", "add", i, 2) for i in range(4)])
            assert sorted(code(m) for m in more) == [200] * 4
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_while_the_worker_asks_for_its_context(
    loop: str, tmp_path: Path, workers: int
) -> None:
    async def main() -> None:
        async with pool_server(workers) as server:
            w = await Wire.open(server.address[1])
            outcomes = set()
            for r in range(12):
                tag = f"c{r}"
                w.write([call(tag, "ctx_loop", str(tmp_path), tag, 200)])
                pid = await wait_file(tmp_path / f"{tag}.pid")
                if r % 3:
                    await asyncio.sleep(0.0005 * r)
                os.kill(pid, signal.SIGKILL)
                (m,) = await asyncio.wait_for(w.recv_n(1), 60)
                assert mid(m) == tag, m
                if code(m) == 200:
                    assert result(m)[:2] == [tag, "ctx_loop"], m
                    outcomes.add("ok")
                else:
                    assert died(m, "ctx_loop"), m
                    outcomes.add("died")
                follow = await w.roundtrip([call(f"f{r}", "add", r, 1)])
                assert code(follow[0]) == 200 and result(follow[0]) == r + 1, follow
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_while_the_context_request_is_unanswered(
    loop: str, tmp_path: Path, workers: int, general: bool
) -> None:
    """The server's loop is held (this test runs on it) while the worker asks for its
    context, then the worker is killed: the request and the worker's end arrive together."""

    async def main() -> None:
        async with pool_server(workers, general) as server:
            w = await Wire.open(server.address[1])
            for r in range(4):
                tag = f"g{r}"
                w.write([call(tag, "ctx_after_go", str(tmp_path), tag), call(f"q{r}", "add", r, 1)])
                pid = await wait_file(tmp_path / f"{tag}.pid")
                (tmp_path / f"{tag}.go").write_text("")
                time.sleep(0.2)  # the loop is held: the worker's request waits unread
                os.kill(pid, signal.SIGKILL)
                got = await recv_all(w, {tag, f"q{r}"})
                if general:
                    # README: an interceptor built the context, so it went with the call
                    # (no round trip): the call may have finished before the kill.
                    ok = code(got[tag]) == 200 and result(got[tag]) == [tag, "ctx_after_go"]
                    assert ok or died(got[tag], "ctx_after_go"), got[tag]
                else:
                    assert died(got[tag], "ctx_after_go"), got[tag]
                assert code(got[f"q{r}"]) == 200 and result(got[f"q{r}"]) == r + 1
                follow = await w.roundtrip([call(f"f{r}", "ctx_loop", str(tmp_path), f"h{r}", 2)])
                assert code(follow[0]) == 200 and result(follow[0])[:2] == [f"f{r}", "ctx_loop"]
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_while_the_worker_sends_a_large_result(
    loop: str, tmp_path: Path, workers: int
) -> None:
    n = 24 * 1024 * 1024

    async def main() -> None:
        async with pool_server(workers) as server:
            w = await Wire.open(server.address[1])
            for r in range(3):
                tag = f"b{r}"
                w.write([call(tag, "big_result", str(tmp_path), tag, n)])
                pid = await wait_file(tmp_path / f"{tag}.pid")
                os.kill(pid, signal.SIGKILL)
                (m,) = await asyncio.wait_for(w.recv_n(1), 60)
                assert mid(m) == tag
                if code(m) == 200:
                    assert result(m) == b"z" * n
                else:
                    assert died(m, "big_result"), {k: str(v)[:200] for k, v in m.items()}
                follow = await w.roundtrip([call(f"f{r}", "add", r, 1)])
                assert code(follow[0]) == 200 and result(follow[0]) == r + 1, follow
            await w.close()

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("how", ["fork", "popen"])
def test_worker_exits_leaving_a_child_with_its_descriptors(
    loop: str, tmp_path: Path, how: str
) -> None:
    async def main() -> None:
        child = None
        try:
            async with pool_server(2) as server:
                w = await Wire.open(server.address[1])
                method = "spawn_then_exit" if how == "fork" else "popen_then_exit"
                w.write([call("d", method, str(tmp_path), 60), call("a", "add", 1, 1)])
                got = await recv_all(w, {"d", "a"})
                child = await wait_file(tmp_path / ("child.pid" if how == "fork" else "popen.pid"))
                assert died(got["d"], method), got["d"]
                assert code(got["a"]) == 200
                more = await w.roundtrip([call(f"m{i}", "add", i, 1) for i in range(6)])
                assert sorted(code(m) for m in more) == [200] * 6
                await w.close()
        finally:
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)

    run_on(loop, main, timeout=100)


@pytest.mark.parametrize("workers", [1, 2])
def test_many_kill_rounds_leak_no_fds_and_close_reaps(
    loop: str, tmp_path: Path, workers: int
) -> None:
    async def main() -> None:
        seen: set[int] = set()
        server_ref: list[Server] = []
        async with pool_server(workers) as server:
            server_ref.append(server)
            w = await Wire.open(server.address[1])
            seen.update(await worker_pids(w, tmp_path, workers, "warm"))
            # one kill round first, so lazily created state exists before counting
            w.write([call("k-1", "block", str(tmp_path), "k-1")])
            pid = await wait_file(tmp_path / "k-1.pid")
            os.kill(pid, signal.SIGKILL)
            (m,) = await w.recv_n(1)
            assert died(m, "block"), m
            before = fd_count()
            for r in range(15):
                tag = f"k{r}"
                w.write([call(tag, "block", str(tmp_path), tag)])
                pid = await wait_file(tmp_path / f"{tag}.pid")
                seen.add(pid)
                os.kill(pid, signal.SIGKILL)
                got = await recv_all(w, {tag})
                assert died(got[tag], "block"), got[tag]
                idle = await worker_pids(w, tmp_path, workers, f"i{r}")
                seen.update(idle)
                os.kill(idle[0], signal.SIGKILL)  # an idle one too
                rest = await w.roundtrip([call(f"a{r}-{i}", "add", i, 1) for i in range(4)])
                assert sorted(code(x) for x in rest) == [200] * 4, rest
            seen.update(await worker_pids(w, tmp_path, workers, "last"))
            await asyncio.sleep(0.2)
            after = fd_count()
            assert after <= before + 2, (before, after)
            assert server.running_call_count == 0
            await w.close()
        # server.close() returned: no worker may still run
        for _ in range(400):
            if not any(alive(p) for p in seen):
                break
            await asyncio.sleep(0.01)
        assert [p for p in seen if alive(p)] == []

    run_on(loop, main, timeout=110)
