"""Per-call deadlines: sending, streams, per-call options, and what timed-out calls leave."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import DeadlineExceeded

from ._kit import Peer, RawServer, arun, in_thread, make_server, serving


def not_reading(peer: Peer) -> None:
    peer.login()
    time.sleep(25)  # never reads again


@pytest.mark.timeout(30)
def test_sync_big_request_to_stalled_server_keeps_its_deadline() -> None:
    with RawServer(not_reading) as raw:
        rpc = RPC(raw.url, timeout=1.5).connect()
        thread, out = in_thread(lambda: rpc.echo(b"x" * (12 * 1024 * 1024)))
        thread.join(8)
        alive = thread.is_alive()
        rpc.close()
        thread.join(5)
    assert not alive, "the call was still sending 8s into its 1.5s deadline"
    assert isinstance(out.get("error"), DeadlineExceeded), out


@pytest.mark.timeout(30)
def test_async_big_request_to_stalled_server_keeps_its_deadline() -> None:
    async def main() -> tuple[Any, float]:
        async with AsyncRPC(raw.url, timeout=1.5) as rpc:
            started = time.monotonic()
            try:
                await rpc.echo(b"x" * (12 * 1024 * 1024))
            except DeadlineExceeded as exc:
                return exc, time.monotonic() - started
        raise AssertionError("no error")

    with RawServer(not_reading) as raw:
        exc, elapsed = arun(main())
    assert str(exc) == "call 'echo' did not finish within its 1.5s deadline"
    assert elapsed < 8


def clock_stream_server() -> Server:
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def ticks() -> Any:
        while True:
            yield time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
            await asyncio.sleep(0.002)

    return server


# Found: with features=() (the deadline enforced by the client alone) a stream whose items
# kept coming never raised DeadlineExceeded: the deadline was checked only while its
# buffer was empty.


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "features",
    [(), None],
    ids=["plain", "negotiated"],
)
def test_sync_stream_deadline_returns_no_item_made_after_it(features: Any) -> None:
    opts = {} if features is None else {"features": features}
    with serving(clock_stream_server()) as url, RPC(url, timeout=1, **opts) as rpc:
        started = time.monotonic()
        stamps = []
        with pytest.raises(DeadlineExceeded):
            for stamp in rpc.ticks():  # read slower than the server sends
                stamps.append(stamp)
                time.sleep(0.004)
                if time.monotonic() - started > 6:
                    break
        late = [s for s in stamps if s > started + 1.5]
        assert not late, f"{len(late)} of {len(stamps)} items were made after the deadline"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "features",
    [(), None],
    ids=["plain", "negotiated"],
)
def test_async_stream_deadline_returns_no_item_made_after_it(features: Any) -> None:
    opts = {} if features is None else {"features": features}

    async def main() -> None:
        async with AsyncRPC(url, timeout=1, **opts) as rpc:
            started = time.monotonic()
            stamps = []
            with pytest.raises(DeadlineExceeded):
                async for stamp in await rpc.ticks():
                    stamps.append(stamp)
                    await asyncio.sleep(0.004)
                    if time.monotonic() - started > 6:
                        break
            late = [s for s in stamps if s > started + 1.5]
            assert not late, f"{len(late)} of {len(stamps)} items were made after the deadline"

    with serving(clock_stream_server()) as url:
        arun(main())


# Found: a stream whose deadline the server's clock ended first raised the server's 408
# text ('deadline of 0.5s exceeded'), not the client's as a unary call does: the message
# depended on which clock won.


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "reader",
    ["keeps-up", "busy"],
)
def test_stream_deadline_text(kind: str, reader: str) -> None:
    """The same text whichever clock (client's, server's) ends the stream first; "busy":
    the reader is away past the deadline, so the server's 408 is what it finds."""
    away = 1.0 if reader == "busy" else 0.0
    with serving(make_server()) as url:
        if kind == "sync":
            with RPC(url) as rpc, pytest.raises(DeadlineExceeded) as info:
                for _ in rpc.count.with_options(timeout=0.5)(100, 0.1):
                    time.sleep(away)
            text = str(info.value)
        else:

            async def main() -> str:
                async with AsyncRPC(url) as rpc:
                    try:
                        async for _ in await rpc.count.with_options(timeout=0.5)(100, 0.1):
                            await asyncio.sleep(away)
                    except DeadlineExceeded as exc:
                        return str(exc)
                raise AssertionError("no DeadlineExceeded")

            text = arun(main())
    if reader == "keeps-up" and text == "deadline of 0.5s exceeded":
        pytest.skip("the server's clock won the race: see the 'busy' case")
    assert text == "call 'count' did not finish within its 0.5s deadline"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unary_deadline_text_when_server_clock_wins(kind: str) -> None:
    """A unary call's 408 from the server reads as the client's own deadline."""
    with serving(make_server()) as url:
        if kind == "sync":
            with RPC(url) as rpc:
                slow = rpc.slow.with_options(timeout=0.5)
                with pytest.raises(DeadlineExceeded) as info:
                    slow(3)
            text = str(info.value)
        else:

            async def main() -> str:
                async with AsyncRPC(url) as rpc:
                    try:
                        await rpc.slow.with_options(timeout=0.5)(3)
                    except DeadlineExceeded as exc:
                        return str(exc)
                raise AssertionError("no DeadlineExceeded")

            text = arun(main())
    assert text == "call 'slow' did not finish within its 0.5s deadline"


# -- with_options(timeout=...) is not checked as timeout= is ---------------------------

BAD_TIMEOUTS = [
    pytest.param("5", TypeError, "timeout must be a number of seconds", id="str"),
    pytest.param(True, TypeError, "timeout must be a number of seconds", id="bool"),
    pytest.param(float("nan"), ValueError, "timeout must be a finite number", id="nan"),
]


def _sync_with_options(url: str, timeout: Any) -> BaseException | None:
    with RPC(url) as rpc:
        try:
            rpc.echo.with_options(timeout=timeout)(1)
        except Exception as exc:  # noqa: BLE001
            return exc
    return None


def _async_with_options(url: str, timeout: Any) -> BaseException | None:
    async def main() -> BaseException | None:
        async with AsyncRPC(url) as rpc:
            try:
                await rpc.echo.with_options(timeout=timeout)(1)
            except Exception as exc:  # noqa: BLE001
                return exc
        return None

    return arun(main())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("timeout,error,words", BAD_TIMEOUTS)
def test_with_options_bad_timeout_refused_like_the_constructor(
    kind: str, timeout: Any, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        RPC("tcp://127.0.0.1:1", timeout=timeout)  # the constructor's words
    with serving(make_server()) as url:
        got = (_sync_with_options if kind == "sync" else _async_with_options)(url, timeout)
    assert isinstance(got, error), repr(got)
    assert words in str(got)


@pytest.mark.timeout(30)
def test_with_options_infinite_timeout_same_on_both_clients() -> None:
    with serving(make_server()) as url:
        sync = _sync_with_options(url, float("inf"))
        asyn = _async_with_options(url, float("inf"))
    assert type(sync) is type(asyn) and str(sync) == str(asyn), (sync, asyn)
    # Never a DEADLINE the server refuses (docs/protocol.md, `deadline`).
    assert sync is None or isinstance(sync, ValueError | TypeError), repr(sync)


# -- timed-out calls leave nothing behind ----------------------------------------------


def _growth(run: Any, calls: int) -> int:
    run(200)  # warm up: caches, IDs' blocks, the first allocations
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run(calls)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return _kept(after.compare_to(before, "filename"))


def _kept(stats: list[tracemalloc.StatisticDiff]) -> int:
    """Bytes pymprpc (client and in-process server) holds more than before, leaving out
    the reader thread's receive buffer in use (256 KiB, from sync_io.py)."""
    return sum(
        s.size_diff
        for s in stats
        if "pymprpc" in s.traceback[0].filename
        and not (s.traceback[0].filename.endswith("sync_io.py") and s.size_diff >= 200_000)
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
def test_sync_timed_out_calls_leave_nothing(features: Any) -> None:
    opts = {} if features is None else {"features": features}
    with serving(make_server()) as url, RPC(url, **opts) as rpc:
        slow = rpc.slow.with_options(timeout=0.001)

        def run(n: int) -> None:
            for _ in range(n):
                with pytest.raises(DeadlineExceeded):
                    slow(0.05)

        growth = _growth(run, 2000)
        assert rpc.echo(1) == 1
    assert growth < 100_000, f"{growth} bytes kept after 2,000 timed-out calls"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("features", [(), None], ids=["plain", "negotiated"])
def test_async_timed_out_calls_leave_nothing(features: Any) -> None:
    opts = {} if features is None else {"features": features}

    async def main() -> int:
        async with AsyncRPC(url, **opts) as rpc:
            slow = rpc.slow.with_options(timeout=0.001)

            async def many(n: int) -> None:
                for _ in range(n):
                    with pytest.raises(DeadlineExceeded):
                        await slow(0.05)

            await many(200)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                await many(2000)
                await asyncio.sleep(0.2)  # late replies of the plain calls arrive
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            assert await rpc.echo(1) == 1
            return _kept(after.compare_to(before, "filename"))

    with serving(make_server()) as url:
        growth = arun(main(), 50)
    assert growth < 100_000, f"{growth} bytes kept after 2,000 timed-out calls"
