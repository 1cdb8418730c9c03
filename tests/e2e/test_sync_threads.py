"""One blocking RPC client shared by several threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from service import Probe, url

from helpers import ServerThread, tls_contexts, wait_for
from pymprpc.client import RPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(work, range(count)))


def running(srv: ServerThread, calls: int) -> None:
    """Wait until the server runs `calls` calls (their threads then wait for replies)."""
    wait_for(lambda: srv.call_in_loop(lambda: srv.server.running_call_count) == calls)


def test_threads_share_one_client(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:

        def work(n: int) -> list[int]:
            return [rpc.coro_add(n, i) if i % 2 else rpc.add(n, i) for i in range(40)]

        results = in_threads(8, work)
        assert results == [[n + i for i in range(40)] for n in range(8)]
        assert rpc.system.lenConnections() == 1


def test_a_stream_read_in_one_thread_while_others_call(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        items: list[int] = []

        def read_stream() -> None:
            for item in rpc.count(300):
                items.append(item)
                time.sleep(0.0005)  # slower than the calls around it

        reader = threading.Thread(target=read_stream)
        reader.start()
        sums = in_threads(4, lambda n: [rpc.add(n, i) for i in range(30)])
        reader.join(10)
        assert items == list(range(300))
        assert sums == [[n + i for i in range(30)] for n in range(4)]


def test_a_stream_closed_while_another_thread_reads_is_cancelled(
    srv: ServerThread, probe: Probe
) -> None:
    with RPC(url(srv)) as rpc:
        stream = rpc.endless()
        assert next(stream) == 0
        slow = threading.Thread(target=rpc.sleep, args=(0.5,))
        slow.start()
        running(srv, 2)  # the stream and the slow call: its thread reads the socket
        stream.close()
        wait_for(probe.stream_closed.is_set)  # cancelled without waiting for it
        assert slow.is_alive()
        slow.join(5)


def test_a_slow_call_does_not_hold_up_the_others(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        slow = threading.Thread(target=rpc.sleep, args=(1.5,))
        slow.start()
        running(srv, 1)  # the slow call's thread now reads the socket for everyone
        assert [rpc.add(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]
        assert slow.is_alive()  # answered while the slow call still runs
        slow.join(5)


def test_a_thread_waiting_on_another_threads_read_keeps_its_deadline(srv: ServerThread) -> None:
    with RPC(url(srv)) as rpc:
        slow = threading.Thread(target=rpc.sleep, args=(1.5,))
        slow.start()
        running(srv, 1)
        with pytest.raises(DeadlineExceeded):
            rpc.sleep.with_options(timeout=0.1)(5)
        assert slow.is_alive()  # gave up at its own deadline, not after the slow call
        slow.join(5)
        assert rpc.add(1, 2) == 3  # and the connection is still good


def test_over_tls_calls_overlap_too(serve: Callable[..., ServerThread], tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    srv = serve(ssl=server_ctx)
    with RPC(url(srv), ssl=client_ctx) as rpc:
        assert in_threads(4, lambda n: [rpc.add(n, i) for i in range(20)]) == [
            [n + i for i in range(20)] for n in range(4)
        ]
        slow = threading.Thread(target=rpc.sleep, args=(1.5,))
        slow.start()
        running(srv, 1)  # TLS is decrypted in memory: the socket is not held while waiting
        assert [rpc.add(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]
        with pytest.raises(DeadlineExceeded, match="deadline"):
            rpc.sleep.with_options(timeout=0.1)(5)
        assert slow.is_alive()
        slow.join(5)
        assert rpc.add(1, 2) == 3


def test_over_tls_a_stream_closed_while_another_thread_waits_is_cancelled_at_once(
    serve: Callable[..., ServerThread], tmp_path: Path, probe: Probe
) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    srv = serve(ssl=server_ctx)
    with RPC(url(srv), ssl=client_ctx) as rpc:
        stream = rpc.endless()
        assert next(stream) == 0
        slow = threading.Thread(target=rpc.sleep, args=(1.5,))
        slow.start()
        running(srv, 2)  # the stream and the slow call
        stream.close()
        wait_for(probe.stream_closed.is_set)
        assert slow.is_alive()  # cancelled while the other call still waits
        slow.join(5)
        assert rpc.add(1, 1) == 2


def test_close_from_another_thread_fails_the_calls_in_progress(srv: ServerThread) -> None:
    rpc = RPC(url(srv)).connect()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            rpc.sleep(30)
        except ConnectionLostError as exc:
            errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for t in waiters:
        t.start()
    running(srv, 3)
    rpc.close()
    for t in waiters:
        t.join(5)
    assert [type(e) for e in errors] == [ConnectionLostError] * 3
    assert not any(t.is_alive() for t in waiters)


def test_a_stream_resumed_after_close_says_the_connection_is_closed(srv: ServerThread) -> None:
    rpc = RPC(url(srv)).connect()
    # A stream that never ends: a finite one may have ended before close() under load.
    stream = rpc.endless()
    assert next(stream) == 0
    rpc.close()
    with pytest.raises(ConnectionLostError, match="closed"):
        list(stream)


def close_while_eight_threads_call(srv: ServerThread) -> list[str]:
    """Eight threads call (odd) or stream (even) until one closes the client meanwhile;
    what each thread ended with."""
    rpc = RPC(url(srv)).connect()
    outcomes: list[str] = []
    answered: list[int] = []
    go = threading.Barrier(9)

    def work(n: int) -> None:
        go.wait()
        try:
            for i in range(300):
                if n % 2:
                    assert rpc.add(n, i) == n + i
                else:
                    assert list(rpc.count(20)) == list(range(20))
                answered.append(n)
        except ConnectionLostError:
            outcomes.append("lost")
            return
        outcomes.append("done")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    go.wait()
    wait_for(lambda: len(set(answered)) == 8)  # every thread is calling
    rpc.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_close_racing_calls_and_streams_ends_every_one(srv: ServerThread) -> None:
    """Calls, streams and close() from different threads at once: every thread finishes
    with its results or ConnectionLostError, and the reader thread ends too."""
    for _ in range(5):
        outcomes = close_while_eight_threads_call(srv)
        assert len(outcomes) == 8 and "lost" in outcomes
    wait_for(lambda: not any(t.name.startswith("pymprpc reader") for t in threading.enumerate()))
