# ruff: noqa: SIM117  (a client's with-block and a pytest.raises read better apart)
"""`RETURN: false` calls (`delay`), `system.getresult`, `notify` (docs/protocol.md
"`RETURN: false` and kept results", README "### Clients" and the server option table)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pymprpc import errors
from pymprpc.client import RPC
from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import ALL_FEATURES, Raw, make_server


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    server = make_server(kept_results=2, kept_results_bytes=1000)
    server.register_introspection_functions()
    with serve_in_thread(server) as running:
        yield running


@pytest.mark.logs_errors
def test_getresult_returns_raises_or_streams_once(running: RunningServer) -> None:
    """docs/protocol.md: "`system.getresult(ID)` waits for a call still running, then
    returns its value, raises its error (with its own code), or streams a kept stream";
    "Each outcome is fetched once; an unknown, already fetched or expired ID is `400`";
    a `401` "is kept for `system.getresult`, not sent"."""
    with RPC(running.url) as rpc:
        value = rpc.delay("slow", 0.3, "v")
        assert rpc.system.getresult(value) == "v"
        with pytest.raises(errors.RequestError, match="already fetched"):
            rpc.system.getresult(value)
        with pytest.raises(errors.RPCRuntimeError, match="bad thing"):
            rpc.system.getresult(rpc.delay("boom"))
        with pytest.raises(errors.NotFindError):
            rpc.system.getresult(rpc.delay("nosuch"))
        assert list(rpc.system.getresult(rpc.delay("count", 3))) == [0, 1, 2]


def test_kept_result_over_the_byte_quota_is_405(running: RunningServer) -> None:
    """Server options: "`kept_results_bytes` ... a kept result or stream that cannot fit
    gets 405"."""
    with RPC(running.url) as rpc:
        with pytest.raises(errors.ResultLimitError, match="kept_results_bytes"):
            rpc.system.getresult(rpc.delay("echo", "x" * 2000))


def test_kept_results_full_of_running_calls_answers_405_on_the_wire(
    running: RunningServer,
) -> None:
    """Server options: "`kept_results` ... when full the oldest finished one goes, and
    with all still running a new one gets 405"."""
    with Raw(running.server.address[1], features=ALL_FEATURES) as raw:
        for i in range(3):
            raw.send(
                {"MPRPC": "0.1", "ID": f"k{i}", "METHOD": "slow", "ARGS": [0.4], "RETURN": False}
            )
        reply = raw.recv()
        assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "k2"


def test_delay_refused_for_a_full_kept_table_reaches_the_caller(running: RunningServer) -> None:
    """Server options: "`kept_results` ... with all still running a new one gets 405";
    README: `rpc.delay(...)` is the client's way to make such a call and
    `rpc.system.getresult(id)` to learn its outcome. The 405 should reach the caller,
    from `delay()` or from `getresult()`; the call never ran."""
    with RPC(running.url) as rpc:
        first = rpc.delay("slow", 0.4, "a")
        second = rpc.delay("slow", 0.4, "b")
        try:
            with pytest.raises(errors.ResultLimitError):
                third = rpc.delay("slow", 0.4, "c")
                time.sleep(0.1)
                rpc.system.getresult(third)
        finally:
            assert rpc.system.getresult(first) == "a"
            assert rpc.system.getresult(second) == "b"


def test_kept_results_zero_says_so_at_getresult() -> None:
    """Server options: "0 keeps none (every RETURN-false call gets 405)"; the client
    learns why when it asks."""
    with serve_in_thread(make_server(kept_results=0)) as running, RPC(running.url) as rpc:
        with pytest.raises(errors.MPRPCError, match="kept_results=0"):
            rpc.system.getresult(rpc.delay("echo", 1))


def test_notify_keeps_nothing_and_returns_none(running: RunningServer) -> None:
    """docs/protocol.md, `oneway`: "the server runs the call and sends **nothing** for
    that ID ... Nothing is kept for `system.getresult`, so oneway calls never take a
    kept-results slot"."""
    with RPC(running.url) as rpc:
        assert rpc.notify("slow", 0.3) is None
        assert rpc.notify("slow", 0.3) is None
        assert rpc.notify("slow", 0.3) is None
        kept = [rpc.delay("echo", i) for i in range(2)]  # both slots still free
        assert [rpc.system.getresult(k) for k in kept] == [0, 1]


def test_introspection_counts(running: RunningServer) -> None:
    """docs/protocol.md: "`system.lenUndoneTasks()` | calls running on the server, this
    one included"; "`system.lenConnections()` | open client connections";
    "`system.listMethods()` | sorted names"."""
    with RPC(running.url) as rpc, RPC(running.url) as other:
        assert rpc.system.lenUndoneTasks() >= 1
        assert other.system.lenConnections() == 2
        names = rpc.system.listMethods()
        assert names == sorted(names) and "system.getresult" in names
