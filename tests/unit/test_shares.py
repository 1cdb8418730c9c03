"""Each connection runs at most its share of the thread pool; the rest wait in order."""

from __future__ import annotations

import asyncio

import pytest

from pymprpc.server.shares import ThreadShares, share_of


@pytest.mark.parametrize(("workers", "share"), [(1, 1), (2, 1), (4, 3), (32, 31)])
def test_a_connection_leaves_a_worker_for_the_others(workers: int, share: int) -> None:
    assert share_of(workers) == share


def test_an_owner_over_its_share_waits_others_do_not() -> None:
    async def main() -> None:
        shares = ThreadShares(2)
        a, b = object(), object()
        await shares.acquire(a)
        await shares.acquire(a)
        third = asyncio.ensure_future(shares.acquire(a))
        await asyncio.sleep(0)
        assert not third.done()
        await asyncio.wait_for(shares.acquire(b), 1)  # another connection is not held up
        shares.release(a)
        await asyncio.wait_for(third, 1)  # handed the freed slot
        assert shares.running(a) == 2
        for _ in range(2):
            shares.release(a)
        shares.release(b)
        assert shares.running(a) == shares.running(b) == 0
        assert not shares._running and not shares._waiting  # nothing kept per owner

    asyncio.run(main())


def test_waiting_calls_start_in_order_and_a_cancelled_one_gives_up_its_turn() -> None:
    async def main() -> None:
        shares = ThreadShares(1)
        owner = object()
        await shares.acquire(owner)
        started: list[int] = []

        async def call(n: int) -> None:
            await shares.acquire(owner)
            started.append(n)

        waiting = [asyncio.ensure_future(call(n)) for n in range(3)]
        await asyncio.sleep(0)
        waiting[1].cancel()
        for _ in range(3):
            shares.release(owner)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert started == [0, 2]
        assert waiting[1].cancelled()
        assert shares.running(owner) == 0
        assert not shares._waiting

    asyncio.run(main())


def test_a_slot_granted_as_its_waiter_is_cancelled_passes_on() -> None:
    async def main() -> None:
        shares = ThreadShares(1)
        owner = object()
        await shares.acquire(owner)
        first = asyncio.ensure_future(shares.acquire(owner))
        second = asyncio.ensure_future(shares.acquire(owner))
        await asyncio.sleep(0)
        shares.release(owner)  # grants `first`...
        first.cancel()  # ...which is cancelled before it resumes
        await asyncio.sleep(0)
        await asyncio.wait_for(second, 1)
        assert first.cancelled()
        assert shares.running(owner) == 1

    asyncio.run(main())
