"""The process pool's fixed costs per call, as counts: event-loop passes in the server,
wake-ups of the worker, call contexts built; and the context a function asks for."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from helpers import ServerThread, arun
from pymprpc import current_call
from pymprpc.client import RPC, AsyncRPC
from pymprpc.server import Server
from pymprpc.server.handler import ConnectionHandler

CALLS = 200


# Module level: importable, so they reach workers started by the forkserver too (when the
# test process already runs threads).
def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def tagged(i: int) -> tuple[int, str | None, str]:
    """What the function sees of its own call (it asks: the server sends it then)."""
    ctx = current_call()
    ctx.set_response_metadata("seen", str(i))
    return i, ctx.metadata.get("n"), ctx.method


def build() -> Server:
    server = Server(("127.0.0.1", 0), max_workers=1)
    for func in (add, pid, tagged):
        server.register_function()(func)
    return server


def url(srv: ServerThread) -> str:
    return f"tcp://127.0.0.1:{srv.port}"


def test_a_sequential_pool_call_costs_the_server_two_loop_passes() -> None:
    """One pass reads the call and sends it to the worker; one reads the result, resumes
    the call's task and writes the reply. The task's wake-up used to take a pass of its
    own, and on 3.11 the eager start's cancelled handle one more."""
    with ServerThread(build()) as srv, RPC(url(srv)) as rpc:
        assert srv.loop is not None
        selector: Any = srv.loop._selector  # type: ignore[attr-defined]
        real = selector.select
        waits = 0

        def select(timeout: float | None = None) -> Any:
            nonlocal waits
            waits += 1
            return real(timeout)

        for i in range(20):  # warm-up: the worker runs, the connection is set up
            assert rpc.add(i, 1) == i + 1
        selector.select = select
        try:
            for i in range(CALLS):
                assert rpc.add(i, 1) == i + 1
        finally:
            selector.select = real
    # Each call: one wait for the client's request, one for the worker's result. A few
    # passes of slack for what runs around the measurement (the first and last call).
    assert waits <= 2 * CALLS + 4, waits / CALLS


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_worker_wakes_once_per_sequential_call() -> None:
    """The worker sleeps once per call, waiting for the next one. Sleeping in a blocked
    recv, it was also woken each time the server read its result (the kernel wakes a
    socket's readers when its peer frees send space) and slept again: two per call."""

    def voluntary_switches(worker: int) -> int:
        with open(f"/proc/{worker}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
        raise AssertionError("no voluntary_ctxt_switches in /proc")

    with ServerThread(build()) as srv, RPC(url(srv)) as rpc:
        worker = rpc.pid()
        for i in range(20):
            assert rpc.add(i, 1) == i + 1
        before = voluntary_switches(worker)
        for i in range(CALLS):
            assert rpc.add(i, 1) == i + 1
        switches = voluntary_switches(worker) - before
        assert rpc.pid() == worker  # the same single worker ran them all
    assert switches <= 1.5 * CALLS, switches / CALLS


def test_the_context_is_built_only_for_functions_that_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building and sending a call's context cost the server more than the rest of a
    small call: a function that never calls current_call() costs none; one that does
    gets its own call's context (and its response metadata comes back)."""
    built = 0
    real = ConnectionHandler.call_context

    def call_context(self: ConnectionHandler, *args: Any, **kwargs: Any) -> Any:
        nonlocal built
        built += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ConnectionHandler, "call_context", call_context)
    with ServerThread(build()) as srv, RPC(url(srv)) as rpc:
        for i in range(20):
            assert rpc.add(i, 1) == i + 1
        assert built == 0
        proxy = rpc.method("tagged").with_options(metadata={"n": "seven"})
        value, reply = proxy.call_with_metadata(7)
        assert value == [7, "seven", "tagged"]
        assert reply == {"seen": "7"}
        assert built == 1


def test_a_pool_call_takes_the_servers_fast_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain function on the pool, called with positional arguments that fit and no
    interceptors, is sent to its worker from the server's fast lane: each layer it
    skips (the general path's `Dispatcher.run`) is a frame every resumption of the
    call passes through. A call with keyword arguments still takes the general path."""
    from pymprpc.server.dispatch import Dispatcher

    general = 0
    real = Dispatcher.run

    def run(self: Dispatcher, *args: Any, **kwargs: Any) -> Any:
        nonlocal general
        general += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "run", run)
    with ServerThread(build()) as srv, RPC(url(srv)) as rpc:
        for i in range(20):
            assert rpc.add(i, 1) == i + 1
        assert general == 0
        assert rpc.call("add", a=1, b=2) == 3
        assert general == 1


def test_many_calls_asking_for_their_context_while_others_queue_behind_them() -> None:
    """A worker asking for a context reads on until the answer comes: the calls already
    sent behind it (up to 32 per worker) wait their turn and each gets its own context."""

    async def main() -> None:
        with ServerThread(build()) as srv:
            async with AsyncRPC(url(srv)) as rpc:

                async def one(i: int) -> None:
                    proxy = rpc.method("tagged").with_options(metadata={"n": str(i)})
                    value, reply = await proxy.call_with_metadata(i)
                    assert value == [i, str(i), "tagged"]
                    assert reply == {"seen": str(i)}

                plain = [rpc.add(i, 1) for i in range(100)]
                results = await asyncio.gather(*(one(i) for i in range(300)), *plain)
                assert results[300:] == [i + 1 for i in range(100)]

    arun(main(), timeout=60)
