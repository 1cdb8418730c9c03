"""RPC bounds sending a request by the call's deadline; what follows on that connection."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import tls_contexts
from pymprpc.client import RPC
from pymprpc.errors import DeadlineExceeded

from .kit import Seen, make_server, serving

BIG = 15_000_000  # more than the sockets of both sides hold, under max_message_size


def blocking_server(seen: Seen, **options: Any) -> Any:
    server = make_server(seen, **options)

    @server.register_function(executor="inline")
    def block(seconds: float) -> None:
        time.sleep(seconds)  # the event loop stops: the server reads nothing meanwhile

    @server.register_function()
    async def got(tag: str, blob: bytes) -> list[Any]:
        seen.add(tag)
        return [tag, len(blob)]

    return server


def timed_out_send(rpc: RPC, block: float = 1.5, tag: str = "big") -> float:
    """Stop the server's loop for `block` s and send a large request with a 0.3 s
    deadline; return how long the call took to fail."""
    rpc.notify("block", block)
    time.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"call 'got' did not finish within its 0.3s"):
        rpc.got.with_options(timeout=0.3)(tag, b"x" * BIG)
    return time.monotonic() - started


@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
@pytest.mark.timeout(40)
def test_timed_out_send_then_later_calls_get_their_own_replies(features: Any) -> None:
    seen = Seen()
    server = blocking_server(seen)
    kw = {} if features is None else {"features": features}
    with serving(server) as url, RPC(url, **kw) as rpc:
        assert timed_out_send(rpc, block=3.0) < 2.5  # not held until the server reads
        time.sleep(1.0)
        for i in range(5):
            assert rpc.got(f"small{i}", b"y" * (100 + i)) == [f"small{i}", 100 + i]
            assert rpc.echo(i) == i
        assert list(rpc.count(3)) == [0, 1, 2]
        # a second timed-out send on the same connection, then calls again
        timed_out_send(rpc, tag="big2")
        assert rpc.got("after", b"z" * 10) == ["after", 10]


@pytest.mark.timeout(40)
def test_delay_and_notify_behind_a_timed_out_send() -> None:
    seen = Seen()
    server = blocking_server(seen)
    with serving(server) as url, RPC(url) as rpc:
        timed_out_send(rpc)
        id = rpc.delay("got", "delayed", b"d" * 1000)  # waits for the server to read
        rpc.notify("got", "notified", b"n")
        assert rpc.system.getresult(id) == ["delayed", 1000]
        assert seen.wait_for("notified")
        assert rpc.echo("ok") == "ok"


@pytest.mark.timeout(60)
def test_threads_send_large_requests_with_deadlines_at_once() -> None:
    seen = Seen()
    server = blocking_server(seen)
    errors: dict[int, Any] = {}
    with serving(server) as url, RPC(url) as rpc:
        rpc.notify("block", 2.0)
        time.sleep(0.1)

        def send(n: int) -> None:
            try:
                errors[n] = rpc.got.with_options(timeout=0.3 + 0.05 * n)(f"t{n}", b"x" * BIG)
            except BaseException as exc:  # noqa: BLE001
                errors[n] = exc

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert all(not t.is_alive() for t in threads)
        assert all(isinstance(e, DeadlineExceeded) for e in errors.values()), errors
        time.sleep(2.0)

        results: dict[int, Any] = {}

        def call(n: int) -> None:
            try:
                results[n] = rpc.got.with_options(timeout=20)(f"s{n}", b"y" * (10 + n))
            except BaseException as exc:  # noqa: BLE001
                results[n] = exc

        threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
        assert results == {n: [f"s{n}", 10 + n] for n in range(4)}


@pytest.mark.timeout(60)
def test_tls_timed_out_send_then_later_calls(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    seen = Seen()
    server = blocking_server(seen, ssl=server_ctx)
    with serving(server) as url:
        url = url.replace("tcp://", "tls://")
        with RPC(url, ssl=client_ctx) as rpc:
            timed_out_send(rpc, block=2.0)
            time.sleep(1.0)
            for i in range(3):
                assert rpc.got(f"tls{i}", b"y" * 1000) == [f"tls{i}", 1000]
            id = rpc.delay("got", "tlsd", b"q" * 10)
            assert rpc.system.getresult(id) == ["tlsd", 10]


@pytest.mark.timeout(40)
def test_heart_beat_after_timed_out_send_does_not_kill_a_live_connection() -> None:
    seen = Seen()
    server = blocking_server(seen)
    out: dict[str, Any] = {}
    with serving(server) as url, RPC(url, heart_beat=2) as rpc:

        def waiting_call() -> None:
            try:
                out["value"] = rpc.slow(6.0, "ok")
            except BaseException as exc:  # noqa: BLE001
                out["value"] = exc

        waiter = threading.Thread(target=waiting_call)
        waiter.start()
        time.sleep(0.2)
        timed_out_send(rpc, block=1.0)  # the server reads again 1 s later
        waiter.join(15)
        # nothing came from the server for 2 s twice, but it was alive and reading all
        # along: the ping never left the client.
        assert out["value"] == "ok"


@pytest.mark.timeout(40)
def test_call_waiting_for_the_turn_to_send_gets_the_usual_deadline_error() -> None:
    seen = Seen()
    server = blocking_server(seen)
    with serving(server) as url, RPC(url) as rpc:
        rpc.notify("block", 2.0)
        time.sleep(0.1)
        holder = threading.Thread(target=lambda: rpc.got("held", b"x" * BIG), daemon=True)
        holder.start()  # no deadline: holds the turn until the server reads again
        time.sleep(0.3)
        with pytest.raises(DeadlineExceeded) as info:
            rpc.echo.with_options(timeout=0.3)(1)
        holder.join(20)
        assert rpc.echo(2) == 2
        assert str(info.value) == "call 'echo' did not finish within its 0.3s deadline"
        # (No ID: the call was never sent, so none was given; the words are the same.)
