"""Unread stream items are bounded per stream, in bytes, without starving other calls:
past `stream_buffer_size`, a stream is paused when nothing else waits on the connection,
and cancelled with a clear error when other calls do."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from service import Probe, url

from helpers import ServerThread, arun, wait_for
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ResultLimitError

ITEM = 64 * 1024
LIMIT = 1024 * 1024


@pytest.fixture
def traced() -> Iterator[Callable[[], int]]:
    """Peak traced memory growth (bytes) since the fixture started."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    yield lambda: tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()


def until(predicate: Callable[[], bool], step: Callable[[], Any], timeout: float = 10) -> None:
    """Run `step` until `predicate` holds (bounded in time)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        step()


def stalled(probe: Probe, timeout: float = 10) -> int:
    """Wait until the server's generator stops producing (its output is not read)."""
    last, since, end = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < 0.5:
        if probe.produced != last:
            last, since = probe.produced, time.monotonic()
        assert time.monotonic() < end, "the stream was never paused"
        time.sleep(0.02)
    return last


def test_sync_unread_stream_fails_clearly_while_other_calls_run(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    with RPC(url(srv), stream_buffer_size=LIMIT) as rpc:
        stream = rpc.firehose(ITEM)
        assert len(next(stream)) == ITEM
        # Other calls keep the connection read; the unread stream must not grow with it.
        until(probe.stream_closed.is_set, lambda: rpc.add(1, 1))
        assert rpc.add(2, 2) == 4
        got = 0
        with pytest.raises(ResultLimitError, match="stream_buffer_size") as info:
            for _ in stream:
                got += 1
        assert "'firehose' was cancelled" in str(info.value)
        # What was buffered stays readable; items in flight when the limit was hit may
        # still land (the server stops at the CANCEL), so allow a second LIMIT for them.
        assert got * ITEM <= 2 * LIMIT
    assert traced() < 8 * LIMIT, traced()


def test_async_unread_stream_does_not_stop_other_calls(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv), stream_buffer_size=LIMIT) as rpc:
            stream = await rpc.firehose(ITEM)
            assert len(await stream.__anext__()) == ITEM
            end = time.monotonic() + 10
            while not probe.stream_closed.is_set():
                assert time.monotonic() < end, "the stream was never cancelled"
                assert await asyncio.wait_for(rpc.add(1, 1), 5) == 2
            with pytest.raises(ResultLimitError, match="stream_buffer_size"):
                async for _ in stream:
                    pass
            assert await rpc.add(2, 2) == 4

    arun(main())
    assert traced() < 8 * LIMIT, traced()


def test_async_many_small_unread_items_do_not_stop_other_calls(
    srv: ServerThread, probe: Probe
) -> None:
    """The old client stopped reading the connection after 10,000 unread items."""

    async def main() -> None:
        async with AsyncRPC(url(srv), stream_buffer_size=4 * LIMIT) as rpc:
            stream = await rpc.firehose(8)
            await stream.__anext__()
            end = time.monotonic() + 10
            while not probe.stream_closed.is_set():
                assert time.monotonic() < end, "the stream was never cancelled"
                assert await asyncio.wait_for(rpc.add(1, 1), 5) == 2
            assert probe.produced > 10_000  # the old client's limit was passed

    arun(main())


def test_sync_stream_read_slowly_alone_is_paused_not_failed(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    with RPC(url(srv), stream_buffer_size=LIMIT) as rpc:
        stream = rpc.firehose(ITEM)
        next(stream)
        produced = stalled(probe)  # nothing else waits: reading pauses, TCP slows the server
        assert produced * ITEM < LIMIT + 32 * 1024 * 1024  # the limit plus socket buffers
        assert all(len(next(stream)) == ITEM for _ in range(300))  # and resumes, no error
        assert rpc.add(1, 1) == 2
    assert traced() < 8 * LIMIT, traced()


def test_async_stream_read_slowly_alone_is_paused_not_failed(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    async def main() -> None:
        async with AsyncRPC(url(srv), stream_buffer_size=LIMIT) as rpc:
            stream = await rpc.firehose(ITEM)
            await stream.__anext__()
            produced = await asyncio.to_thread(stalled, probe)
            assert produced * ITEM < LIMIT + 32 * 1024 * 1024
            for _ in range(300):
                assert len(await stream.__anext__()) == ITEM
            assert await rpc.add(1, 1) == 2

    arun(main())
    assert traced() < 8 * LIMIT, traced()


def test_without_cancel_the_failed_streams_items_are_dropped(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    """Against a server without `cancel` (plain MPRPC 0.1) the stream cannot be stopped:
    its further items are dropped as they come, and other calls go on."""
    with RPC(url(srv), stream_buffer_size=LIMIT, features=()) as rpc:
        stream = rpc.firehose(ITEM)
        next(stream)
        # Far more than the limit plus what the sockets hold, while other calls run.
        until(lambda: probe.produced > 1000, lambda: rpc.add(1, 1))
        with pytest.raises(ResultLimitError, match="stream_buffer_size"):
            for _ in stream:
                pass
        assert rpc.add(2, 2) == 4
        assert not probe.stream_closed.is_set()  # still streaming: nobody could stop it
    assert traced() < 8 * LIMIT, traced()


def test_closing_a_paused_stream_resumes_reading(
    serve: Callable[..., ServerThread], probe: Probe
) -> None:
    """A paused connection must not stay paused once the full stream is gone: the server
    closing it for idleness is then seen at once, and the next call reconnects."""
    srv = serve(timeout=0.5)
    with RPC(url(srv), stream_buffer_size=LIMIT) as rpc:
        stream = rpc.firehose(ITEM)
        next(stream)
        stalled(probe)  # paused
        stream.close()
        wait_for(lambda: not rpc.connected)  # read on: the idle close arrived
        assert rpc.add(1, 2) == 3


def test_async_call_made_while_paused_resumes_reading_and_fails_the_full_stream(
    srv: ServerThread, probe: Probe, traced: Callable[[], int]
) -> None:
    """README, "Unread streams": a call made while reading is paused for a full stream
    resumes reading (it is answered, not held up behind the stream), and the stream is
    then cancelled when its next item arrives, raising after the items it had."""

    async def main() -> None:
        async with AsyncRPC(url(srv), stream_buffer_size=LIMIT) as rpc:
            stream = await rpc.firehose(ITEM)
            await stream.__anext__()
            await asyncio.to_thread(stalled, probe)  # paused: nothing else waits
            assert await asyncio.wait_for(rpc.add(1, 1), 10) == 2
            got = 0
            with pytest.raises(ResultLimitError, match="stream_buffer_size"):
                async for _ in stream:
                    got += 1
            assert 0 < got * ITEM <= 2 * LIMIT  # what it held when it was cancelled
            await asyncio.to_thread(wait_for, probe.stream_closed.is_set)
            assert await rpc.add(2, 2) == 4

    arun(main())
    assert traced() < 8 * LIMIT, traced()
