from __future__ import annotations

import asyncio

import pytest

from pymprpc.errors import RequestError
from pymprpc.server.kept_results import KeptResults


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bounded_by_count_oldest_finished_first() -> None:
    async def main() -> None:
        kept = KeptResults(max_count=2, ttl=100, clock=Clock())
        kept.open("a").set_value(1, 0)
        kept.open("b")
        kept.open("c").set_value(3, 0)
        assert len(kept) == 2
        with pytest.raises(RequestError, match="unknown, already fetched, or expired"):
            await kept.fetch("a")
        assert await kept.fetch("c") == 3

    asyncio.run(main())


def test_expire_by_age_and_fetch_once() -> None:
    async def main() -> None:
        clock = Clock()
        kept = KeptResults(max_count=10, ttl=5, clock=clock)
        kept.open("a").set_value(1, clock())
        kept.open("b").set_value(2, clock())
        assert await kept.fetch("a") == 1
        with pytest.raises(RequestError):
            await kept.fetch("a")
        clock.now = 6
        with pytest.raises(RequestError):
            await kept.fetch("b")

    asyncio.run(main())


def test_fetch_waits_for_running_outcome() -> None:
    async def main() -> None:
        kept = KeptResults()
        outcome = kept.open("a")
        waiter = asyncio.create_task(kept.fetch("a"))
        await asyncio.sleep(0)
        assert not waiter.done()
        outcome.set_items([1, 2], 0)
        stream = await waiter
        assert [i async for i in stream] == [1, 2]

    asyncio.run(asyncio.wait_for(main(), 5))
