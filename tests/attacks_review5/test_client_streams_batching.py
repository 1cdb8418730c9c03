"""Streams' paused reading and the write batching, read from the per-client state."""

from __future__ import annotations

import asyncio

import pytest

from pymprpc import AsyncRPC
from pymprpc.errors import ResultLimitError

from .kit import Probe, run_on, serving, url

pytestmark = pytest.mark.timeout(40)


def test_two_full_streams_pause_then_resume_as_read(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), stream_buffer_size=4096) as rpc,
        ):
            a = await rpc.firehose(500)
            b = await rpc.firehose(500)
            await asyncio.sleep(0.1)
            assert rpc._state.reading_paused  # both full, nothing else: paused
            seen: dict[str, list[int]] = {"a": [], "b": []}
            failed: list[str] = []
            for _ in range(100):
                for name, s in (("a", a), ("b", b)):
                    if name in failed:
                        continue
                    try:
                        seen[name].append(int((await s.__anext__()).split(":")[0]))
                    except ResultLimitError:
                        failed.append(name)  # over-full while the other was not
            # Items in order, no gap; at least one stream went on through resumes.
            for name, got in seen.items():
                assert got == list(range(len(got))), name
            assert max(len(g) for g in seen.values()) == 100
            await a.aclose()
            await b.aclose()
            assert await rpc.add(1, 2) == 3
            assert not rpc._state.reading_paused

    run_on(loop, main)


def test_paused_reading_resumes_for_a_plain_call(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), stream_buffer_size=4096, timeout=3) as rpc,
        ):
            a = await rpc.firehose(500)
            await asyncio.sleep(0.1)
            assert rpc._state.reading_paused
            # A plain call now waits: reading goes on; the full stream then overflows
            # or the call is answered (both allowed), never a hang.
            assert await rpc.add(5, 5) == 10
            try:
                async for _ in a:
                    pass
            except ResultLimitError:
                pass
            assert await rpc.add(1, 1) == 2

    run_on(loop, main)


def test_overfull_stream_with_a_call_in_flight_fails_with_result_limit(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), stream_buffer_size=4096) as rpc,
        ):
            slow = asyncio.ensure_future(rpc.sleep(0.5))
            a = await rpc.firehose(500)
            await asyncio.sleep(0.2)
            with pytest.raises(ResultLimitError):
                async for _ in a:
                    pass
            assert await slow == 0.5
            assert await rpc.add(1, 2) == 3

    run_on(loop, main)


def test_dropping_a_paused_stream_resumes(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), stream_buffer_size=2048) as rpc,
        ):
            a = await rpc.firehose(300)
            b = await rpc.firehose(300)
            await asyncio.sleep(0.1)
            assert rpc._state.reading_paused
            del a
            await asyncio.sleep(0.05)
            for i in range(50):
                assert (await b.__anext__()).startswith(f"{i}:")
            await b.aclose()
            assert await rpc.add(2, 2) == 4

    run_on(loop, main)


def test_mixed_calls_in_one_pass_keep_order_and_results(loop: str) -> None:
    async def main() -> None:
        probe = Probe()
        async with serving(probe) as server, AsyncRPC(url(server)) as rpc:
            futs = []
            for i in range(120):
                k = i % 6
                if k == 0:
                    futs.append(rpc.add(i, 1))
                elif k == 1:
                    futs.append(rpc.coro_add(i, 2))
                elif k == 2:
                    futs.append(rpc.notify("record", i))
                elif k == 3:
                    futs.append(rpc.call("record", i))
                elif k == 4:
                    futs.append(rpc.method("add").with_options(timeout=5)(i, 4))
                else:
                    futs.append(rpc.delay("record", i))
            got = await asyncio.gather(*futs)
            for i, g in enumerate(got):
                k = i % 6
                if k == 0:
                    assert g == i + 1
                elif k == 1:
                    assert g == i + 2
                elif k == 2:
                    assert g is None
                elif k == 3:
                    assert g == i
                elif k == 4:
                    assert g == i + 4
                else:
                    assert isinstance(g, str)
            await rpc.add(0, 0)
            await asyncio.sleep(0.05)
            recorded = [r for r in probe.records]
            assert recorded == [i for i in range(120) if i % 6 in (2, 3, 5)]
            assert not rpc._state.batching and rpc._state.outbox == []

    run_on(loop, main)


def test_batched_calls_with_streams_interleaved(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            streams = await asyncio.gather(*(rpc.count(i) for i in range(1, 30)))
            sums = await asyncio.gather(*(rpc.add(i, i) for i in range(100)))
            assert sums == [2 * i for i in range(100)]
            for n, s in enumerate(streams, start=1):
                assert [x async for x in s] == list(range(n))

    run_on(loop, main)


def test_batching_across_two_clients_does_not_mix(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server)) as a,
            AsyncRPC(url(server)) as b,
        ):
            fa = [a.add(i, 1000) for i in range(100)]
            fb = [b.add(i, 2000) for i in range(100)]
            mixed = [x for pair in zip(fa, fb, strict=True) for x in pair]
            got = await asyncio.gather(*mixed)
            assert got[0::2] == [i + 1000 for i in range(100)]
            assert got[1::2] == [i + 2000 for i in range(100)]
            assert a._state.outbox == [] and b._state.outbox == []

    run_on(loop, main)


def test_close_while_batching_then_reconnect(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server))
            await rpc.connect()
            futs = [asyncio.ensure_future(rpc.sleep(1)) for _ in range(40)]
            await asyncio.sleep(0)
            await rpc.close()
            res = await asyncio.gather(*futs, return_exceptions=True)
            assert all(isinstance(r, Exception) for r in res)
            await rpc.connect()
            got = await asyncio.gather(*(rpc.add(i, 1) for i in range(40)))
            assert got == [i + 1 for i in range(40)]
            assert not rpc._state.batching
            await rpc.close()

    run_on(loop, main)


def test_cancelled_callers_in_a_batch_leave_the_rest_intact(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server, AsyncRPC(url(server)) as rpc:
            futs = [asyncio.ensure_future(rpc.coro_add(i, 1)) for i in range(60)]
            await asyncio.sleep(0)
            for f in futs[::3]:
                f.cancel()
            res = await asyncio.gather(*futs, return_exceptions=True)
            for i, r in enumerate(res):
                if i % 3 == 0:
                    assert isinstance(r, (asyncio.CancelledError, int)), r
                else:
                    assert r == i + 1
            assert await rpc.add(1, 1) == 2

    run_on(loop, main)


def test_heartbeat_while_reading_is_paused_keeps_the_connection(loop: str) -> None:
    async def main() -> None:
        async with (
            serving(Probe()) as server,
            AsyncRPC(url(server), stream_buffer_size=2048, heart_beat=0.2) as rpc,
        ):
            a = await rpc.firehose(300)
            await asyncio.sleep(0.7)  # 3 heartbeats while paused
            assert rpc.connected and rpc._state.reading_paused
            for i in range(30):
                assert (await a.__anext__()).startswith(f"{i}:")
            await a.aclose()
            assert await rpc.add(1, 1) == 2

    run_on(loop, main)


def test_concurrent_first_calls_share_one_connect(loop: str) -> None:
    async def main() -> None:
        async with serving(Probe()) as server:
            rpc = AsyncRPC(url(server), timeout=2)
            await rpc.connect()
            await rpc.close()
            # After close() the next calls need connect(): they fail alike, nothing hangs.
            res = await asyncio.gather(*(rpc.add(i, 1) for i in range(10)), return_exceptions=True)
            assert all(isinstance(r, Exception) for r in res) or res == [i + 1 for i in range(10)]
            await asyncio.gather(*(rpc.connect() for _ in range(10)))
            assert await asyncio.gather(*(rpc.add(i, 1) for i in range(10))) == [
                i + 1 for i in range(10)
            ]
            await rpc.close()

    run_on(loop, main)
