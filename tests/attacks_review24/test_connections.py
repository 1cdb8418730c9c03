"""Connections that end, close() from other threads, reconnecting within deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded

from ._kit import Peer, RawServer, arun, in_thread, make_server, result, serving


@pytest.mark.timeout(30)
def test_sync_idle_close_between_calls_reconnects() -> None:
    with serving(make_server(idle_timeout=0.5)) as url, RPC(url) as rpc:
        assert rpc.echo(1) == 1
        time.sleep(1.5)
        assert not rpc.connected
        assert rpc.echo(2) == 2


@pytest.mark.timeout(30)
def test_async_idle_close_between_calls_reconnects() -> None:
    async def main() -> None:
        async with AsyncRPC(url) as rpc:
            assert await rpc.echo(1) == 1
            await asyncio.sleep(1.5)
            assert not rpc.connected
            assert await rpc.echo(2) == 2

    with serving(make_server(idle_timeout=0.5)) as url:
        arun(main())


@pytest.mark.timeout(30)
def test_sync_server_restarted_on_same_port() -> None:
    first = make_server()
    with serving(first) as url:
        port = first.port
        rpc = RPC(url).connect()
        assert rpc.echo(1) == 1
    time.sleep(0.3)
    with serving(make_server(port=port)):
        assert rpc.echo(2) == 2
    rpc.close()


@pytest.mark.timeout(30)
def test_async_server_restarted_on_same_port() -> None:
    first = make_server()
    restarted = threading.Event()
    stop_second = threading.Event()

    def restart() -> None:
        with serving(first):
            started.set()
            called.wait(10)
        time.sleep(0.3)
        with serving(make_server(port=first.port)):
            restarted.set()
            stop_second.wait(15)

    started, called = threading.Event(), threading.Event()
    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    assert started.wait(10)

    async def main() -> None:
        async with AsyncRPC(f"tcp://127.0.0.1:{first.port}") as rpc:
            assert await rpc.echo(1) == 1
            called.set()
            while not restarted.is_set():
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert await rpc.echo(2) == 2

    try:
        arun(main())
    finally:
        stop_second.set()
        thread.join(20)


def dies_then_serves(state: dict) -> object:
    def script(peer: Peer) -> None:
        peer.login()
        state["n"] = state.get("n", 0) + 1
        if state["n"] == 1:
            peer.next()  # a call arrives: die
            peer.sock.close()
            return
        while (call := peer.next()) is not None:
            peer.send(result(call["ID"], call["ARGS"][0]))

    return script


@pytest.mark.timeout(30)
def test_sync_death_mid_call_then_stays_closed_until_connect() -> None:
    with RawServer(dies_then_serves({})) as raw:
        rpc = RPC(raw.url, timeout=5).connect()
        with pytest.raises(ConnectionLostError, match="closed by the server"):
            rpc.f(1)
        with pytest.raises(ConnectionLostError, match=r"not connected .*connect\(\)"):
            rpc.f(2)
        assert raw.accepted == 1
        rpc.connect()
        assert rpc.f(3) == 3
        rpc.close()


@pytest.mark.timeout(30)
def test_async_death_mid_call_then_stays_closed_until_reconnect() -> None:
    async def main() -> None:
        rpc = await AsyncRPC(raw.url, timeout=5).connect()
        with pytest.raises(ConnectionLostError, match="closed by the server"):
            await rpc.f(1)
        with pytest.raises(ConnectionLostError, match=r"not connected .*connect\(\)"):
            await rpc.f(2)
        assert raw.accepted == 1
        await rpc.reconnect()
        assert await rpc.f(3) == 3
        await rpc.close()

    with RawServer(dies_then_serves({})) as raw:
        arun(main())


def welcome_once(peer: Peer) -> None:
    """First connection logs in and is closed at once (an idle close); later ones are
    accepted and never answered."""
    if peer is peer and getattr(welcome_once, "done", False):
        time.sleep(20)
        return
    welcome_once.done = True  # type: ignore[attr-defined]
    peer.login()
    time.sleep(0.1)
    peer.sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_reconnect_inside_call_bounded_by_deadline(kind: str) -> None:
    welcome_once.done = False  # type: ignore[attr-defined]
    with RawServer(welcome_once) as raw:
        if kind == "sync":
            rpc = RPC(raw.url, connect_timeout=10).connect()
            time.sleep(0.5)
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                rpc.f.with_options(timeout=1)()
            elapsed = time.monotonic() - started
            rpc.close()
        else:

            async def main() -> tuple[BaseException, float]:
                rpc = await AsyncRPC(raw.url, connect_timeout=10).connect()
                await asyncio.sleep(0.5)
                started = time.monotonic()
                try:
                    await rpc.f.with_options(timeout=1)()
                except DeadlineExceeded as exc:
                    return exc, time.monotonic() - started
                finally:
                    await rpc.close()
                raise AssertionError("no DeadlineExceeded")

            exc, elapsed = arun(main())

            class info:  # noqa: N801
                value = exc

    assert "did not finish within its 1s deadline (connecting again to" in str(info.value)
    assert elapsed < 5


def never_welcomes(peer: Peer) -> None:
    peer.next()
    time.sleep(20)


@pytest.mark.timeout(30)
def test_sync_close_from_other_thread_during_connect() -> None:
    with RawServer(never_welcomes) as raw:
        rpc = RPC(raw.url, connect_timeout=15)
        thread, out = in_thread(rpc.connect)
        time.sleep(0.5)
        rpc.close()
        thread.join(5)
        assert not thread.is_alive()
        assert isinstance(out.get("error"), ConnectionLostError), out
        assert str(out["error"]).endswith(" closed")


@pytest.mark.timeout(30)
def test_sync_close_from_other_thread_during_call_and_stream() -> None:
    with serving(make_server()) as url:
        rpc = RPC(url).connect()
        call_thread, call_out = in_thread(lambda: rpc.slow(20))
        stream_thread, stream_out = in_thread(lambda: list(rpc.count(100, 0.2)))
        time.sleep(1)
        rpc.close()
        for t in (call_thread, stream_thread):
            t.join(5)
            assert not t.is_alive()
        for out in (call_out, stream_out):
            assert isinstance(out.get("error"), ConnectionLostError), out
        with pytest.raises(ConnectionLostError, match="not connected"):
            rpc.echo(1)


@pytest.mark.timeout(60)
def test_threads_share_rpc_with_a_slow_call() -> None:
    with serving(make_server()) as url, RPC(url, timeout=10) as rpc:
        slow_thread, slow_out = in_thread(lambda: rpc.slow.with_options(timeout=3)(30))
        errors: list[BaseException] = []
        wrong: list[object] = []

        def worker(k: int) -> None:
            try:
                for i in range(40):
                    if i % 10 == 0:
                        got = list(rpc.count(5))
                        if got != list(range(5)):
                            wrong.append(got)
                    elif (got := rpc.echo([k, i])) != [k, i]:
                        wrong.append(got)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        assert not errors and not wrong, (errors[:2], wrong[:2])
        slow_thread.join(10)
        assert isinstance(slow_out.get("error"), DeadlineExceeded), slow_out
        assert rpc.echo("after") == "after"


def _login_then_never_read(peer: Peer) -> None:
    peer.login()
    time.sleep(25)


@pytest.mark.timeout(30)
def test_sync_close_from_other_thread_during_a_blocked_send() -> None:
    with RawServer(_login_then_never_read) as raw:
        rpc = RPC(raw.url).connect()
        sending, sent_out = in_thread(lambda: rpc.echo(b"x" * (12 * 1024 * 1024)))
        waiting, wait_out = in_thread(lambda: rpc.echo(1))  # waits for its turn to send
        time.sleep(1)
        rpc.close()
        sending.join(5)
        waiting.join(5)
        assert not sending.is_alive() and not waiting.is_alive()
        closed = f"connection to {raw.url} closed"
        assert str(wait_out.get("error")) == closed
        assert isinstance(sent_out.get("error"), ConnectionLostError)
        assert str(sent_out["error"]) == closed
