"""README "#### The process pool" and the process executor bullet of "Executors"."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from pymprpc import RPC, Server
from pymprpc.errors import DeadlineExceeded, ResultLimitError, RPCRuntimeError
from pymprpc.testing import serve_in_thread, sync_client_for

from .kit import wait_until

COUNTER = {"n": 0}


def bump() -> tuple[int, int]:
    COUNTER["n"] += 1
    return os.getpid(), COUNTER["n"]


def test_functions_defined_inside_with_block_work() -> None:
    """ "Functions are not pickled — workers inherit them, so functions defined inside the
    `with` block work"."""
    with Server(("127.0.0.1", 0), max_workers=1) as server:
        offset = 10

        @server.register_function()
        def add(a: int, b: int) -> int:
            return a + b + offset

        with serve_in_thread(server) as running, RPC(running.url, timeout=10) as rpc:
            assert rpc.add(1, 2) == 13
            assert rpc.add(1, 2) == 13


def test_each_worker_has_its_own_copy_of_module_state() -> None:
    """ "Each worker has its **own copy** of module and instance state" (the server's
    module state is unchanged by calls)."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function()(bump)
    before = COUNTER["n"]
    with sync_client_for(server, RPC, timeout=10) as rpc:
        pid1, n1 = rpc.bump()
        pid2, n2 = rpc.bump()
    assert pid1 == pid2 != os.getpid()
    assert n2 == n1 + 1
    assert COUNTER["n"] == before


class Stateful:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n


def test_bound_method_on_process_changes_worker_copy_only() -> None:
    """ "a method that mutates `self` changes the worker's copy, not the server's"."""
    obj = Stateful()
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function("inc", executor="process")(obj.inc)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.inc() == 1
        assert rpc.inc() == 2
    assert obj.n == 0


def test_state_set_after_registration_seen_case_1() -> None:
    """Case 1: "The server has one thread when it starts serving (`run_forever()`,
    `serve_forever()`, `await server.start()` with no thread started): ... workers see
    the process as it is when serving starts, everything set after registration
    included". (Here the server runs in a thread, so this is case 2 or 3: workers see
    state as of the last registration at least; a value set before registration is
    seen.)"""
    config = {"v": "before"}
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def read() -> str:
        return config["v"]

    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.read() == "before"


@pytest.mark.logs_errors
def test_worker_killed_fails_its_call_404_worker_died_and_is_replaced() -> None:
    """ "A worker that dies (`kill -9`, `os._exit`, a segfault) fails the call it was
    running with 404 naming the method (`exception: "WorkerDied"`) and is replaced"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def die_hard() -> None:
        os._exit(7)

    @server.register_function()
    def pid() -> int:
        return os.getpid()

    with sync_client_for(server, RPC, timeout=10) as rpc:
        first = rpc.pid()
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.die_hard()
        assert exc.value.code == 404
        assert exc.value.exception == "WorkerDied"
        assert "die_hard" in str(exc.value)
        assert rpc.pid() != first


@pytest.mark.logs_errors
def test_sigkill_running_worker_fails_only_that_call() -> None:
    """ "kill -9" of a worker running a call: that call 404 WorkerDied; calls queued
    behind it run on the replacement."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def slow_pid(t: float) -> int:
        time.sleep(t)
        return os.getpid()

    @server.register_function()
    def pid() -> int:
        return os.getpid()

    with sync_client_for(server, RPC, timeout=10) as rpc:
        victim = rpc.pid()
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["v"] = rpc.slow_pid(3)
            except BaseException as exc:  # noqa: BLE001
                out["e"] = exc

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        t.join(10)
        assert isinstance(out.get("e"), RPCRuntimeError), out
        assert out["e"].exception == "WorkerDied"
        assert rpc.pid() != victim


@pytest.mark.logs_errors
def test_unpicklable_argument_or_result_fails_404_with_clear_message() -> None:
    """ "**Values that cannot cross** fail their call with 404 and a clear message: an
    argument or result that cannot be pickled, or a result that cannot be unpickled in
    the server"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def lock() -> Any:
        return threading.Lock()

    @server.register_function()
    def ok() -> str:
        return "ok"

    with sync_client_for(server, RPC, timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.lock()
        assert exc.value.code == 404
        assert "pickle" in str(exc.value).lower(), str(exc.value)
        assert rpc.ok() == "ok"


class Unloadable:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot be rebuilt here")


@pytest.mark.logs_errors
def test_result_that_cannot_be_unpickled_in_server_is_404() -> None:
    """ "or a result that cannot be unpickled in the server" -> 404, the worker goes on."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def bad() -> Any:
        return Unloadable()

    @server.register_function()
    def pid() -> int:
        return os.getpid()

    with sync_client_for(server, RPC, timeout=10) as rpc:
        before = rpc.pid()
        with pytest.raises(RPCRuntimeError) as exc:
            rpc.bad()
        assert exc.value.code == 404
        assert rpc.pid() == before


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _depth(value: Any) -> int:
    d = 0
    while isinstance(value, list):
        value = value[0]
        d += 1
    return d


def test_deep_lists_cross_both_ways() -> None:
    """ "Lists and maps as deep as MessagePack carries (1,022 levels) cross on every
    Python"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def deep(v: Any) -> Any:
        return v

    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert _depth(rpc.deep(_nest(1022))) == 1022


@pytest.mark.logs_errors
def test_result_too_deep_is_405() -> None:
    """ "A result nested deeper than MessagePack carries gets the 405 it gets on any
    executor"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def deeper() -> Any:
        return _nest(1100)

    with sync_client_for(server, RPC, timeout=10) as rpc, pytest.raises(ResultLimitError):
        rpc.deeper()


@pytest.mark.logs_errors
def test_deadline_reaches_worker_and_kills_it() -> None:
    """ "A call ... past its deadline (408) ... has its worker killed and replaced as soon
    as it is the call that worker runs"."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def slow(t: float) -> int:
        time.sleep(t)
        return os.getpid()

    @server.register_function()
    def pid() -> int:
        return os.getpid()

    with sync_client_for(server, RPC, timeout=10) as rpc:
        victim = rpc.pid()
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            rpc.slow.with_options(timeout=0.5)(30)
        assert time.monotonic() - started < 5
        wait_until(lambda: _gone(victim), 5, "the worker killed")
        assert rpc.pid() != victim


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie until reaped counts as alive for kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_function_registered_after_start_is_sent_pickled() -> None:
    """ "A function registered after the workers started is sent to them pickled (the
    worker keeps its own state)"."""
    server = Server(("127.0.0.1", 0), max_workers=1)
    server.register_function()(bump)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        pid, n = rpc.bump()
        server.register_function("bump2")(bump)
        pid2, n2 = rpc.bump2()
    assert pid2 == pid and n2 == n + 1


def test_large_bytes_roundtrip() -> None:
    """ "Large `bytes` arguments and results travel out of band": they arrive intact."""
    server = Server(("127.0.0.1", 0), max_workers=1)

    @server.register_function()
    def rev(b: bytes) -> bytes:
        return b[::-1]

    data = os.urandom(3_000_000)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.rev(data) == data[::-1]
