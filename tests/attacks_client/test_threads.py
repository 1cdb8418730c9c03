"""Threads sharing one RPC, close() from another thread, many concurrent AsyncRPC calls."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from .fake import FakeServer, Peer, arun


def shuffling_server(batch: int) -> Any:
    """Collects `batch` calls, then answers them in a random order (ARGS echoed)."""

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        pending: list[dict[str, Any]] = []
        while (call := peer.next_call()) is not None:
            pending.append(call)
            if len(pending) == batch:
                random.shuffle(pending)
                for c in pending:
                    peer.reply(c, c.get("ARGS"))
                pending.clear()

    return script


def silent(peer: Peer) -> None:
    if peer.login() is None:
        return
    while peer.next_call(timeout=15) is not None:
        pass


@pytest.mark.timeout(60)
def test_threads_share_rpc_replies_matched() -> None:
    from pymprpc.client import RPC

    n_threads, per_thread = 8, 25
    with FakeServer(shuffling_server(n_threads)) as s, RPC(s.url(), timeout=10) as rpc:
        wrong: list[Any] = []
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(per_thread):
                    got = rpc.f(k, i)
                    if list(got) != [k, i]:
                        wrong.append((k, i, got))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert not errors and not wrong, (errors[:3], wrong[:3])


@pytest.mark.timeout(60)
def test_async_many_concurrent_calls_matched() -> None:
    from pymprpc.client import AsyncRPC

    n = 300
    with FakeServer(shuffling_server(n)) as s:

        async def main() -> list[Any]:
            async with AsyncRPC(s.url(), timeout=15) as rpc:
                return list(await asyncio.gather(*(rpc.f(i, str(i)) for i in range(n))))

        got = arun(main(), 30)
    assert [list(g) for g in got] == [[i, str(i)] for i in range(n)]


@pytest.mark.timeout(60)
def test_close_from_other_thread_fails_calls_in_progress() -> None:
    from pymprpc.client import RPC

    with FakeServer(silent) as s:
        rpc = RPC(s.url())
        rpc.connect()
        outcomes: list[Any] = []

        def worker() -> None:
            t0 = time.monotonic()
            try:
                rpc.f()
                outcomes.append("ok")
            except BaseException as e:  # noqa: BLE001
                outcomes.append((type(e).__name__, time.monotonic() - t0))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while len(s.peers) < 1 or len(s.peers[0].received) < 7:
            assert time.monotonic() < deadline, "calls never reached the server"
            time.sleep(0.01)
        rpc.close()
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads), f"threads hung after close(): {outcomes}"
        assert [o[0] for o in outcomes] == ["ConnectionLostError"] * 6, outcomes


@pytest.mark.timeout(60)
def test_close_from_other_thread_during_stream_iteration() -> None:
    from pymprpc.client import RPC

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        call = peer.next_call()
        if call is None:
            return
        peer.send({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": call["ID"]}})
        peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": call["ID"], "RESULT": 1}})
        peer.wait_eof(15)

    with FakeServer(script) as s:
        rpc = RPC(s.url())
        rpc.connect()
        out: list[Any] = []
        started = threading.Event()

        def reader() -> None:
            try:
                for item in rpc.s():
                    out.append(item)
                    started.set()
                out.append("end")
            except BaseException as e:  # noqa: BLE001
                out.append(type(e).__name__)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        assert started.wait(5)
        rpc.close()
        t.join(5)
        assert not t.is_alive(), "stream reader hung after close()"
        assert out == [1, "ConnectionLostError"], out


@pytest.mark.timeout(60)
def test_close_from_other_thread_while_connecting() -> None:
    """The server accepts and never welcomes; close() must end the connecting call."""
    from pymprpc.client import RPC

    def script(peer: Peer) -> None:
        peer.recv()
        peer.wait_eof(15)

    with FakeServer(script) as s:
        rpc = RPC(s.url())
        out: list[Any] = []

        def worker() -> None:
            try:
                rpc.connect()
            except BaseException as e:  # noqa: BLE001
                out.append(type(e).__name__)

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        deadline = time.monotonic() + 5
        while not (s.peers and s.peers[0].received):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        rpc.close()
        t.join(5)
        assert not t.is_alive(), "connecting call still blocked 5 s after close()"
        assert out and out[0] == "ConnectionLostError", (out, time.monotonic() - t0)


@pytest.mark.timeout(30)
def test_async_close_while_connecting_ends_connect() -> None:
    """The same with AsyncRPC: close() from another task ends a connect() still waiting
    for the welcome, with the same error as RPC."""
    from pymprpc.client import AsyncRPC

    def script(peer: Peer) -> None:
        peer.recv()
        peer.wait_eof(15)

    async def main(url: str, s: FakeServer) -> tuple[str, str]:
        rpc = AsyncRPC(url)
        task = asyncio.ensure_future(rpc.connect())
        while not (s.peers and s.peers[0].received):
            await asyncio.sleep(0.01)  # polling the fake's state, not a synchronisation sleep
        await rpc.close()
        try:
            await asyncio.wait_for(task, 5)
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, str(e)
        return "connected", ""

    with FakeServer(script) as s:
        out = arun(main(s.url(), s), timeout=20)
    assert out == ("ConnectionLostError", f"connection to {s.url()} closed"), out
