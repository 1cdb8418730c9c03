"""docs/protocol.md, feature `cancel`: after CANCEL the server sends nothing more for the
ID, and a new call may reuse it at once and is answered exactly as any call. Every kind of
old call (coroutine, pool, thread, stream, DEADLINE) x every kind of reusing call (short
and long), in one write or two, with and without an interceptor, on asyncio and uvloop;
then the old calls the contract is broken for (handlers that swallow the cancellation,
RETURN false and oneway calls), one focused scenario each."""

from __future__ import annotations

from typing import Any

import pytest
from attacks_server.fastlane_kit import Wire, run_on

from .cancel_kit import Seen, scenario, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_rounds(loop: str, general: bool, rounds: list[tuple[str, str, bool, str]]) -> list[Any]:
    async def main() -> list[Any]:
        seen = Seen()
        bad: list[Any] = []
        async with serving(seen, general) as server:
            w = await Wire.open(server.address[1])
            for n, (old, new, long, how) in enumerate(rounds):
                wrong = await scenario(server, w, old, new, long, how, n)
                if wrong is not None:
                    bad.append(wrong)
            await w.close()
        return bad

    return list(run_on(loop, main, timeout=100))


ALL_NEW = [
    (new, long, how)
    for new in ("c", "p", "t", "s")
    for long in (False, True)
    for how in ("one-write", "two-writes")
    if how == "one-write" or not long  # time budget: two writes with short reusers only
]


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("old", ["c", "p", "t", "s", "c_deadline", "p_deadline", "s_deadline"])
def test_reused_id_gets_only_the_new_calls_reply(loop: str, general: bool, old: str) -> None:
    bad = run_rounds(loop, general, [(old, *x) for x in ALL_NEW])
    assert not bad, bad


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize(
    "old", ["c_swallow", "c_swallow_raise", "c_swallow_slow", "s_swallow", "s_swallow_raise"]
)
def test_reused_id_not_answered_by_a_handler_that_outlives_its_cancel(
    loop: str, general: bool, old: str
) -> None:
    bad = run_rounds(loop, general, [(old, "c", True, "one-write")])
    assert not bad, bad


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("old", ["c_retfalse", "p_retfalse", "c_oneway", "p_oneway", "t_oneway"])
def test_reused_id_after_cancel_of_a_return_false_or_oneway_call(
    loop: str, general: bool, old: str
) -> None:
    bad = run_rounds(loop, general, [(old, "c", True, "one-write")])
    assert not bad, bad


@pytest.mark.parametrize("old", ["c_retfalse", "p_oneway", "c_swallow", "s_swallow"])
def test_reused_id_by_a_call_answered_at_once_after_the_broken_kinds(loop: str, old: str) -> None:
    """The same old calls, reused by a coroutine that answers in its first step."""
    bad = run_rounds(loop, False, [(old, "c", False, "one-write")])
    assert not bad, bad


@pytest.mark.parametrize("new", ["p", "t"])
@pytest.mark.parametrize("old", ["c_retfalse", "p_oneway", "c_swallow", "s_swallow"])
def test_reused_id_by_a_short_pool_or_thread_call_after_the_broken_kinds(
    loop: str, old: str, new: str
) -> None:
    bad = run_rounds(loop, False, [(old, new, False, "one-write")])
    assert not bad, bad
