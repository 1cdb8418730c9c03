"""Attacks on the process pool's user-facing contract (issue 12, README "Executors" and
"The process pool", the original usage page): a plain `def` on the default executor.

Every server runs in a subprocess (pool_server.py) so that a test can kill its workers,
scan /proc for its children, measure RSS and run it with `-W error::DeprecationWarning`.
Synchronisation is on state: a blocking handler publishes its pid in a file and waits
for a release file; tests poll files and /proc, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procfs import alive, descendants, rss, stat_fields, wait_until
from script_server import ScriptServer

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import (
    CallCancelled,
    ConnectionLostError,
    DeadlineExceeded,
    MPRPCError,
    ParamError,
    RemoteError,
    ResultLimitError,
    UnavailableError,
)

from .kit import Raw, result

HERE = Path(__file__).parent
MiB = 1 << 20

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------------------------------
# kit


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it does not exist."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[1]))


class PoolSrv(ScriptServer):
    """pool_server.py in a subprocess (own session), its stdout and stderr in files."""

    def __init__(self, flags: tuple[str, ...] = (), **cfg: Any) -> None:
        super().__init__(HERE / "pool_server.py", cfg, flags=flags, prefix="atkpool-")

    def url(self, user: str | None = None) -> str:
        cred = f"{user}:{user}-pw@" if user else ""
        return f"tcp://{cred}127.0.0.1:{self.port}"

    def rpc(self, **options: Any) -> RPC:
        options.setdefault("timeout", 60)
        return RPC(self.url(options.pop("user", None)), **options)

    def arpc(self, **options: Any) -> AsyncRPC:
        options.setdefault("timeout", 60)
        return AsyncRPC(self.url(options.pop("user", None)), **options)


@pytest.fixture
def pool() -> Iterator[Callable[..., PoolSrv]]:
    made: list[PoolSrv] = []

    def make(flags: tuple[str, ...] = (), **cfg: Any) -> PoolSrv:
        s = PoolSrv(flags, **cfg)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def workers_of(srv: PoolSrv, n: int, rpc: RPC, tag: str) -> list[int]:
    """The pids of `n` workers, found by running `n` blocking calls at once (each must
    land on its own worker: least-loaded dispatch with a free worker)."""
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(rpc.block, srv.tmp, f"{tag}{i}") for i in range(n)]
        pids = [srv.pidfile(f"{tag}{i}") for i in range(n)]
        for i in range(n):
            srv.release(f"{tag}{i}")
        assert [f.result(30) for f in futs] == [f"{tag}{i}" for i in range(n)]
    return pids


def remote_error(fn: Callable[[], Any]) -> MPRPCError:
    with pytest.raises(MPRPCError) as info:
        fn()
    return info.value


# ---------------------------------------------------------------------------------------
# worker death


def test_kill9_running_call_fails_404_naming_method_and_pool_is_refilled(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rpc.block, s.tmp, "victim")
        victim = s.pidfile("victim")
        assert victim != s.pid
        os.kill(victim, signal.SIGKILL)
        exc = remote_error(lambda: fut.result(30))
        assert isinstance(exc, RemoteError) and exc.code == 404, exc
        assert exc.exception == "WorkerDied", (exc.exception, str(exc))
        assert "block" in str(exc), f"404 does not name the method: {exc}"
        assert rpc.add(2, 3) == 5
        # replaced: two calls at once still get two live workers, neither the dead one
        pids = workers_of(s, 2, rpc, "after")
        assert len(set(pids)) == 2 and victim not in pids, pids
        assert all(alive(p) for p in pids)


@pytest.mark.parametrize("method", ["osexit", "segv"])
def test_handler_that_kills_its_worker_fails_that_call_only(pool, method: str) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        before = rpc.pid()
        exc = remote_error(getattr(rpc, method))
        assert isinstance(exc, RemoteError) and exc.code == 404, exc
        assert exc.exception == "WorkerDied", (exc.exception, str(exc))
        assert method in str(exc), f"404 does not name the method: {exc}"
        after = rpc.pid()
        assert after != before and not alive(before)
        assert rpc.add(1, 1) == 2
    assert s.proc.poll() is None


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("sysexit", "SystemExit"),
        ("kbint", "KeyboardInterrupt"),
        ("mybase", "MyBase"),
        ("genexit", "GeneratorExit"),
    ],
)
def test_base_exceptions_fail_one_call_and_keep_the_worker(pool, method, name) -> None:
    """README: sys.exit() or KeyboardInterrupt fails that call with 404; the worker and
    the server keep going."""
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        before = rpc.pid()
        exc = remote_error(getattr(rpc, method))
        assert isinstance(exc, RemoteError) and exc.code == 404, exc
        assert exc.exception == name, (exc.exception, str(exc))
        assert rpc.pid() == before, "the worker did not keep going"
        assert rpc.add(1, 2) == 3
    assert s.proc.poll() is None


def test_stray_cancelled_error_fails_that_call_only(pool) -> None:
    """README: a stray CancelledError raised by a method fails that call only (404; 407
    when cancel is negotiated)."""
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        before = rpc.pid()
        exc = remote_error(rpc.cancelled)
        assert exc.code in (404, 407), exc
        assert rpc.pid() == before
        assert rpc.add(1, 2) == 3


def test_killing_an_idle_worker_fails_nothing(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc:
        pids = workers_of(s, 2, rpc, "w")
        assert len(set(pids)) == 2
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: not alive(pids[0]), 10, "the worker to die")
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            assert list(ex.map(lambda i: rpc.add(i, i), range(200))) == [2 * i for i in range(200)]
        again = workers_of(s, 2, rpc, "again")
        assert len(set(again)) == 2 and pids[0] not in again


def test_death_fails_exactly_its_call_with_many_queued_behind_it(pool) -> None:
    """One worker: calls queued behind the dying call (on the server or already written
    to the worker's socket) must all run on the replacement."""
    s = pool(server={"max_workers": 1})

    async def main() -> None:
        async with s.arpc() as rpc:
            # warm up: short calls make the worker take several at a time
            assert await asyncio.gather(*(rpc.add(i, 1) for i in range(300))) == [
                i + 1 for i in range(300)
            ]
            victim_call = asyncio.ensure_future(rpc.block(s.tmp, "v"))
            victim = await asyncio.to_thread(s.pidfile, "v")
            queued = [asyncio.ensure_future(rpc.add(i, 1000)) for i in range(100)]
            coros = [asyncio.ensure_future(rpc.cadd(i, 1)) for i in range(10)]
            assert await asyncio.gather(*coros) == [i + 1 for i in range(10)]
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(RemoteError) as info:
                await victim_call
            assert info.value.exception == "WorkerDied"
            results = await asyncio.gather(*queued, return_exceptions=True)
            lost = [r for r in results if isinstance(r, BaseException)]
            assert not lost, f"{len(lost)} queued calls lost with the worker: {lost[:3]}"
            assert results == [i + 1000 for i in range(100)]

    asyncio.run(main())


@pytest.mark.parametrize("workers", [1, 2])
def test_pipelined_short_calls_beside_a_crashing_one(pool, workers: int) -> None:
    """A crashing call sent among 200 short calls on one connection: exactly it fails."""
    s = pool(server={"max_workers": workers})

    async def main() -> None:
        async with s.arpc() as rpc:
            await asyncio.gather(*(rpc.add(i, 1) for i in range(300)))
            calls: list[Any] = [rpc.add(i, 0) for i in range(100)]
            calls.append(rpc.osexit())
            calls += [rpc.add(i, 0) for i in range(100, 200)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
            assert list(failed) == [100], {i: repr(r) for i, r in list(failed.items())[:5]}
            assert isinstance(failed[100], RemoteError) and "osexit" in str(failed[100])

    asyncio.run(main())


def test_death_on_one_worker_leaves_the_other_workers_calls_alone(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(40) as ex:
        for _ in range(3):
            list(ex.map(lambda i: rpc.add(i, 1), range(100)))
        a = ex.submit(rpc.block, s.tmp, "A")
        pa = s.pidfile("A")
        b = ex.submit(rpc.block, s.tmp, "B")
        # B must get the free worker, not wait behind A
        pb = s.pidfile("B", timeout=20)
        assert pa != pb
        quick = [ex.submit(rpc.add, i, 7) for i in range(30)]
        os.kill(pa, signal.SIGKILL)
        exc = remote_error(lambda: a.result(30))
        assert exc.exception == "WorkerDied"
        assert not b.done(), "the other worker's running call ended when A's worker died"
        s.release("B")
        assert b.result(30) == "B"
        assert [q.result(30) for q in quick] == [i + 7 for i in range(30)]


def test_no_call_waits_behind_a_slow_one_while_a_worker_is_free(pool) -> None:
    """After batches of short calls (so workers take several at a time), both workers get
    a call that blocks and 30 short calls follow; one blocking call returns: its worker
    is free, so every short call must finish while the other blocking call still runs.
    Up to five rounds: whether the workers are in 'several at a time' mode depends on how fast
    the loaded machine ran the short calls."""
    s = pool(server={"max_workers": 2})

    async def round_(rpc: AsyncRPC, k: int) -> int:
        for _ in range(3):
            await asyncio.gather(*(rpc.add(i, 1) for i in range(300)))
        a = asyncio.ensure_future(rpc.block(s.tmp, f"A{k}"))
        await asyncio.to_thread(s.pidfile, f"A{k}")
        b = asyncio.ensure_future(rpc.block(s.tmp, f"B{k}"))
        await asyncio.to_thread(s.pidfile, f"B{k}")
        quick = [asyncio.ensure_future(rpc.add(i, 7)) for i in range(30)]
        assert await rpc.cadd(1, 1) == 2  # the short calls were sent and read
        s.release(f"A{k}")
        assert await a == f"A{k}"
        _, waiting = await asyncio.wait(quick, timeout=10)
        s.release(f"B{k}")  # whatever happened, let every call end
        assert await b == f"B{k}"
        assert await asyncio.gather(*quick) == [i + 7 for i in range(30)]
        return len(waiting)

    async def main() -> None:
        async with s.arpc() as rpc:
            for k in range(5):
                waiting = await round_(rpc, k)
                assert not waiting, f"{waiting} of 30 short calls waited behind B, a worker free"

    asyncio.run(main())


def test_zygote_death_does_not_stop_replacement(pool) -> None:
    """Not in the docs: kill -9 every non-worker child (the zygote), then a worker; the
    pool should still replace it (or at least fail calls, never hang)."""
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        w = rpc.pid()
        others = [p for p in descendants(s.pid) if p != w and alive(p)]
        for p in others:
            os.kill(p, signal.SIGKILL)
        os.kill(w, signal.SIGKILL)
        wait_until(lambda: not alive(w), 10, "the worker to die")
        assert rpc.add(20, 22) == 42


# ---------------------------------------------------------------------------------------
# calls that never return


def test_deadline_kills_the_stuck_worker_and_the_pool_recovers(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        with pytest.raises(DeadlineExceeded):
            rpc.forever.with_options(timeout=1)(s.tmp, "f")
        stuck = s.pidfile("f")
        assert rpc.add(1, 2) == 3
        wait_until(lambda: not alive(stuck), 10, "the stuck worker to be killed")


def test_client_cancel_kills_the_stuck_worker(pool) -> None:
    s = pool(server={"max_workers": 1})

    async def main() -> None:
        async with s.arpc() as rpc:
            task = asyncio.ensure_future(rpc.forever(s.tmp, "c"))
            stuck = await asyncio.to_thread(s.pidfile, "c")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await rpc.add(2, 2) == 4
            await asyncio.to_thread(
                wait_until, lambda: not alive(stuck), 10, "the stuck worker to be killed"
            )

    asyncio.run(main())


def test_client_disconnect_kills_the_stuck_worker(pool) -> None:
    s = pool(server={"max_workers": 1, "half_close_timeout": 0})
    rpc = s.rpc()
    rpc.connect()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rpc.forever, s.tmp, "d")
        stuck = s.pidfile("d")
        rpc.close()
        with pytest.raises(ConnectionLostError):
            fut.result(30)
    wait_until(lambda: not alive(stuck), 15, "the stuck worker to be killed")
    with s.rpc() as other:
        assert other.add(3, 3) == 6


# ---------------------------------------------------------------------------------------
# values that cannot cross


@pytest.mark.parametrize(
    "method",
    ["ret_lambda", "ret_socket", "ret_gen", "ret_reduce_raises", "ret_unpickle_fails"],
)
def test_results_that_cannot_cross_are_a_clear_404(pool, method: str) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        exc = remote_error(getattr(rpc, method))
        assert isinstance(exc, RemoteError) and exc.code == 404, repr(exc)
        text = str(exc)
        assert method in text or "pickl" in text.lower(), f"unclear: {text}"
        assert rpc.add(1, 2) == 3
        assert rpc.pid() != s.pid


@pytest.mark.parametrize(
    ("method", "name", "words"),
    [
        ("raise_locked", "LockedError", "locked inside"),
        ("raise_reqargs", "ReqArgsError", "needs two"),
        ("raise_value", "ValueError", "plain value error"),
    ],
)
def test_exceptions_come_back_as_type_and_message(pool, method, name, words) -> None:
    """Issue 12: exceptions come back as data (type, message, traceback), so one whose
    pickling or unpickling fails still reports its type and message."""
    s = pool(server={"max_workers": 1, "debug": True})
    with s.rpc(timeout=30) as rpc:
        exc = remote_error(getattr(rpc, method))
        assert exc.code == 404, repr(exc)
        assert exc.exception == name, (exc.exception, str(exc))
        assert words in str(exc), str(exc)
        assert exc.remote_traceback and method in exc.remote_traceback, exc.remote_traceback
        assert rpc.add(1, 2) == 3


def test_result_above_the_message_size_is_405_and_the_connection_lives(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=60) as rpc:
        with pytest.raises(ResultLimitError):
            rpc.big(17 * MiB)
        assert rpc.add(1, 2) == 3
        assert rpc.big(1000) == b"x" * 1000


@pytest.mark.timeout(180)
def test_50mib_result_and_argument(pool) -> None:
    s = pool(server={"max_workers": 2, "max_message_size": 64 * MiB})
    with s.rpc(timeout=120, max_message_size=64 * MiB) as rpc:
        got = rpc.big(50 * MiB)
        assert len(got) == 50 * MiB and got == b"x" * (50 * MiB)
        del got
        arg = os.urandom(50 * MiB)
        assert rpc.size(arg) == 50 * MiB
        assert rpc.echo(arg) == arg


# ---------------------------------------------------------------------------------------
# load


@pytest.mark.timeout(240)
def test_10000_calls_in_flight_from_ten_connections(pool) -> None:
    s = pool(server={"max_workers": 2})

    async def one(k: int) -> list[int]:
        async with s.arpc(timeout=200) as rpc:
            return await asyncio.gather(*(rpc.add(k * 1000, i) for i in range(1000)))

    async def main() -> None:
        results = await asyncio.gather(*(one(k) for k in range(10)))
        for k, r in enumerate(results):
            assert r == [k * 1000 + i for i in range(1000)]

    asyncio.run(main())
    assert s.proc.poll() is None


def test_mixed_coroutine_and_process_calls(pool) -> None:
    s = pool(server={"max_workers": 2})

    async def main() -> None:
        async with s.arpc() as rpc:
            calls = []
            for i in range(300):
                calls += [rpc.cadd(i, 1), rpc.add(i, 2), rpc.lam(i)]
            got = await asyncio.gather(*calls)
            assert got == [x for i in range(300) for x in (i + 1, i + 2, 2 * i)]

    asyncio.run(main())


# ---------------------------------------------------------------------------------------
# shutdown


def test_shutdown_with_calls_running_leaves_no_process(pool) -> None:
    s = pool(server={"max_workers": 2, "grace_period": 1})
    rpc = s.rpc(timeout=60)
    rpc.connect()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(rpc.forever, s.tmp, f"s{i}") for i in range(2)]
        workers = [s.pidfile(f"s{i}") for i in range(2)]
        family = descendants(s.pid)
        assert set(workers) <= family
        took = s.stop(30)
        for f in futs:
            with pytest.raises((UnavailableError, ConnectionLostError, CallCancelled)):
                f.result(30)
    rpc.close()
    assert took < 1 + 8, f"shutdown took {took:.1f}s with grace_period=1"
    left = [p for p in family if alive(p)]
    assert not left, f"processes of the server outlived it: {left}"
    line = [x for x in s.stdout().splitlines() if x.startswith("CHILDREN_AFTER_CLOSE")]
    assert line, s.stdout() + s.stderr()
    kids = json.loads(line[0].split(" ", 1)[1])
    assert kids == [], f"children (pid, state) still there when close() returned: {kids}"


def test_sigterm_to_the_process_group_lets_pool_calls_finish(pool) -> None:
    s = pool(server={"max_workers": 2, "grace_period": 20})
    with s.rpc(timeout=60) as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rpc.block, s.tmp, "g")
        worker = s.pidfile("g")
        os.killpg(s.pid, signal.SIGTERM)  # what systemd and Ctrl-C do

        def draining() -> bool:
            try:
                with s.rpc(timeout=5, connect_timeout=5) as probe:
                    probe.add(1, 1)
            except (UnavailableError, ConnectionError, OSError):
                return True
            return False

        wait_until(draining, 20, "the server to start draining")
        assert alive(worker), "SIGTERM to the group killed the worker"
        s.release("g")
        assert fut.result(30) == "g"
    s.proc.wait(30)


def test_idle_pool_shutdown_is_prompt_and_clean(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc:
        assert rpc.add(1, 1) == 2
    family = descendants(s.pid)
    assert family, "no worker processes found"
    took = s.stop(30)
    assert took < 8, took
    assert not [p for p in family if alive(p)]
    assert "CHILDREN_AFTER_CLOSE []" in s.stdout()


# ---------------------------------------------------------------------------------------
# forking safely


def test_threads_started_before_the_pool_no_fork_warning(pool) -> None:
    s = pool(("-W", "error::DeprecationWarning"), threads_first=True, only_module=True)
    with s.rpc() as rpc:
        assert rpc.mod_add(2, 3) == 5
        w = rpc.mod_pid()
        assert w != s.pid
        os.kill(w, signal.SIGKILL)
        wait_until(lambda: not alive(w), 10, "the worker to die")
        assert rpc.mod_add(4, 5) == 9
        assert rpc.mod_pid() != w
        assert rpc.register_module_late() is True
        assert rpc.mod_late(1, 2) == 3
    s.stop()
    err = s.stderr()
    assert "DeprecationWarning" not in err and "Traceback" not in err, err[-3000:]


def test_worker_replacement_after_thread_pool_started_no_fork_warning(pool) -> None:
    s = pool(("-W", "error::DeprecationWarning"), server={"max_workers": 1})
    with s.rpc() as rpc:
        assert rpc.server_pid() == s.pid  # the thread pool now has threads
        w = rpc.pid()
        os.kill(w, signal.SIGKILL)
        wait_until(lambda: not alive(w), 10, "the worker to die")
        assert rpc.add(1, 2) == 3
        exc = remote_error(rpc.osexit)
        assert exc.exception == "WorkerDied"
        assert rpc.add(2, 2) == 4
    s.stop()
    err = s.stderr()
    assert "DeprecationWarning" not in err and "Traceback" not in err, err[-3000:]


def test_nested_functions_after_threads_started_work_with_a_warning(pool) -> None:
    s = pool(threads_first=True)
    with s.rpc() as rpc:
        assert rpc.add(2, 3) == 5
        assert rpc.pid() != s.pid
        assert rpc.late() == ["s3cret", "set after the first registration"]
    s.stop()
    warnings = [x for x in s.stderr().splitlines() if x.startswith("WARNING")]
    assert any("thread" in x for x in warnings), s.stderr()[-3000:]


# ---------------------------------------------------------------------------------------
# what users rely on


def test_nested_functions_closures_and_lambdas(pool) -> None:
    s = pool()
    with s.rpc() as rpc:
        assert rpc.add(1, 2) == 3
        assert rpc.late() == ["s3cret", "set after the first registration"]
        assert rpc.lam(21) == 42
        assert rpc.pid() != s.pid


def test_functions_registered_while_serving(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc:
        assert rpc.add(1, 1) == 2  # workers started
        assert rpc.register_module_late() is True
        assert rpc.mod_late(2, 3) == 5
        assert rpc.register_closure_late(3) is True
        assert rpc.closure_late(5) == 15


def test_per_worker_state_is_the_workers_own(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(4) as ex:
        seen = list(ex.map(lambda _: rpc.count(), range(200)))
        per: dict[int, list[int]] = {}
        for p, n in seen:
            per.setdefault(p, []).append(n)
        for p, ns in per.items():
            assert sorted(ns) == list(range(1, len(ns) + 1)), (p, sorted(ns)[:10])
            assert p != s.pid
        assert rpc.server_count() == 0, "a worker's write reached the server's copy"


def test_a_replaced_worker_starts_from_the_registration_state(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        first = [rpc.count() for _ in range(3)]
        p = first[0][0]
        assert first == [[p, 1], [p, 2], [p, 3]]
        os.kill(p, signal.SIGKILL)
        wait_until(lambda: not alive(p), 10, "the worker to die")
        q, n = rpc.count()
        assert q != p and n == 1, (q, n)


def test_current_call_in_a_worker(pool) -> None:
    s = pool(server={"max_workers": 1, "auth": [["u", "u-pw"]]})
    with s.rpc(user="u") as rpc:
        got = rpc.ctx.with_options(timeout=30, metadata={"k": "v"})()
        assert got["pid"] != s.pid
        assert got["method"] == "ctx" and got["user"] == "u"
        assert got["metadata"] == {"k": "v"}
        assert got["peer"] and got["peer"][0] == "127.0.0.1"
        assert got["remaining"] is not None and 0 < got["remaining"] <= 30
        value, meta = rpc.ctx_meta.call_with_metadata("hello")
        assert value == "hello" and meta.get("from-worker") == "hello", meta


def test_user_thread_executor_per_function(pool) -> None:
    s = pool()
    with s.rpc() as rpc:
        assert rpc.ut_pid() == s.pid


def test_current_call_on_a_user_thread_executor(pool) -> None:
    s = pool()
    with s.rpc() as rpc:
        assert rpc.ut_ctx() == ["ut_ctx", True]


def test_user_process_executor_per_function(pool) -> None:
    s = pool()
    with s.rpc(timeout=60) as rpc:
        assert rpc.up_add(2, 3) == 5
        assert rpc.up_pid() != s.pid
        # a nested function cannot be pickled for a user's ProcessPoolExecutor: a clear
        # 404, not a hang
        exc = remote_error(rpc.up_nested)
        assert exc.code == 404, repr(exc)
        # the user's pool breaks when its worker dies: the call fails, nothing hangs
        exc = remote_error(rpc.up_osexit)
        assert exc.code == 404, repr(exc)
        assert rpc.add(1, 2) == 3


def test_server_executor_user_pool_runs_everything_and_is_not_shut_down(pool) -> None:
    s = pool(server_executor="user_thread")
    with s.rpc() as rpc:
        assert rpc.pid() == s.pid  # the nested `def` ran on the user's thread pool
        assert rpc.add(2, 2) == 4
    s.stop()
    assert "USERPOOL ok" in s.stdout(), s.stdout() + s.stderr()[-2000:]


def test_worker_stdout_and_stderr_no_duplicated_buffer(pool) -> None:
    s = pool(banner=True, server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda i: rpc.printer(f"line{i}"), range(20))) == [5] * 10 + [6] * 10
        assert rpc.add(1, 1) == 2
    s.stop()
    out, err = s.stdout(), s.stderr()
    for i in range(20):
        assert out.count(f"OUT:line{i}\n") == 1, out
        assert err.count(f"ERR:line{i}\n") == 1, err[-2000:]
    assert out.count("BANNER-UNFLUSHED") == 1, f"the server's stdout buffer was copied: {out}"


def test_handlers_that_fork_spawn_and_start_threads(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        w = rpc.pid()
        assert rpc.forker() == 7
        assert rpc.spawner() == [0, "42"]
        assert rpc.threader() >= 2
        assert rpc.threader() >= 3
        assert rpc.add(1, 2) == 3
        assert rpc.pid() == w


# ---------------------------------------------------------------------------------------
# memory


def family_rss(root: int) -> int:
    return sum(rss(p) for p in {root} | descendants(root))


@pytest.mark.timeout(180)
def test_large_arguments_queued_for_a_busy_pool_memory(pool) -> None:
    """24 calls of 8 MiB each wait for the one busy worker, three rounds: what do the
    server and its workers hold? Without extra copies about the payload; and rounds must
    not add up."""
    s = pool(server={"max_workers": 1})
    n, size = 24, 8 * MiB
    payload = n * size
    held: list[int] = []
    after: list[int] = []
    with Raw(s.port, timeout=150) as c:
        c.login(features=["length-framing"])
        c.call("warm", "size", b"z" * size)
        assert result(c.recv()) == size
        base = family_rss(s.pid)
        for rnd in range(3):
            c.call("blocker", "block", s.tmp, f"m{rnd}")
            s.pidfile(f"m{rnd}")
            for i in range(n):
                c.call(f"q{i}", "size", os.urandom(size))
            # frames are read in order: once this coroutine answers, all were read
            c.call("probe", "cadd", 1, 1)
            first = c.recv()
            assert first["MESSAGE"]["ID"] == "probe" and result(first) == 2, first
            held.append(family_rss(s.pid) - base)
            s.release(f"m{rnd}")
            got = {}
            for _ in range(n + 1):
                r = c.recv()
                got[r["MESSAGE"]["ID"]] = result(r)
            assert got == {"blocker": f"m{rnd}", **{f"q{i}": size for i in range(n)}}
            after.append(family_rss(s.pid) - base)
    print(
        f"queued {payload / MiB:.0f} MiB a round: server+workers held "
        f"{[h // MiB for h in held]} MiB, after each round {[a // MiB for a in after]} MiB"
    )
    assert max(held) < 2 * payload + 64 * MiB, "more than two copies of each argument"
    # The allocator may keep up to one round's peak (glibc raises its mmap threshold
    # after large frees), but rounds must not add up: no leak.
    assert held[2] < held[0] + 48 * MiB, "each round of queued arguments leaks"
    assert after[2] < max(held) + 48 * MiB, "each round of queued arguments leaks"


# ---------------------------------------------------------------------------------------
# more ways to break it


def test_server_killed_leaves_no_orphans_and_frees_the_port(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc:
        assert rpc.add(1, 1) == 2
    family = descendants(s.pid)
    assert len(family) >= 2
    os.kill(s.pid, signal.SIGKILL)
    s.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in family), 15, "the pool to notice")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()


def test_stopped_worker_past_its_deadline_is_replaced(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(rpc.block.with_options(timeout=1.5), s.tmp, "st")
        w = s.pidfile("st")
        os.kill(w, signal.SIGSTOP)
        with pytest.raises(DeadlineExceeded):
            fut.result(30)
        assert rpc.add(1, 2) == 3
        wait_until(lambda: not alive(w), 10, "the stopped worker to be killed")


@pytest.mark.parametrize(
    "method",
    [
        "closefds",
        "scribble",
    ],
)
def test_handler_that_wrecks_its_channel_fails_without_a_hang(pool, method: str) -> None:
    """A function that closes or writes garbage on every fd it inherited (its channel to
    the server among them): that call fails, the server and other calls keep going."""
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=10) as rpc:
        try:
            getattr(rpc, method)()
        except MPRPCError as exc:
            assert exc.code == 404, repr(exc)
        assert rpc.add(1, 2) == 3
        assert [rpc.add(i, i) for i in range(20)] == [2 * i for i in range(20)]
    assert s.proc.poll() is None


def test_exception_whose_str_raises(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        exc = remote_error(rpc.raise_badstr)
        assert exc.code == 404, repr(exc)
        assert exc.exception == "BadStr", (exc.exception, str(exc))
        assert rpc.add(1, 2) == 3


def test_exception_message_above_the_message_size(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=60) as rpc:
        exc = remote_error(lambda: rpc.raise_huge(20 * MiB))
        assert exc.code in (404, 405), repr(exc)[:300]
        assert rpc.add(1, 2) == 3


def test_picklable_result_msgpack_cannot_encode_is_405(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        with pytest.raises(ResultLimitError) as info:
            rpc.ret_set()
        assert "set" in str(info.value)
        assert rpc.add(1, 2) == 3


def test_keyword_arguments_and_binding_errors(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        assert rpc.add(a=1, b=2) == 3
        assert rpc.add(1, b=5) == 6
        with pytest.raises(ParamError):
            rpc.add(1)
        with pytest.raises(ParamError):
            rpc.add(1, 2, c=3)
        assert rpc.add(2, 2) == 4


def test_kept_result_and_oneway_calls_whose_worker_dies(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        call_id = rpc.delay("osexit")
        with pytest.raises(RemoteError) as info:
            rpc.system.getresult(call_id)
        assert info.value.exception == "WorkerDied"
        ok = rpc.delay("add", 3, 4)
        for _ in range(5):
            rpc.notify("osexit")
        assert rpc.add(1, 1) == 2
        assert rpc.system.getresult(ok) == 7


@pytest.mark.parametrize("warm", [False, True])
def test_a_queued_calls_deadline_spares_the_running_call(pool, warm: bool) -> None:
    """README: a call past its deadline has its worker killed 'as soon as it is the call
    that worker runs': a queued call's deadline must not kill the call running before it."""
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(8) as ex:
        if warm:  # short calls: the worker takes several at a time
            for _ in range(3):
                list(ex.map(lambda i: rpc.add(i, 1), range(200)))
        a = ex.submit(rpc.block, s.tmp, "A")
        pa = s.pidfile("A")
        with pytest.raises(DeadlineExceeded):
            rpc.add.with_options(timeout=0.5)(1, 2)
        assert alive(pa) and not a.done(), "a queued call's deadline killed the running one"
        s.release("A")
        assert a.result(30) == "A"
        assert rpc.add(3, 4) == 7


def test_a_queued_calls_cancel_spares_the_running_call(pool) -> None:
    s = pool(server={"max_workers": 1})

    async def main() -> None:
        async with s.arpc() as rpc:
            await asyncio.gather(*(rpc.add(i, 1) for i in range(300)))
            a = asyncio.ensure_future(rpc.block(s.tmp, "A"))
            pa = await asyncio.to_thread(s.pidfile, "A")
            queued = [asyncio.ensure_future(rpc.add(i, 1)) for i in range(20)]
            assert await rpc.cadd(1, 1) == 2  # the queued calls were sent
            for q in queued:
                q.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            assert await rpc.cadd(1, 1) == 2  # the cancels were sent and read
            assert alive(pa) and not a.done(), "cancelling queued calls killed the running one"
            s.release("A")
            assert await a == "A"
            assert await rpc.add(3, 4) == 7

    asyncio.run(main())


def _workers(s: PoolSrv) -> set[int]:
    """The pool's workers: descendants that are not the server's direct children."""
    return {p for p in descendants(s.pid) if (st := _stat(p)) and st[1] != s.pid and alive(p)}


@pytest.mark.timeout(180)
def test_repeated_kills_fail_at_most_one_call_each(pool) -> None:
    """Kill every worker three times while 300 calls of 10 ms run: each killed worker
    fails at most the one call it was running; every other call returns its value."""
    s = pool(server={"max_workers": 2})
    killed: list[int] = []

    def killer() -> None:
        for _ in range(3):
            wait_until(lambda: len(_workers(s)) == 2, 20, "two live workers")
            for p in _workers(s):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            wait_until(lambda: not any(alive(p) for p in killed), 10, "the kills")

    async def main() -> list[Any]:
        async with s.arpc(timeout=150) as rpc:
            assert await rpc.spin(1) == 1
            calls = [asyncio.ensure_future(rpc.spin(10)) for _ in range(300)]
            await asyncio.to_thread(killer)
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, RemoteError) and r.exception == "WorkerDied" for r in failed), failed[
        :3
    ]
    assert len(failed) <= len(killed), f"{len(failed)} calls failed for {len(killed)} kills"
    assert all(r == 10 for r in results if not isinstance(r, BaseException))
    print(f"{len(killed)} workers killed, {len(failed)} of 300 calls failed")


def test_crash_loop_leaks_no_fds_no_zombies(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc(timeout=30) as rpc:
        assert rpc.add(1, 1) == 2
        fds0 = len(os.listdir(f"/proc/{s.pid}/fd"))
        for i in range(40):
            exc = remote_error(rpc.osexit if i % 2 else rpc.segv)
            assert exc.exception == "WorkerDied", repr(exc)
        assert rpc.add(1, 1) == 2
        fds1 = len(os.listdir(f"/proc/{s.pid}/fd"))
        family = descendants(s.pid)
        zombies = [p for p in family if (st := _stat(p)) and st[0] == "Z"]
    assert fds1 <= fds0 + 4, f"server fds {fds0} -> {fds1} after 40 worker deaths"
    assert len(zombies) <= 2, f"{len(zombies)} zombie workers"
    assert len(family) <= 1 + 2 + 2, f"{len(family)} processes for a pool of 2"


def test_worker_killed_while_sending_a_large_result(pool) -> None:
    s = pool(server={"max_workers": 1, "max_message_size": 64 * MiB})
    with s.rpc(timeout=60, max_message_size=64 * MiB) as rpc:
        for i in range(3):
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                fut = ex.submit(rpc.big_marked, s.tmp, f"bm{i}", 40 * MiB)
                w = s.pidfile(f"bm{i}")
                os.kill(w, signal.SIGKILL)
                try:
                    value = fut.result(60)
                except RemoteError as exc:
                    assert exc.exception == "WorkerDied", repr(exc)
                else:
                    assert value == b"q" * (40 * MiB)
            assert rpc.add(i, 1) == i + 1


def test_max_workers_zero_is_refused_or_works(pool) -> None:
    try:
        s = pool(server={"max_workers": 0})
    except RuntimeError as exc:
        assert "max_workers" in str(exc), str(exc)[-2000:]
        return
    with s.rpc(timeout=15) as rpc:
        assert rpc.add(1, 2) == 3


def test_register_instance_on_the_process_pool(pool) -> None:
    """README: each worker holds its own copy of the instance; the server logs one INFO
    line saying so at registration."""
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        p, n = rpc.bump()
        assert p != s.pid and n == 1
        assert rpc.bump() == [p, 2]
    s.stop()
    info = [x for x in s.stderr().splitlines() if x.startswith("INFO") and "bump" in x]
    assert len(info) == 1, s.stderr()[-3000:]


# ---------------------------------------------------------------------------------------
# what a handler's own processes and sockets see


def test_worker_killed_while_a_child_it_forked_lingers(pool) -> None:
    s = pool(server={"max_workers": 1})
    child = 0
    try:
        with s.rpc(timeout=60) as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(rpc.fork_linger, s.tmp, "fl")
            w = s.pidfile("fl")
            child = int((Path(s.tmp) / "fl.child").read_text())
            os.kill(w, signal.SIGKILL)
            try:
                fut.result(15)
            except RemoteError as exc:
                assert exc.exception == "WorkerDied", repr(exc)
            except concurrent.futures.TimeoutError:
                pytest.fail("the call whose worker was killed is still waiting after 15 s")
            assert rpc.add.with_options(timeout=15)(1, 2) == 3
    finally:
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)


def test_a_process_started_by_a_function_can_be_terminated(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=60) as rpc:
        assert rpc.terminate_child() == -signal.SIGTERM


def test_a_socket_opened_before_the_server_works_in_workers(pool) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(10)
    try:
        s = pool(udp_port=sink.getsockname()[1], server={"max_workers": 1})
        with s.rpc(timeout=30) as rpc:
            assert rpc.udp_send("from-a-worker") is True
            assert sink.recv(100) == b"from-a-worker"
    finally:
        sink.close()


def test_result_types_bytearray_and_memoryview(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=30) as rpc:
        assert rpc.ret_bytearray(10) == b"b" * 10
        assert rpc.ret_bytearray(2 * MiB) == b"b" * (2 * MiB)
        # A memoryview result travels out of band, as bytes do (README: large `bytes`
        # arguments and results; a view arrives as the bytes it shows).
        assert rpc.ret_memoryview() == b"mv"
        assert rpc.add(1, 2) == 3


def test_replacing_a_function_while_serving_reaches_every_worker(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert rpc.add(1, 1) == 2
        for which in ("one", "two", "one"):
            assert rpc.register_module_swap(which) is True
            assert set(ex.map(lambda _: rpc.mod_swapped(), range(100))) == {which}
        for k in (1, 2, 3):
            assert rpc.register_closure_swap(k) is True
            assert set(ex.map(lambda _: rpc.swapped(), range(100))) == {k}


def test_registering_a_closure_while_calls_run_does_not_disturb_them(pool) -> None:
    """A closure registered while serving makes a new set of workers; the calls running
    on the old ones finish there."""
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(4) as ex:
        a = ex.submit(rpc.block, s.tmp, "A")
        pa = s.pidfile("A")
        assert rpc.register_closure_late(4) is True
        assert rpc.closure_late(5) == 20
        assert rpc.add(2, 2) == 4
        assert alive(pa) and not a.done()
        s.release("A")
        assert a.result(30) == "A"
        wait_until(lambda: not alive(pa), 10, "the drained worker to exit")


# ---------------------------------------------------------------------------------------
# more configurations


def test_a_thread_only_server_starts_no_process(pool) -> None:
    s = pool(no_process=True, server={"executor": "thread"})
    with s.rpc() as rpc:
        assert rpc.pid() == s.pid
        assert rpc.add(1, 2) == 3
        assert rpc.cadd(1, 2) == 3
        assert descendants(s.pid) == set(), "processes started for a thread-only server"


def test_shutdown_after_threads_first_leaves_no_process(pool) -> None:
    """The forkserver path: its zygote (and multiprocessing's forkserver) go too."""
    s = pool(threads_first=True, only_module=True, server={"max_workers": 2})
    with s.rpc() as rpc:
        assert rpc.mod_add(1, 2) == 3
        family = descendants(s.pid)
        assert len(family) >= 2
    took = s.stop(30)
    assert took < 10, took
    wait_until(lambda: not any(alive(p) for p in family), 10, "the pool's processes to exit")
    assert "CHILDREN_AFTER_CLOSE" in s.stdout(), s.stderr()[-2000:]


def test_fork_warning_as_error_fails_cleanly_and_leaks_nothing(pool) -> None:
    """Threads first and a nested function: documented to fork with threads running,
    which Python 3.12+ warns about. A project running with DeprecationWarning as an
    error (pytest's filterwarnings = error) must get a call error or a working call,
    never a hang, and no process left behind."""
    s = pool(("-W", "error::DeprecationWarning"), threads_first=True)
    with s.rpc(timeout=20) as rpc:
        try:
            assert rpc.add(1, 2) == 3
        except MPRPCError as exc:
            assert exc.code == 404, repr(exc)
        assert rpc.cadd(1, 2) == 3
        family = descendants(s.pid)
    s.stop(30)
    wait_until(lambda: not any(alive(p) for p in family), 10, "the pool's processes to exit")


def test_a_stalled_zygote_does_not_freeze_the_server(pool) -> None:
    s = pool(server={"max_workers": 1})
    zygotes: list[int] = []
    try:
        with s.rpc(timeout=60) as rpc:
            w = rpc.pid()
            zygotes = [p for p in descendants(s.pid) if p != w]
            for z in zygotes:
                os.kill(z, signal.SIGSTOP)
            os.kill(w, signal.SIGKILL)
            wait_until(lambda: not alive(w), 10, "the worker to die")
            # a coroutine runs on the loop: it must not wait for the zygote
            assert rpc.cadd.with_options(timeout=5)(1, 2) == 3
    finally:
        for z in zygotes:
            with contextlib.suppress(OSError):
                os.kill(z, signal.SIGCONT)


# A stalled or dead zygote (the process that forks the workers): workers are asked of it
# without waiting; it has SPAWN_TIMEOUT seconds to answer, then a new one is made.


def _zygote_of(worker: int) -> int:
    st = _stat(worker)
    assert st is not None, f"worker {worker} is gone"
    return st[1]


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)


def test_a_stalled_zygote_that_resumes_delivers_the_replacement(pool) -> None:
    """The zygote is stopped while a worker is replaced: process calls wait (coroutines
    do not), and once it resumes, the worker it forked comes into service."""
    s = pool(server={"max_workers": 1}, spawn_timeout=120)
    with s.rpc(timeout=60) as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        w = rpc.pid()
        z = _zygote_of(w)
        with _stopped(z):
            os.kill(w, signal.SIGKILL)
            wait_until(lambda: not alive(w), 10, "the worker to die")
            waiting = ex.submit(rpc.add, 1, 2)
            assert rpc.cadd.with_options(timeout=5)(1, 2) == 3
            # No worker can run it until the zygote answers: it waits, it is not failed.
            assert not waiting.done()
        assert waiting.result(30) == 3
        w2 = rpc.pid()
        assert w2 != w and _zygote_of(w2) == z, "the resumed zygote was replaced"


def test_a_zygote_that_stays_stalled_is_replaced(pool) -> None:
    s = pool(server={"max_workers": 1}, spawn_timeout=1)
    with s.rpc(timeout=60) as rpc:
        w = rpc.pid()
        z = _zygote_of(w)
        with _stopped(z):
            os.kill(w, signal.SIGKILL)
            wait_until(lambda: not alive(w), 10, "the worker to die")
            assert rpc.add(1, 2) == 3
            wait_until(lambda: not alive(z), 10, "the stalled zygote to be killed")
        w2 = rpc.pid()
        assert _zygote_of(w2) not in (z, s.pid)
    assert "is replaced: it did not answer a request for a worker within 1s" in s.stderr()


def test_a_zygote_killed_while_a_worker_is_pending_is_replaced(pool) -> None:
    """Its end of file is seen at once: the call does not wait for the answer bound."""
    s = pool(server={"max_workers": 1}, spawn_timeout=120)
    with s.rpc(timeout=60) as rpc, concurrent.futures.ThreadPoolExecutor(1) as ex:
        w = rpc.pid()
        z = _zygote_of(w)
        with _stopped(z):
            os.kill(w, signal.SIGKILL)
            wait_until(lambda: not alive(w), 10, "the worker to die")
            waiting = ex.submit(rpc.add, 2, 3)
            assert rpc.cadd(0, 0) == 0
            os.kill(z, signal.SIGKILL)
        assert waiting.result(30) == 5
        assert _zygote_of(rpc.pid()) != z
        assert rpc.cadd(1, 1) == 2


def test_two_workers_killed_at_once_are_both_replaced(pool) -> None:
    """Two requests wait on a stopped zygote; its two answers arrive together and each
    socket gets its own worker."""
    s = pool(server={"max_workers": 2}, spawn_timeout=120)
    with s.rpc(timeout=60) as rpc:
        old = workers_of(s, 2, rpc, "before")
        z = _zygote_of(old[0])
        with _stopped(z):
            for p in old:
                os.kill(p, signal.SIGKILL)
            wait_until(lambda: not any(alive(p) for p in old), 10, "the workers to die")
            assert rpc.cadd(1, 2) == 3
        new = workers_of(s, 2, rpc, "after")
        assert len(set(new)) == 2 and not set(new) & set(old), (old, new)
        assert all(_zygote_of(p) == z for p in new)
        assert list(map(rpc.add, range(20), range(20))) == [2 * i for i in range(20)]
        wait_until(lambda: len(descendants(s.pid)) == 3, 10, "the zygote and two workers only")


def test_shutdown_while_a_worker_is_pending_leaves_no_process(pool) -> None:
    s = pool(server={"max_workers": 1}, spawn_timeout=120)
    with s.rpc(timeout=60) as rpc:
        w = rpc.pid()
        z = _zygote_of(w)
        family = descendants(s.pid)
        os.kill(z, signal.SIGSTOP)  # never continued: shutdown must kill it
        os.kill(w, signal.SIGKILL)
        wait_until(lambda: not alive(w), 10, "the worker to die")
        assert rpc.cadd(1, 2) == 3
    took = s.stop(30)
    assert took < 10, took  # the stalled zygote is killed, not waited for
    wait_until(lambda: not any(alive(p) for p in family), 10, "the pool's processes to exit")
    line = next(x for x in s.stdout().splitlines() if x.startswith("CHILDREN_AFTER_CLOSE"))
    assert json.loads(line.split(" ", 1)[1]) == [], line


def test_zygotes_that_keep_failing_fail_the_waiting_calls_clearly(pool) -> None:
    """The zygote and its replacement exit without answering: the process calls waiting
    fail with 404 naming the method; coroutines go on; a later call tries again."""
    s = pool(server={"max_workers": 1}, spawn_timeout=120)
    with s.rpc(timeout=60) as rpc:
        w = rpc.pid()
        z = _zygote_of(w)
        assert rpc.break_zygotes(True) is True
        os.kill(z, signal.SIGKILL)
        os.kill(w, signal.SIGKILL)
        wait_until(lambda: not alive(w) and not alive(z), 10, "the pool to die")
        exc = remote_error(lambda: rpc.add(1, 2))
        assert isinstance(exc, RemoteError) and exc.code == 404, repr(exc)
        assert exc.exception == "WorkerUnavailable", repr(exc)
        assert "'add' was not run" in str(exc) and "call again" in str(exc), str(exc)
        assert rpc.cadd(1, 2) == 3
        assert rpc.break_zygotes(False) is True
        assert rpc.add(1, 2) == 3


def test_a_storm_of_expired_calls_leaves_a_healthy_pool(pool) -> None:
    s = pool(server={"max_workers": 2})
    with s.rpc() as rpc, concurrent.futures.ThreadPoolExecutor(20) as ex:
        stuck = rpc.forever.with_options(timeout=1)
        futs = [ex.submit(stuck, s.tmp, f"x{i}") for i in range(20)]
        for f in futs:
            with pytest.raises(DeadlineExceeded):
                f.result(60)
        assert list(ex.map(lambda i: rpc.add(i, 1), range(100))) == [i + 1 for i in range(100)]
        pids = workers_of(s, 2, rpc, "h")
        assert len(set(pids)) == 2
        family = descendants(s.pid)
        assert len(family) <= 1 + 2 + 2, f"{len(family)} processes for a pool of 2"


def test_large_keyword_argument(pool) -> None:
    s = pool(server={"max_workers": 1})
    with s.rpc(timeout=60) as rpc:
        data = os.urandom(4 * MiB)
        assert rpc.size(b=data) == 4 * MiB
        assert rpc.echo(x=data) == data


def test_state_set_after_registration_before_serving_reaches_workers(pool) -> None:
    """pool_server.py sets settings["loaded"] after its last registration, before
    run_forever(), as an application loading its configuration would."""
    s = pool(server={"max_workers": 1})
    with s.rpc() as rpc:
        assert rpc.get_settings() == {"loaded": True}


def test_state_set_after_registration_is_not_seen_when_threads_start_before_serving(
    pool,
) -> None:
    """README "Forking safely", case 2: a thread started between the last registration
    and serving keeps the zygote forked at registration (no fork with threads running,
    so no DeprecationWarning on 3.12+): workers see state as of the last registration."""
    s = pool(("-W", "error::DeprecationWarning"), threads_before_serving=True)
    with s.rpc() as rpc:
        assert rpc.get_settings() == {}
        assert rpc.add(1, 2) == 3
    s.stop(30)
    assert "Traceback" not in s.stderr(), s.stderr()[-3000:]


def test_state_set_before_serving_reaches_workers_when_threads_ran_first(pool) -> None:
    s = pool(threads_first=True, server={"max_workers": 1})
    with s.rpc() as rpc:
        assert rpc.get_settings() == {"loaded": True}
