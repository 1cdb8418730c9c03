# ruff: noqa: SIM117  (a client's with-block and a pytest.raises read better apart)
"""Connections that end, threads, close(), heartbeats, deadlines, streams and shutdown
(README "### Clients", docs/protocol.md "Heartbeat", "Replies", "Shutdown")."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc import errors
from pymprpc.client import RPC, AsyncRPC
from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import ALL_FEATURES, Fake, Raw, make_server


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    with serve_in_thread(make_server()) as running:
        yield running


def restarted(port: int) -> RunningServer:
    """A new server with `echo` on `port` (the old one's), started."""
    from pymprpc import Server

    server = Server(("127.0.0.1", port), grace_period=1)

    @server.register_function()
    async def echo(x: Any = None) -> Any:
        return x

    running = RunningServer(server)
    running.start()
    return running


def test_next_call_reconnects_after_a_server_restart() -> None:
    """README: "When the server closes a connection between calls (its idle timeout, or a
    restart), the next call connects again, transparently."."""
    first = RunningServer(make_server())
    first.start()
    port = first.server.address[1]
    with RPC(first.url) as rpc:
        assert rpc.echo(1) == 1
        first.stop()
        second = restarted(port)
        try:
            assert rpc.echo(2) == 2
        finally:
            second.stop()


def test_async_next_call_reconnects_after_a_server_restart() -> None:
    """As above, for AsyncRPC."""

    async def main() -> None:
        first = RunningServer(make_server())
        first.start()
        port = first.server.address[1]
        loop = asyncio.get_running_loop()
        async with AsyncRPC(first.url) as rpc:
            assert await rpc.echo(1) == 1
            await loop.run_in_executor(None, first.stop)
            second = await loop.run_in_executor(None, restarted, port)
            try:
                assert await rpc.echo(2) == 2
            finally:
                await loop.run_in_executor(None, second.stop)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_idle_close_between_calls_reconnects() -> None:
    """README: "When the server closes a connection between calls (its idle timeout ...),
    the next call connects again"; docs: "a long call ... never makes its connection
    idle"."""
    with serve_in_thread(make_server(idle_timeout=0.4)) as running, RPC(running.url) as rpc:
        assert rpc.echo(1) == 1
        time.sleep(0.8)
        assert rpc.echo(2) == 2
        assert rpc.slow(0.8, "long") == "long"


def test_call_in_flight_when_the_connection_drops_then_client_stays_closed() -> None:
    """README: "A call in flight when the connection ends fails with ...
    `ConnectionLostError`, and the client stays closed until `connect()`"."""
    import socket

    def on(fake: Fake, conn: socket.socket, request: dict[str, Any]) -> None:
        if request.get("METHOD") == "die":
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        elif "ID" in request:
            fake.reply(conn, request, "ok")

    with Fake(on) as fake:
        rpc = RPC(fake.url, timeout=5)
        rpc.connect()
        with pytest.raises(errors.ConnectionLostError):
            rpc.die()
        with pytest.raises(errors.ConnectionLostError, match="connect"):
            rpc.fine()
        assert len(fake.conns) == 1
        rpc.connect()
        assert rpc.fine() == "ok"
        rpc.close()
        with pytest.raises(errors.ConnectionLostError):
            rpc.fine()


def test_threads_share_one_rpc_and_a_slow_call_holds_up_none(running: RunningServer) -> None:
    """README: "Threads may share one `RPC` and their calls overlap on its connection ... a
    slow call does not hold up the others."""
    took: dict[int, float] = {}
    with RPC(running.url) as rpc:

        def work(i: int) -> None:
            start = time.monotonic()
            assert rpc.slow(1.0 if i == 0 else 0.1, i) == i
            took[i] = time.monotonic() - start

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
    assert len(took) == 6
    assert max(took[i] for i in range(1, 6)) < 0.8


def test_close_from_another_thread_fails_calls_in_progress(running: RunningServer) -> None:
    """README: "`rpc.close()` from any thread fails the calls in progress with
    `ConnectionLostError`"."""
    outcomes: list[Any] = []
    rpc = RPC(running.url)
    rpc.connect()

    def work() -> None:
        try:
            outcomes.append(rpc.slow(5, 1))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcomes.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    start = time.monotonic()
    rpc.close()
    for t in threads:
        t.join(5)
    assert time.monotonic() - start < 2
    assert len(outcomes) == 3
    assert all(isinstance(o, errors.ConnectionLostError) for o in outcomes), outcomes


def test_close_ends_a_connect_waiting_for_the_welcome() -> None:
    """README: "`rpc.close()` ... ends a `connect()` still waiting for the welcome reply the
    same way" (`ConnectionLostError`)."""
    with Fake(silent=True) as fake:
        rpc = RPC(fake.url, connect_timeout=5)
        timer = threading.Timer(0.3, rpc.close)
        timer.start()
        start = time.monotonic()
        with pytest.raises(errors.ConnectionLostError):
            rpc.connect()
        assert time.monotonic() - start < 2
        timer.join()


def test_async_close_fails_calls_in_progress(running: RunningServer) -> None:
    """README: close() "fails the calls in progress with `ConnectionLostError`" (both
    clients take the same options and give the same errors)."""

    async def main() -> list[Any]:
        rpc = AsyncRPC(running.url)
        await rpc.connect()
        tasks = [asyncio.create_task(rpc.slow(5, i)) for i in range(3)]
        await asyncio.sleep(0.3)
        await rpc.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(asyncio.wait_for(main(), 5))
    assert all(isinstance(o, errors.ConnectionLostError) for o in outcomes), outcomes


@pytest.mark.parametrize("client", ["sync", "async"])
def test_heart_beat_finds_a_dead_connection(client: str) -> None:
    """README: "`heart_beat` | a ping every N seconds; no pong within N seconds marks the
    connection dead and fails every pending call"; docs: "with `ConnectionLostError`"."""
    with Fake(lambda fake, conn, request: None) as fake:
        start = time.monotonic()
        with pytest.raises(errors.ConnectionLostError, match="heartbeat"):
            if client == "sync":
                with RPC(fake.url, heart_beat=0.3) as rpc:
                    rpc.never()
            else:

                async def main() -> None:
                    async with AsyncRPC(fake.url, heart_beat=0.3) as rpc:
                        await rpc.never()

                asyncio.run(asyncio.wait_for(main(), 5))
        assert time.monotonic() - start < 2


def test_connect_timeout_bounds_the_login() -> None:
    """README: "`connect_timeout` | 10 s | connecting, TLS and logging in"."""
    with Fake(silent=True) as fake:
        start = time.monotonic()
        with pytest.raises(errors.ConnectionLostError, match="did not answer the login"):
            RPC(fake.url, connect_timeout=0.4).connect()
        assert time.monotonic() - start < 2


@pytest.mark.parametrize("client", ["sync", "async"])
def test_stream_deadline_returns_items_then_raises(running: RunningServer, client: str) -> None:
    """docs/protocol.md: "A client's per-call deadline (`timeout`) covers the whole call, a
    stream included ... the items received before the deadline are still returned, then
    `DeadlineExceeded` is raised"."""
    got: list[int] = []
    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        if client == "sync":
            with RPC(running.url) as rpc:
                for item in rpc.count.with_options(timeout=0.35)(100, 0.1):
                    got.append(item)
        else:

            async def main() -> None:
                async with AsyncRPC(running.url) as rpc:
                    stream = await rpc.count.with_options(timeout=0.35)(100, 0.1)
                    async for item in stream:
                        got.append(item)

            asyncio.run(asyncio.wait_for(main(), 5))
    assert time.monotonic() - start < 2
    assert 1 <= len(got) <= 5 and got == list(range(len(got)))


def test_stream_closed_early_runs_the_generators_finally() -> None:
    """docs/protocol.md, `cancel`: "a stream's generator is closed, so its `finally` blocks
    run"; "pymprpc's clients send it when ... a stream is closed early"."""
    ended = threading.Event()
    server = make_server()

    @server.register_function()
    async def forever():  # type: ignore[no-untyped-def]
        try:
            while True:
                yield 1
                await asyncio.sleep(0.01)
        finally:
            ended.set()

    with serve_in_thread(server) as running, RPC(running.url) as rpc:
        stream = rpc.forever()
        assert next(stream) == 1
        stream.close()
        assert ended.wait(3)
        assert rpc.echo("still") == "still"


def test_max_inflight_503_fails_that_call_only() -> None:
    """docs/protocol.md: "`max_inflight` calls already running on this connection | `503`
    for that call"; the connection stays open."""
    with serve_in_thread(make_server(max_inflight=2)) as running:

        async def main() -> list[Any]:
            async with AsyncRPC(running.url) as rpc:
                calls = [rpc.slow(0.3, i) for i in range(3)]
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
                outcomes.append(await rpc.echo("after"))
                return outcomes

        outcomes = asyncio.run(asyncio.wait_for(main(), 5))
    assert outcomes[:2] == [0, 1]
    assert isinstance(outcomes[2], errors.RpcUnavailableException)
    assert "max_inflight" in str(outcomes[2])
    assert outcomes[3] == "after"


def test_max_connections_503() -> None:
    """Server options: "`max_connections` ... beyond it new connections get 503 and are
    closed"."""
    with serve_in_thread(make_server(max_connections=1)) as running, RPC(running.url):
        with pytest.raises(errors.RpcUnavailableException):
            RPC(running.url).connect()


def test_shutdown_answers_new_calls_503_and_health_not_serving() -> None:
    """docs/protocol.md, Shutdown: "answers calls that arrive meanwhile with `503`
    (carrying their ID), and lets running calls finish within `grace`"; "While the server
    shuts down [system.health] is answered (not refused with `503` like other calls) and
    every name is `"NOT_SERVING"`."""
    running = RunningServer(make_server(grace_period=2))
    running.start()
    raw = Raw(running.server.address[1], features=ALL_FEATURES)
    try:
        raw.send({"MPRPC": "0.1", "ID": "long", "METHOD": "slow", "ARGS": [0.6, "done"]})
        time.sleep(0.1)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        time.sleep(0.2)
        late = raw.call(ID="late", METHOD="echo", ARGS=[1])
        assert late["CODE"] == 503 and late["MESSAGE"]["ID"] == "late"
        health = raw.call(ID="h", METHOD="system.health", ARGS=[""])
        assert health["MESSAGE"]["RESULT"] == "NOT_SERVING"
        assert raw.recv()["MESSAGE"] == {"ID": "long", "RESULT": "done"}
        stopper.join(10)
    finally:
        raw.close()


@pytest.mark.parametrize(("features", "code"), [(None, 407), ((), 503)])
def test_calls_cancelled_at_shutdown(features: Any, code: int) -> None:
    """docs/protocol.md: "Calls still running then are cancelled and answered `407` on
    connections that negotiated `cancel`, `503` (with their ID) on the others"."""
    running = RunningServer(make_server(grace_period=0.3))
    running.start()
    options = {} if features is None else {"features": features}
    with RPC(running.url, **options) as rpc:
        timer = threading.Timer(0.2, running.stop)
        timer.start()
        with pytest.raises(errors.MPRPCError) as error:
            rpc.slow(5, 1)
        assert error.value.code == code
        timer.join(10)


def test_login_backoff_warning_states_the_real_wait(caplog: pytest.LogCaptureFixture) -> None:
    """Server options: "`login_attempts`, `login_backoff` | 5, 1 s | ... then each further
    failure blocks that address and that user for `login_backoff` seconds, doubling ...,
    logged at WARNING"."""
    server = make_server(auth=[("admin", "pw")], login_attempts=1, login_backoff=2)
    with serve_in_thread(server) as running:
        bad = running.url.replace("tcp://", "tcp://admin:wrong@")
        for _ in range(2):
            with pytest.raises(errors.LoginError):
                RPC(bad).connect()
    texts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused for 2s" in t for t in texts), texts


def test_login_backoff_warning_with_a_fraction_of_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server options: "each further failure blocks that address and that user for
    `login_backoff` seconds ..., logged at WARNING". A log that says a block lasts 0s
    misleads whoever reads it."""
    server = make_server(auth=[("admin", "pw")], login_attempts=1, login_backoff=0.5)
    with serve_in_thread(server) as running:
        bad = running.url.replace("tcp://", "tcp://admin:wrong@")
        for _ in range(2):
            with pytest.raises(errors.LoginError):
                RPC(bad).connect()
    texts = [r.getMessage() for r in caplog.records if "refused for" in r.getMessage()]
    assert texts and all("refused for 0.5s" in t for t in texts), texts


@pytest.mark.parametrize("how", ["idle", "restart"])
def test_async_client_on_a_loop_run_per_call_reconnects(how: str) -> None:
    """README: "When the server closes a connection between calls (its idle timeout, or a
    restart), the next call connects again, transparently." The original usage page
    hands `AsyncRPC` a loop of the caller's (`loop=loop`); here that loop runs each call
    with `run_until_complete`, so it is not running while the server closes."""
    first = RunningServer(make_server(idle_timeout=0.3 if how == "idle" else 180))
    first.start()
    servers = [first]
    loop = asyncio.new_event_loop()
    rpc = AsyncRPC(first.url)
    try:
        loop.run_until_complete(rpc.connect())
        assert loop.run_until_complete(rpc.echo(1)) == 1
        if how == "idle":
            time.sleep(0.8)
        else:
            first.stop()
            servers.append(restarted(first.server.address[1]))
            # A restart takes longer than this in practice: the client looks for what its
            # stopped loop did not read once nothing has been read for 50 ms (_FRESH).
            time.sleep(0.1)
        assert loop.run_until_complete(rpc.echo.with_options(timeout=5)(2)) == 2
    finally:
        loop.run_until_complete(rpc.close())
        loop.close()
        for server in servers:
            server.stop()
