from __future__ import annotations

import asyncio
import contextlib
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymprpc.errors import RequestError, ResultLimitError
from pymprpc.server.kept_results import KeptOutcome, KeptResults


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bounded_by_count_oldest_finished_first() -> None:
    async def main() -> None:
        kept = KeptResults(max_count=2, ttl=100, clock=Clock())
        kept.open("u", "a").set_value(1)
        kept.open("u", "b")
        kept.open("u", "c").set_value(3)
        assert len(kept) == 2
        with pytest.raises(RequestError, match="unknown, already fetched, or expired"):
            await kept.fetch("u", "a")
        assert await kept.fetch("u", "c") == 3

    asyncio.run(main())


def test_a_full_scope_of_running_calls_refuses_a_new_one_instead_of_dropping_one() -> None:
    async def main() -> None:
        kept = KeptResults(max_count=2)
        running = kept.open("u", "a"), kept.open("u", "b")
        with pytest.raises(ResultLimitError, match="kept_results"):
            kept.open("u", "c")
        kept.open("other", "c")  # another account has its own quota
        running[0].set_value("A")
        assert await kept.fetch("u", "a") == "A"

    asyncio.run(main())


def test_expire_by_age_and_fetch_once() -> None:
    async def main() -> None:
        clock = Clock()
        kept = KeptResults(max_count=10, ttl=5, clock=clock)
        kept.open("u", "a").set_value(1)
        kept.open("u", "b").set_value(2)
        assert await kept.fetch("u", "a") == 1
        with pytest.raises(RequestError):
            await kept.fetch("u", "a")
        clock.now = 6
        with pytest.raises(RequestError):
            await kept.fetch("u", "b")
        assert len(kept) == 0

    asyncio.run(main())


def test_fetch_waits_for_running_outcome() -> None:
    async def main() -> None:
        kept = KeptResults()
        outcome = kept.open("u", "a")
        waiter = asyncio.create_task(kept.fetch("u", "a"))
        await asyncio.sleep(0)
        assert not waiter.done()
        outcome.add_item(1)
        outcome.add_item({"two": [2]})
        outcome.end_stream()
        stream = await waiter
        assert [i async for i in stream] == [1, {"two": [2]}]

    asyncio.run(asyncio.wait_for(main(), 5))


def test_scopes_cannot_see_claim_or_evict_each_other() -> None:
    async def main() -> None:
        kept = KeptResults(max_count=2)
        kept.open("admin", "x").set_value("admin's secret")
        with pytest.raises(RequestError, match="no kept result"):
            await kept.fetch("bob", "x")
        kept.open("bob", "y")  # bob may use any ID, admin's included: his own table
        kept.open("bob", "x").set_value("bob's")
        for i in range(10):  # bob floods: only his own results go
            kept.open("bob", f"flood{i}").set_value(i)
        assert await kept.fetch("admin", "x") == "admin's secret"

    asyncio.run(main())


def test_bounded_by_bytes_per_scope() -> None:
    async def main() -> None:
        kept = KeptResults(max_count=1000, max_bytes=10_000)
        kept.open("u", "a").set_value(b"a" * 6000)
        kept.open("u", "b").set_value(b"b" * 6000)  # the oldest finished one makes room
        assert len(kept) == 1 and kept.bytes_held() < 10_000
        with pytest.raises(RequestError):
            await kept.fetch("u", "a")
        assert await kept.fetch("u", "b") == b"b" * 6000
        assert kept.bytes_held() == 0
        # A result that cannot fit at all is kept as an error, not as bytes.
        kept.open("u", "big").set_value(b"x" * 20_000)
        with pytest.raises(ResultLimitError, match="kept_results_bytes"):
            await kept.fetch("u", "big")

    asyncio.run(main())


def test_a_kept_stream_holds_a_bounded_number_of_bytes() -> None:
    kept = KeptResults(max_bytes=100_000)
    outcome = kept.open("u", "s")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(ResultLimitError, match="kept stream"):
            for _ in range(1_000_000):
                outcome.add_item(None)  # one byte each: the count alone would not stop it
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept.bytes_held() <= 100_000
    assert held < 1_000_000, held  # bytes, not a Python object per item


def test_unencodable_result_is_kept_as_a_clear_error() -> None:
    async def main() -> None:
        kept = KeptResults()
        kept.open("u", "a").set_value({1, 2})
        with pytest.raises(
            ResultLimitError,
            match=r"result not delivered: cannot encode as MessagePack: MESSAGE\.RESULT is a set",
        ):
            await kept.fetch("u", "a")

    asyncio.run(main())


def test_a_dropped_scope_keeps_nothing_of_calls_still_running() -> None:
    async def main() -> None:
        kept = KeptResults()
        running = kept.open("conn", "a")
        kept.open("conn", "b").set_value(b"x" * 1000)
        kept.drop_scope("conn")
        running.set_value(b"y" * 1000)
        assert len(kept) == 0 and kept.bytes_held() == 0
        with pytest.raises(RequestError):
            await kept.fetch("conn", "a")

    asyncio.run(main())


OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "value", "item", "end", "error", "fetch", "drop", "tick"]),
        st.sampled_from(["alice", "bob", "conn"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.binary(max_size=300),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_quotas_hold_under_any_sequence_of_operations(
    ops: list[tuple[str, str, str, bytes]],
) -> None:
    async def main() -> None:
        clock = Clock()
        kept = KeptResults(max_count=3, ttl=5, clock=clock, max_bytes=1000)
        open_: dict[tuple[str, str], KeptOutcome] = {}
        for op, scope, id, data in ops:
            outcome = open_.get((scope, id))
            if op == "open":
                with contextlib.suppress(RequestError, ResultLimitError):
                    open_[(scope, id)] = kept.open(scope, id)
            elif outcome is not None and op == "value":
                outcome.set_value(data)
            elif outcome is not None and op == "item":
                try:
                    outcome.add_item(data)
                except ResultLimitError as exc:
                    outcome.set_error(exc)
            elif outcome is not None and op == "end":
                outcome.end_stream()
            elif outcome is not None and op == "error":
                outcome.set_error(ResultLimitError("x"))
            elif op == "fetch" and outcome is not None and outcome.done.is_set():
                with contextlib.suppress(RequestError, ResultLimitError):
                    await kept.fetch(scope, id)
            elif op == "drop":
                kept.drop_scope(scope)
            elif op == "tick":
                clock.now += 2
            for name, table in kept._scopes.items():
                assert len(table.entries) <= 3
                assert 0 <= table.bytes <= 1000
                assert table.bytes == sum(o.size for o in table.entries.values()), name
                assert table.entries  # empty scopes are forgotten
        kept.drop_scope("alice"), kept.drop_scope("bob"), kept.drop_scope("conn")
        assert kept.bytes_held() == 0 and len(kept) == 0 and not kept._expiry

    asyncio.run(main())


def test_outcomes_nobody_fetches_expire_on_a_timer() -> None:
    """Outcomes past their TTL go even when no client stores or fetches any more (review
    22: an account gone quiet held its kept bytes past the TTL until some client used
    kept results again); the timer rearms for the ones not yet due."""

    async def main() -> tuple[int, int]:
        kept = KeptResults(ttl=0.2)
        kept.open("quiet", "a").set_value(b"x" * 10_000)
        await asyncio.sleep(0.1)
        kept.open("quiet", "b").set_value(b"y" * 10_000)
        held = kept.bytes_held()
        await asyncio.sleep(1.0)  # both due long since; nothing used kept results
        after = kept.bytes_held()
        kept.close()
        return held, after

    held, after = asyncio.run(main())
    assert held > 20_000 and after == 0


def test_getresult_of_a_call_refused_for_a_full_table_says_it_never_ran() -> None:
    """`delay()` returns its ID before the 405 comes back: `getresult` then names the
    refusal (once), not "unknown ID". What is remembered is bounded: by count, by the
    ID's length, and a dropped scope takes its records along."""

    async def main() -> None:
        kept = KeptResults(max_count=1)
        kept.open("u", "a")
        with pytest.raises(ResultLimitError, match="kept_results"):
            kept.open("u", "b")
        with pytest.raises(ResultLimitError, match="'b' was refused when it arrived"):
            await kept.fetch("u", "b")
        with pytest.raises(RequestError, match="unknown"):  # said once
            await kept.fetch("u", "b")
        with pytest.raises(RequestError, match="unknown"):  # another scope's call
            await kept.fetch("v", "b")
        long_id = "x" * 257
        with pytest.raises(ResultLimitError):
            kept.open("u", long_id)
        with pytest.raises(RequestError, match="unknown"):
            await kept.fetch("u", long_id)
        for i in range(2000):
            with pytest.raises(ResultLimitError):
                kept.open("u", f"r{i}")
        assert len(kept._refused["u"]) == 1024
        with pytest.raises(RequestError, match="unknown"):
            await kept.fetch("u", "r0")  # the oldest went first
        with pytest.raises(ResultLimitError, match="refused"):
            await kept.fetch("u", "r1999")
        kept.drop_scope("u")
        assert not kept._refused
        # An ID refused, then accepted once the table had room, is that call's.
        wide = KeptResults(max_count=1)
        wide.open("w", "a")
        with pytest.raises(ResultLimitError):
            wide.open("w", "x")
        wide._scopes["w"].entries["a"].set_value(1)
        wide.open("w", "x").set_value(2)  # evicts the finished "a"
        assert await wide.fetch("w", "x") == 2
        with pytest.raises(RequestError, match="unknown"):
            await wide.fetch("w", "x")
        assert not wide._refused

    asyncio.run(main())
