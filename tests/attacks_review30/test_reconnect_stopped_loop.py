"""Contract 1: an AsyncRPC driven by `loop.run_until_complete` once per call (its loop
stopped between calls) connects again, transparently, when the server closed the
connection between calls (README "Connections that end"), on asyncio's loop and uvloop;
it never sends a call twice and never hides a connection that ended mid-call."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from attacks_review29._kit import Fake
from servicers import StubCalculator

from generated_examples.calculator import AsyncCalculatorClient, register_calculator
from pymprpc import Server, errors
from pymprpc.client import AsyncRPC
from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import Stepper, make_server, serving

IDLE = 0.15
GAP = 0.45  # longer than IDLE plus the server's timer slack


def test_plain_calls_after_idle_closes(loop: str) -> None:
    with serving(idle_timeout=IDLE) as (running, ran), Stepper(loop) as s:
        rpc = AsyncRPC(running.url)
        s.run(rpc.connect())
        for i in range(3):
            assert s.run(rpc.tick(f"t{i}")) == f"t{i}"
            time.sleep(GAP)
        assert ran == {"t0": 1, "t1": 1, "t2": 1}
        s.run(rpc.close())


def test_stream_delay_notify_and_deadline_after_idle_closes(loop: str) -> None:
    async def read_stream(rpc: AsyncRPC) -> list[int]:
        return [x async for x in await rpc.count(3)]

    with serving(idle_timeout=IDLE) as (running, ran), Stepper(loop) as s:
        rpc = AsyncRPC(running.url)
        s.run(rpc.connect())
        s.run(rpc.echo(0))
        time.sleep(GAP)
        assert s.run(read_stream(rpc)) == [0, 1, 2]
        time.sleep(GAP)
        id = s.run(rpc.delay("tick", "d"))
        assert s.run(rpc.system.getresult(id)) == "d"
        time.sleep(GAP)
        s.run(rpc.notify("tick", "n"))
        time.sleep(GAP)
        assert s.run(rpc.tick.with_options(timeout=2)("w")) == "w"
        assert ran == {"d": 1, "n": 1, "w": 1}
        s.run(rpc.close())


def test_typed_client_after_idle_close(loop: str) -> None:
    server = Server(("127.0.0.1", 0), idle_timeout=IDLE, grace_period=1)
    register_calculator(server, StubCalculator())
    with serve_in_thread(server) as running, Stepper(loop) as s:
        client = AsyncCalculatorClient(running.url)
        s.run(client.connect())
        assert s.run(client.add(1, 2)) == 3
        time.sleep(GAP)
        assert s.run(client.add(2, 3)) == 5
        time.sleep(GAP)
        assert s.run(client.with_options(timeout=2).add(3, 4)) == 7
        s.run(client.close())


def test_concurrent_calls_after_idle_close_each_once_in_order(loop: str) -> None:
    """Many tasks calling at once on a connection closed meanwhile: every call runs once
    and each gets its own reply."""
    with serving(idle_timeout=IDLE) as (running, ran), Stepper(loop) as s:
        rpc = AsyncRPC(running.url)
        s.run(rpc.connect())
        s.run(rpc.echo(0))
        for round in range(3):
            time.sleep(GAP)
            tags = [f"r{round}-{i}" for i in range(40)]

            async def all_at_once(tags: list[str] = tags) -> list[str]:
                return list(await asyncio.gather(*(rpc.tick(t) for t in tags)))

            got = s.run(all_at_once())
            assert got == tags
        assert set(ran.values()) == {1} and len(ran) == 120
        s.run(rpc.close())


def test_restart_between_calls(loop: str) -> None:
    server, _ = make_server()
    first = RunningServer(server)
    first.start()
    port = first.server.address[1]
    with Stepper(loop) as s:
        rpc = AsyncRPC(first.url)
        s.run(rpc.connect())
        assert s.run(rpc.tick("a")) == "a"
        first.stop()
        second_server = Server(("127.0.0.1", port), grace_period=1)
        seen: list[Any] = []

        @second_server.register_function()
        async def tick(tag: str) -> str:
            seen.append(tag)
            return tag

        second = RunningServer(second_server)
        second.start()
        # A restart takes longer than this in practice: the client looks for what its
        # stopped loop did not read once no call has started for 50 ms (_FRESH).
        time.sleep(0.1)
        try:
            assert s.run(rpc.tick("b")) == "b"
            assert seen == ["b"]
        finally:
            s.run(rpc.close())
            second.stop()


def test_connection_closed_mid_call_raises_and_is_not_sent_again(loop: str) -> None:
    """The server ran the call and the connection ended before the reply: the call fails
    (it may have run), it is not sent again on a new connection."""

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if request.get("METHOD") == "die":
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        elif "ID" in request:
            fake.reply(conn, request, request.get("ARGS"))

    with Fake(on, features=["length-framing", "cancel", "deadline"]) as fake, Stepper(loop) as s:
        rpc = AsyncRPC(fake.url)
        s.run(rpc.connect())
        assert s.run(rpc.echo(1)) == [1]
        time.sleep(0.05)  # the connection has read nothing for a while: the new check runs
        with pytest.raises(errors.ConnectionLostError):
            s.run(rpc.die())
        assert [m.get("METHOD") for m in fake.received].count("die") == 1
        s.run(rpc.close())


def test_server_closed_after_receiving_a_call_written_on_a_quiet_connection(loop: str) -> None:
    """A server that reads the call and then closes (it half-closed after its welcome:
    nothing unread on the client) — the call must fail, not run twice."""

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if "ID" in request:
            conn.close()

    with Fake(on, features=["length-framing"]) as fake, Stepper(loop) as s:
        rpc = AsyncRPC(fake.url, features=("length-framing",))
        s.run(rpc.connect())
        time.sleep(0.05)
        with pytest.raises(errors.ConnectionLostError):
            s.run(rpc.tick("once"))
        assert [m.get("METHOD") for m in fake.received].count("tick") == 1
        s.run(rpc.close())


def test_half_closed_by_the_server_between_calls_connects_again(loop: str) -> None:
    """The server shuts its sending side between calls (EOF, no 504): nothing more can
    come back on that connection, so the next call connects again."""
    conns: list[socket.socket] = []

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if "ID" in request:
            fake.reply(conn, request, request.get("ARGS"))
            if request.get("METHOD") == "last":
                conn.shutdown(socket.SHUT_WR)
                conns.append(conn)

    with Fake(on, features=["length-framing"]) as fake, Stepper(loop) as s:
        rpc = AsyncRPC(fake.url, features=("length-framing",))
        s.run(rpc.connect())
        assert s.run(rpc.last(1)) == [1]
        time.sleep(0.1)
        assert s.run(rpc.echo(2)) == [2]
        assert [m.get("METHOD") for m in fake.received].count("echo") == 1
        s.run(rpc.close())


def late_reply_then_idle_close(s: Stepper, rpc: AsyncRPC, size: int) -> None:
    """A call whose deadline passes; its reply (`size` bytes; no `cancel` negotiated, so
    the server still sends it) arrives while the loop is stopped, then the server closes
    the idle connection."""
    s.run(rpc.connect())
    assert len(s.run(rpc.big(8_000_000))) == 8_000_000  # the socket's buffer grows
    with pytest.raises(errors.DeadlineExceeded):
        s.run(rpc.big.with_options(timeout=0.05)(size, 0.15))
    time.sleep(0.15 + IDLE + 0.5)


def test_small_late_reply_then_idle_close_connects_again(loop: str) -> None:
    with serving(idle_timeout=IDLE) as (running, _), Stepper(loop) as s:
        rpc = AsyncRPC(running.url, features=("length-framing",))
        late_reply_then_idle_close(s, rpc, 100_000)
        assert s.run(rpc.tick("after")) == "after"
        s.run(rpc.close())


def test_large_late_reply_then_idle_close_connects_again() -> None:
    """(asyncio's loop; uvloop reads more per pass and passes here at this size.)"""
    with serving(idle_timeout=IDLE) as (running, _), Stepper("asyncio") as s:
        rpc = AsyncRPC(running.url, features=("length-framing",))
        late_reply_then_idle_close(s, rpc, 3_000_000)
        try:
            assert s.run(rpc.tick("after")) == "after"
        finally:
            s.run(rpc.close())


def test_wait_for_wrapped_call_after_late_reply_and_idle_close() -> None:
    """(asyncio's loop, whose first pass runs the wrapper's task before the read.)"""
    with serving(idle_timeout=IDLE) as (running, _), Stepper("asyncio") as s:
        rpc = AsyncRPC(running.url, features=("length-framing",))
        late_reply_then_idle_close(s, rpc, 400_000)
        try:
            got = s.loop.run_until_complete(asyncio.wait_for(rpc.tick("after"), 5))
            assert got == "after"
        finally:
            s.run(rpc.close())
