"""Attacks on `Server(worker_spin=...)` (README "The process pool", "Spin, then sleep",
and the Server docstring): a process-pool worker whose calls arrive back to back polls
for the next one for up to `worker_spin` before it sleeps; calls further apart and an
idle worker cost no CPU; 0 turns it off, as does the default on one CPU; and everything
else the pool promises (crashes fail one call, shutdown, SIGTERM, current_call(),
deadlines) still holds with spinning on and with large windows.

Servers run in a subprocess (spin_server.py) so that a test can pin them to one CPU, kill
them or their workers and read their workers' CPU time and context switches in /proc.
No speed thresholds: CPU-time bounds are generous, and "the worker slept before each
call" is read from its voluntary context switches (a spin caught call adds none)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from pymprpc import RPC
from pymprpc.errors import (
    DeadlineExceeded,
    MPRPCError,
    RemoteError,
    UnavailableError,
)
from pymprpc.server import Server

from .spin_kit import (
    SpinSrv,
    alive,
    cpu_seconds,
    descendants,
    ppid,
    spinning,
    voluntary_switches,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

BURST = 300  # back-to-back calls in a burst


@pytest.fixture
def spin() -> Iterator[Callable[..., SpinSrv]]:
    made: list[SpinSrv] = []

    def make(**cfg: Any) -> SpinSrv:
        s = SpinSrv(**cfg)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def burst(rpc: RPC, n: int = BURST) -> None:
    for i in range(n):
        assert rpc.add(i, 1) == i + 1


def sleeps_per_call(rpc: RPC, worker: int, n: int = BURST) -> float:
    """Voluntary context switches of `worker` per back-to-back call: about 1 when it
    sleeps between calls, well below when it catches them while polling."""
    assert rpc.pid() == worker
    before = voluntary_switches(worker)
    burst(rpc, n)
    after = voluntary_switches(worker)
    assert rpc.pid() == worker, "the calls did not all run on one worker"
    return (after - before) / n


def idle_cpu(pids: set[int], seconds: float = 1.0) -> float:
    """CPU seconds `pids` use together over `seconds` with no call sent."""
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)  # a measuring window, not synchronisation
    return sum(cpu_seconds(p) for p in pids) - before


def first_cpu() -> int:
    return min(os.sched_getaffinity(0))


def worker_died(exc: BaseException, method: str) -> bool:
    return (
        isinstance(exc, RemoteError)
        and exc.code == 404
        and exc.exception == "WorkerDied"
        and method in str(exc)
    )


# ---------------------------------------------------------------------------------------
# the option itself


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        -1e-9,
        -math.inf,
        math.inf,
        math.nan,
        True,
        False,
        "0.001",
        b"0",
        [0.001],
        Decimal("0.001"),
        Fraction(1, 1000),
        complex(0.001, 0),
        10**400,  # past float range: no window a worker could time
    ],
    ids=repr,
)
def test_invalid_worker_spin_is_a_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="worker_spin"):
        Server(("127.0.0.1", 0), worker_spin=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [0, 1, 0.0, -0.0, 1e-12, 0.0003, 10.0, 1e9], ids=repr)
def test_valid_worker_spin_is_accepted(good: float) -> None:
    Server(("127.0.0.1", 0), worker_spin=good)


# ---------------------------------------------------------------------------------------
# what spinning costs, and when it must not happen


def test_an_idle_pool_after_bursts_costs_no_cpu_with_a_large_window(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 0.05})
    with s.rpc() as a, s.rpc() as b:
        threads = [threading.Thread(target=burst, args=(r,)) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        family = descendants(s.pid)
        used = idle_cpu(family)
        assert a.add(1, 1) == 2
    assert used < 0.25, f"an idle pool (0.05 s window) used {used:.2f} s of CPU in 1 s"


def test_sparse_calls_with_the_default_window_do_not_spin(spin) -> None:
    s = spin(server={"max_workers": 1})
    with s.rpc() as rpc:
        worker = rpc.pid()
        cpu0, sw0 = cpu_seconds(worker), voluntary_switches(worker)
        n = 40
        for i in range(n):
            time.sleep(0.025)  # pacing: calls 25 ms apart, far beyond 0.3 ms
            assert rpc.add(i, 1) == i + 1
        used = cpu_seconds(worker) - cpu0
        slept = voluntary_switches(worker) - sw0
        assert rpc.pid() == worker
    assert used < 0.3, f"{n} calls 25 ms apart cost the worker {used:.2f} s of CPU"
    assert slept >= 0.9 * n, f"the worker slept {slept} times for {n} sparse calls"


@pytest.mark.parametrize("zero", [0, 0.0], ids=repr)
def test_a_zero_window_never_spins_also_on_a_replaced_worker(spin, zero: float) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": zero})
    with s.rpc() as rpc:
        worker = rpc.pid()
        assert sleeps_per_call(rpc, worker) >= 0.9
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not alive(worker), 10, "the worker to die")
        wait_until(lambda: rpc.pid() != worker, 20, "a new worker")
        new = rpc.pid()
        assert sleeps_per_call(rpc, new) >= 0.9, "a replacement worker spins"
        t0, cpu0 = time.monotonic(), cpu_seconds(new)
        burst(rpc)
        share = (cpu_seconds(new) - cpu0) / (time.monotonic() - t0)
    assert share < 0.7, f"with worker_spin={zero!r} the worker was busy {share:.0%} of the time"


def test_a_large_window_catches_back_to_back_calls_awake(spin) -> None:
    # The control for the tests above: the measure does tell spinning from sleeping.
    s = spin(server={"max_workers": 1, "worker_spin": 0.05})
    with s.rpc() as rpc:
        worker = rpc.pid()
        burst(rpc, 20)
        assert sleeps_per_call(rpc, worker) < 0.5


def workers(s: SpinSrv, rpc: RPC) -> set[int]:
    """The server's pool workers: the processes its zygote forked."""
    zygote = ppid(rpc.pid())
    assert zygote is not None and zygote != s.pid, "workers are not forked by a zygote"
    return {p for p in descendants(s.pid) if ppid(p) == zygote}


def test_one_cpu_turns_the_default_off() -> None:
    # The pool's own window, read in a process started on one CPU: a server's worker
    # under load shows no spinning either (its calls then arrive further apart than
    # 0.3 ms), so what it does cannot tell the default apart.
    code = (
        "from pymprpc.server.workers.pool import ProcessPool\n"
        "from pymprpc.server.workers.targets import TargetTable\n"
        "print(ProcessPool(TargetTable()).spin)\n"
    )
    cpu = first_cpu()
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    ).stdout
    assert float(out) == 0.0, f"the default window on one CPU is {out.strip()} s"


def test_one_cpu_with_a_zero_window_sleeps_between_calls(spin) -> None:
    # The control for the test above: on one CPU too, a worker that does not spin is
    # seen sleeping once per back-to-back call.
    s = spin(taskset={first_cpu()}, server={"max_workers": 1, "worker_spin": 0})
    with s.rpc() as rpc:
        worker = rpc.pid()
        burst(rpc, 20)
        assert sleeps_per_call(rpc, worker, 1000) >= 0.9


def test_one_cpu_default_pool_has_one_worker(spin) -> None:
    # README: max_workers defaults to "the CPUs this process may use".
    s = spin(taskset={first_cpu()}, server={})
    with s.rpc() as rpc:
        burst(rpc, 10)
        assert len(workers(s, rpc)) == 1


def test_one_cpu_with_an_explicit_window_still_serves_everyone(spin) -> None:
    # Four workers and the server on one CPU, each worker polling for up to 50 ms: a
    # worker that did not give its CPU away between polls would starve the server.
    s = spin(taskset={first_cpu()}, server={"max_workers": 4, "worker_spin": 0.05})
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(s.rpc()) for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            for f in [ex.submit(burst, r, 150) for r in clients]:
                f.result(50)
        used = idle_cpu(descendants(s.pid))
    assert used < 0.25, f"an idle pool on one CPU used {used:.2f} s of CPU in 1 s"


def test_a_zero_window_worker_leaves_a_shared_cpu_to_a_busy_one(spin) -> None:
    # Without spinning, an idle worker leaves a shared CPU to a busy one (while it
    # spins it competes for it, as the README says).
    s = spin(taskset={first_cpu()}, server={"max_workers": 2, "worker_spin": 0})
    with s.rpc() as a, s.rpc() as b, concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(b.burn, s.tmp, "burn", 2.0)
        burner = s.pidfile("burn")
        burst(a, 100)
        idle = a.pid()
        assert idle != burner
        before = cpu_seconds(idle), cpu_seconds(burner)
        time.sleep(1.0)  # a measuring window
        polled = cpu_seconds(idle) - before[0]
        burned = cpu_seconds(burner) - before[1]
        assert fut.result(30) > 0
    assert polled < 0.3 * burned, f"an idle worker used {polled:.2f} s, the busy {burned:.2f} s"


def test_forkserver_zygote_workers_keep_a_zero_window(spin) -> None:
    # A thread running at registration and at serving: the zygote is a fresh
    # interpreter from multiprocessing's forkserver; the window must reach it too.
    s = spin(threads_first=True, server={"max_workers": 1, "worker_spin": 0})
    with s.rpc() as rpc:
        worker = rpc.pid()
        assert sleeps_per_call(rpc, worker) >= 0.9


def test_forkserver_zygote_workers_keep_a_large_window(spin) -> None:
    s = spin(threads_first=True, server={"max_workers": 1, "worker_spin": 0.05})
    with s.rpc() as rpc:
        worker = rpc.pid()
        burst(rpc, 20)
        assert sleeps_per_call(rpc, worker) < 0.5


def test_workers_from_a_replaced_zygote_keep_the_window(spin) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": 0})
    with s.rpc() as rpc:
        worker = rpc.pid()
        zygote = ppid(worker)
        assert zygote is not None and zygote != s.pid, "workers are not forked by a zygote"
        os.kill(zygote, signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not alive(worker) and not alive(zygote), 10, "both to die")
        wait_until(lambda: rpc.pid() != worker, 30, "a new worker")
        new = rpc.pid()
        assert ppid(new) != zygote
        assert sleeps_per_call(rpc, new) >= 0.9


# ---------------------------------------------------------------------------------------
# crashes with spinning on


def test_killing_a_spinning_idle_worker_fails_nothing(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 60})
    with s.rpc() as rpc:
        burst(rpc, 50)
        worker = rpc.pid()
        spinning(worker)  # idle, but polling: its window is a minute
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not alive(worker), 10, "the worker to die")
        for i in range(100):  # none of these may fail
            assert rpc.add(i, 2) == i + 2
        assert worker not in {rpc.pid() for _ in range(10)}


@pytest.mark.parametrize("window", [0, None, 0.05])
def test_a_call_right_after_an_idle_worker_is_killed_does_not_fail(
    spin, window: float | None
) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": window})
    failures = []
    with s.rpc() as rpc:
        for i in range(8):
            worker = rpc.pid()  # answered: the worker is idle (polling or asleep)
            os.kill(worker, signal.SIGKILL)
            try:
                assert rpc.add(i, 1) == i + 1
            except MPRPCError as exc:
                failures.append(exc)
            wait_until(lambda w=worker: not alive(w), 10, "the worker to die")
    assert not failures, f"killing an idle worker failed {len(failures)} of 8 calls: {failures[0]}"


@pytest.mark.parametrize("window", [None, 0.05])
def test_a_worker_killed_mid_call_fails_that_call_only(spin, window: float | None) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": window})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        burst(rpc, 50)
        fut = ex.submit(rpc.block, s.tmp, "victim")
        victim = s.pidfile("victim")
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(MPRPCError) as info:
            fut.result(30)
        assert worker_died(info.value, "block"), repr(info.value)
        burst(rpc, 50)
        assert rpc.pid() != victim


# Were intermittent (about one round in 10 to 15), with or without spinning: a failed
# write to the dead worker made the pool forget it before reading the results it had
# sent, so answered calls failed and ran again.
def test_a_crash_among_pipelined_calls_fails_only_itself_and_runs_nothing_twice(spin) -> None:
    s = spin(server={"max_workers": 1})
    wrong: list[str] = []
    rounds = 40

    async def main() -> None:
        for r in range(rounds):
            # A fresh connection's first calls leave in one write: the worker gets them
            # as one batch, with the crashing call fourth.
            async with s.arpc() as rpc:
                calls: list[Any] = [rpc.note(s.tmp, f"{r}-{i}") for i in range(20)]
                calls.insert(3, rpc.note_and_exit(s.tmp, f"{r}-x"))
                got = await asyncio.gather(*calls, return_exceptions=True)
            crashed = got.pop(3)
            if not worker_died(crashed, "note_and_exit"):
                wrong.append(f"{r}-x: {crashed!r}")
            wrong.extend(f"{r}-{i}: {g!r}" for i, g in enumerate(got) if g != f"{r}-{i}")

    asyncio.run(asyncio.wait_for(main(), 50))
    ran = (Path(s.tmp) / "notes").read_text().split()
    twice = sorted({tag for tag in ran if ran.count(tag) > 1})
    assert not wrong and not twice, f"failed: {wrong[:3]}; run twice: {twice}"
    assert len(ran) == rounds * 21


@pytest.mark.parametrize("workers", [1, 2])
def test_os_exit_among_pipelined_calls_fails_only_itself(spin, workers: int) -> None:
    # The same with long-lived connections and a large window (rarer: about 1 run in 6).
    s = spin(server={"max_workers": workers, "worker_spin": 0.05})

    async def main() -> None:
        async with s.arpc() as rpc:
            for round_ in range(4):
                pos = 7 + round_ * 5
                calls: list[Any] = [rpc.add(round_, i) for i in range(30)]
                calls.insert(pos, rpc.osexit())
                got = await asyncio.gather(*calls, return_exceptions=True)
                crashed = got.pop(pos)
                assert worker_died(crashed, "osexit"), repr(crashed)
                assert got == [round_ + i for i in range(30)], got

    asyncio.run(asyncio.wait_for(main(), 50))


@pytest.mark.parametrize("window", [None, 0.05])
def test_kills_during_back_to_back_calls_fail_at_most_one_call_each(
    spin, window: float | None
) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": window})
    seen: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        with s.rpc() as rpc:
            while not stop.is_set():
                try:
                    seen.append(rpc.pid())
                except MPRPCError as exc:
                    failures.append(exc)

    t = threading.Thread(target=client)
    t.start()
    kills = 0
    try:
        for _ in range(5):
            wait_until(lambda: bool(seen), 20, "a call to succeed")
            victim = seen[-1]
            os.kill(victim, signal.SIGKILL)
            kills += 1
            wait_until(lambda v=victim: seen[-1] != v, 20, "a replacement worker")
    finally:
        stop.set()
        t.join(30)
    assert len(failures) <= kills, failures
    assert all(worker_died(f, "pid") for f in failures), failures


# ---------------------------------------------------------------------------------------
# shutdown and the server's death with spinning workers


def _spin_up_two_workers(s: SpinSrv) -> set[int]:
    with s.rpc() as a, s.rpc() as b:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            for f in [ex.submit(burst, r, 100) for r in (a, b)]:
                f.result(50)
        workers = {a.pid(), b.pid()}
    for w in workers:
        spinning(w)
    return workers


def test_server_sigkill_while_workers_spin_leaves_no_process(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 60})
    _spin_up_two_workers(s)
    family = descendants(s.pid)
    os.kill(s.pid, signal.SIGKILL)
    s.proc.wait(10)
    # A worker polling for a minute must still notice its server is gone.
    wait_until(lambda: not any(alive(p) for p in family), 10, "the workers to exit")


def test_close_while_workers_spin_is_prompt_and_leaves_no_child(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 60, "grace_period": 1})
    _spin_up_two_workers(s)
    family = descendants(s.pid)
    took = s.stop(30)
    assert took < 8, f"shutdown took {took:.1f} s with workers spinning (grace 1 s)"
    assert s.children_after_close() == []
    assert not [p for p in family if alive(p)]


def test_sigterm_to_the_group_lets_a_running_call_finish_beside_a_spinning_worker(
    spin,
) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 60, "grace_period": 20})
    with s.rpc() as rpc, s.rpc() as other, concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rpc.block, s.tmp, "g")
        runner = s.pidfile("g")
        burst(other, 100)  # on the other worker, which then polls for a minute
        spinner = other.pid()
        assert spinner != runner
        spinning(spinner)
        os.killpg(s.pid, signal.SIGTERM)  # what systemd and Ctrl-C do

        def draining() -> bool:
            try:
                with s.rpc(timeout=5, connect_timeout=5) as probe:
                    probe.add(1, 1)
            except (UnavailableError, ConnectionError, OSError, MPRPCError):
                return True
            return False

        wait_until(draining, 20, "the server to start draining")
        assert alive(runner), "SIGTERM to the group killed the running worker"
        s.release("g")
        assert fut.result(30) == "g"
    s.proc.wait(30)
    assert s.children_after_close() == []


@pytest.mark.parametrize(
    "window",
    [
        1,
        10.0,
        1e9,
        sys.float_info.max,
        # 10**400 is refused at construction (test_invalid_worker_spin...).
    ],
    ids=["1", "10.0", "1e9", "max"],
)
def test_huge_windows_serve_and_shut_down_promptly(spin, window: float) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": window, "grace_period": 1})
    if s.proc.poll() is not None:  # refused at construction: that must be a ValueError
        assert "ValueError" in s.stderr() and "worker_spin" in s.stderr(), s.stderr()
        return
    with s.rpc() as rpc:
        burst(rpc, 100)
        got = rpc.ctx.with_options(metadata={"k": "v"})("t")
        assert got["method"] == "ctx" and got["metadata"] == {"k": "v"}
        burst(rpc, 100)
    family = descendants(s.pid)
    took = s.stop(30)
    assert took < 8, f"shutdown took {took:.1f} s with worker_spin={window!r}"
    assert s.children_after_close() == []
    assert not [p for p in family if alive(p)]


# ---------------------------------------------------------------------------------------
# the call's context, deadlines and cancellation with spinning on


def test_current_call_in_a_spinning_worker(spin) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": 0.05})
    with s.rpc() as rpc:
        worker = rpc.pid()
        ids = set()
        for i in range(100):  # back to back: each ctx() call arrives while it polls
            got = rpc.ctx.with_options(timeout=30, metadata={"i": str(i)})(f"t{i}")
            assert got["tag"] == f"t{i}" and got["metadata"] == {"i": str(i)}, got
            assert got["method"] == "ctx" and got["pid"] == worker
            assert got["remaining"] is not None and 0 < got["remaining"] <= 30
            ids.add(got["id"])
            assert rpc.add(i, i) == 2 * i
        assert len(ids) == 100


@pytest.mark.parametrize("workers", [1, 2])
def test_current_call_among_pipelined_calls_gets_its_own_context(spin, workers: int) -> None:
    s = spin(server={"max_workers": workers, "worker_spin": 0.05})

    async def main() -> None:
        async with s.arpc() as rpc:
            for _ in range(3):
                calls: list[Any] = []
                for i in range(40):
                    if i % 3 == 0:
                        calls.append(rpc.ctx.with_options(metadata={"i": str(i)})(f"t{i}"))
                    else:
                        calls.append(rpc.add(i, 0))
                got = await asyncio.gather(*calls)
                for i, g in enumerate(got):
                    if i % 3 == 0:
                        assert g["tag"] == f"t{i}" and g["metadata"] == {"i": str(i)}, g
                        assert g["method"] == "ctx"
                    else:
                        assert g == i
                ids = [g["id"] for i, g in enumerate(got) if i % 3 == 0]
                assert len(set(ids)) == len(ids)

    asyncio.run(asyncio.wait_for(main(), 50))


def test_a_deadline_reaches_a_spinning_worker(spin) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": 60})
    with s.rpc() as rpc:
        burst(rpc, 50)
        spinning(rpc.pid())
        with pytest.raises(DeadlineExceeded):
            rpc.forever.with_options(timeout=0.5)(s.tmp, "f")
        stuck = s.pidfile("f")
        assert rpc.add(1, 2) == 3
        wait_until(lambda: not alive(stuck), 10, "the stuck worker to be killed")
        burst(rpc, 50)


def test_a_cancel_reaches_a_spinning_worker(spin) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": 60})

    async def main() -> None:
        async with s.arpc() as rpc:
            for i in range(50):
                assert await rpc.add(i, 1) == i + 1
            task = asyncio.ensure_future(rpc.forever(s.tmp, "c"))
            stuck = await asyncio.to_thread(s.pidfile, "c")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert await rpc.add(2, 2) == 4
            await asyncio.to_thread(
                wait_until, lambda: not alive(stuck), 10, "the stuck worker to be killed"
            )

    asyncio.run(asyncio.wait_for(main(), 50))


# ---------------------------------------------------------------------------------------
# load with spinning on


def test_many_calls_in_flight_from_several_connections(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 0.05})

    async def one(k: int) -> None:
        async with s.arpc() as rpc:
            got = await asyncio.gather(*[rpc.add(k, i) for i in range(500)])
            assert got == [k + i for i in range(500)]

    async def main() -> None:
        await asyncio.gather(*[one(k) for k in range(4)])

    asyncio.run(asyncio.wait_for(main(), 50))


def test_large_bytes_back_to_back_with_a_large_window(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 0.05})
    with s.rpc() as rpc:
        for n in (0, 1, 1 << 16, 1 << 20, 3 << 20, 1 << 16, 5):
            assert rpc.size(b"a" * n) == n
            assert rpc.blob(n) == b"b" * n
            assert rpc.add(n, 1) == n + 1


def test_interleaved_sequential_clients_on_two_workers(spin) -> None:
    s = spin(server={"max_workers": 2, "worker_spin": 0.05})
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with s.rpc() as rpc:
                for i in range(200):
                    assert rpc.add(k, i) == k + i
                    if i % 10 == 0:
                        got = rpc.ctx(f"{k}-{i}")
                        assert got["tag"] == f"{k}-{i}", got
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not errors, errors
    used = idle_cpu(descendants(s.pid))
    assert used < 0.25, f"the idle pool used {used:.2f} s of CPU in 1 s"


def test_a_client_that_disconnects_while_its_worker_spins(spin) -> None:
    s = spin(server={"max_workers": 1, "worker_spin": 60})
    for _ in range(3):
        with s.rpc() as rpc:
            burst(rpc, 30)
        # the worker polls on with nobody to call it; a new client still gets served
    with s.rpc() as rpc:
        burst(rpc, 30)
