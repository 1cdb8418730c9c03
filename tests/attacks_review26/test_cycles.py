"""Many start/close cycles in one process (a test suite, an app that restarts its server
on reconfiguration): what each cycle takes (descriptors, threads, worker processes,
memory) must be given back, so the totals stay bounded."""

from __future__ import annotations

import gc
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import threading
import tracemalloc

import pytest

from pymprpc import RPC

from .kit import Serving, child_pids, every_kind, fd_count, wait_until, zombies

CYCLES = 30
MEMORY_CYCLES = 15


def _use(serving: Serving) -> None:
    with RPC(serving.url) as rpc:
        assert rpc.echo(1) == 1
        assert rpc.sleep_thread(0) == 0
        assert rpc.sleep_proc(0) == 0
        assert list(rpc.count(3)) == [0, 1, 2]
        kept = rpc.delay("echo", 2)
        assert rpc.system.getresult(kept) == 2
        rpc.notify("echo", 3)
        rpc.delay("sleep_async", 0)  # left unfetched


def _cycle(server_for_cycle: object | None = None) -> None:
    server = every_kind(grace_period=1) if server_for_cycle is None else server_for_cycle
    with Serving(server) as serving:  # type: ignore[arg-type]
        _use(serving)
        serving.close()
        serving.join()


@pytest.mark.timeout(60)
def test_many_servers_started_and_closed_leave_nothing_behind() -> None:
    """30 servers, each serving calls on every executor, a stream, kept and oneway calls,
    then closed: descriptors, threads and child processes return to what they were, and
    no zombie is left."""
    _cycle()
    # multiprocessing's forkserver and resource tracker, which the pool uses once threads
    # run, are started once per process and kept (two pipes): started before counting.
    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()
    gc.collect()
    fds, threads = fd_count(), set(threading.enumerate())
    for _ in range(CYCLES):
        _cycle()
    gc.collect()
    wait_until(lambda: set(threading.enumerate()) <= threads, 10, "threads to end")
    wait_until(lambda: not child_pids(), 10, "workers to exit")
    assert fd_count() <= fds
    assert not zombies()


def _pymprpc_bytes(snapshot: tracemalloc.Snapshot) -> int:
    only = snapshot.filter_traces(
        [
            tracemalloc.Filter(True, "*pymprpc*", all_frames=True),
            # urlsplit's own cache (128 addresses), filled by each new port's client
            tracemalloc.Filter(False, "*urllib/parse.py", all_frames=True),
        ]
    )
    return sum(stat.size for stat in only.statistics("filename"))


@pytest.mark.timeout(60)
def test_many_new_servers_hold_no_growing_memory() -> None:
    """Memory allocated by pymprpc stays flat over 15 server lifetimes (a control for the
    next test: the same work, a new Server each time)."""
    for _ in range(3):
        _cycle()
    gc.collect()
    tracemalloc.start(10)
    try:
        for _ in range(3):
            _cycle()
        gc.collect()
        before = _pymprpc_bytes(tracemalloc.take_snapshot())
        for _ in range(MEMORY_CYCLES):
            _cycle()
        gc.collect()
        after = _pymprpc_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert after - before < 8 * 1024, after - before


@pytest.mark.timeout(60)
def test_one_server_restarted_many_times_holds_no_growing_memory() -> None:
    """close() then start() on the same Server, 15 times. Found: every start made a new
    zygote and registered `weakref.finalize(pool, zygote.close)`, which held the old,
    closed zygote (its deques, socket objects) as long as the server lived, about 1.4 KB
    per restart that nothing ever gave back."""
    server = every_kind(grace_period=1)
    for _ in range(3):
        _cycle(server)
    gc.collect()
    tracemalloc.start(10)
    try:
        for _ in range(3):
            _cycle(server)
        gc.collect()
        before = _pymprpc_bytes(tracemalloc.take_snapshot())
        for _ in range(MEMORY_CYCLES):
            _cycle(server)
        gc.collect()
        after = _pymprpc_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert after - before < 8 * 1024, after - before
