"""Threads sharing one RPC: streams read from several threads at once, paused reading."""

from __future__ import annotations

import threading
import time

import pytest

from pymprpc import RPC
from pymprpc.errors import ResultLimitError

from ._kit import make_server, serving


@pytest.mark.timeout(60)
def test_streams_and_calls_from_many_threads() -> None:
    with serving(make_server()) as url, RPC(url, timeout=30) as rpc:
        errors: list[BaseException] = []
        wrong: list[object] = []

        def reader(k: int) -> None:
            try:
                got = list(rpc.blobs(300, 1024 + k))
                if [(len(g), g[0]) for g in got] != [(1024 + k, i % 256) for i in range(300)]:
                    wrong.append(k)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def caller(k: int) -> None:
            try:
                for i in range(100):
                    if rpc.echo([k, i]) != [k, i]:
                        wrong.append((k, i))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
        threads += [threading.Thread(target=caller, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert not errors and not wrong, (errors[:2], wrong[:3])


@pytest.mark.timeout(60)
def test_slow_readers_of_full_streams_never_hang_nor_mix_items() -> None:
    """Streams read at different paces from three threads, with a small buffer: each
    either ends whole or (another call, a stream not yet full, used the connection) is
    cut with ResultLimitError after a correct prefix, as documented; none hangs."""
    with serving(make_server()) as url, RPC(url, stream_buffer_size=16384, timeout=40) as rpc:
        outcomes: dict[int, tuple[int, str]] = {}

        def reader(k: int) -> None:
            n = 0
            try:
                for item in rpc.blobs(150, 2048):
                    if item[0] != n % 256:
                        outcomes[k] = (n, "wrong item")
                        return
                    n += 1
                    time.sleep(0.002 * (k + 1))
                outcomes[k] = (n, "")
            except ResultLimitError as exc:
                outcomes[k] = (n, "cut" if "was cancelled: more than 16384" in str(exc) else "?")
            except BaseException as exc:  # noqa: BLE001
                outcomes[k] = (n, repr(exc))

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        assert not any(t.is_alive() for t in threads), "a reader hung"
        ok = [(why == "" and n == 150) or why == "cut" for n, why in outcomes.values()]
        assert all(ok), outcomes
        assert len(outcomes) == 3
        assert rpc.echo("after") == "after"


@pytest.mark.timeout(30)
def test_close_from_another_thread_while_reader_is_paused() -> None:
    with serving(make_server(grace_period=1)) as url:
        rpc = RPC(url, stream_buffer_size=8192).connect()
        stream = rpc.blobs(1000, 4096)
        assert next(stream)[0] == 0
        time.sleep(0.5)  # the stream is full: the reader thread pauses
        closer = threading.Thread(target=rpc.close)
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), "close() hung on a paused reader"
        got = 0
        with pytest.raises(ConnectionError):
            for _ in stream:
                got += 1
        assert got < 1000
