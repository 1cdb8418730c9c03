"""docs/protocol.md (cancel): the server cancels the call and sends nothing more for its
ID, which is retired: a new call may use it at once and is answered as any call. The
cancelled call's task ends a loop pass later; its CancelledError must not be answered
to the new call that took its ID (found by the independent review of the pool's fast
lane, on the pool and on coroutines alike)."""

from __future__ import annotations

from typing import Any

import pytest

from .fastlane_kit import State, Wire, call, cancel, code, mid, passthrough, result, run_on, serving

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("how", ["one-write", "once-running"])
def test_a_new_call_taking_a_cancelled_calls_id_gets_its_own_reply(
    loop: str, general: bool, how: str
) -> None:
    async def main() -> None:
        state = State()
        interceptors: tuple[Any, ...] = (passthrough,) if general else ()
        async with serving(state, interceptors=interceptors) as (server, port):
            w = await Wire.open(port)
            # The new call suspends (it waits for the test), as a pool call does: it is
            # still in flight when the cancelled task ends.
            if how == "one-write":
                w.write([call("x", "hold", "x"), cancel("x"), call("x", "hold", "x2")])
            else:
                w.write([call("x", "hold", "x")])
                await state.started_event("x").wait()
                w.write([cancel("x"), call("x", "hold", "x2")])
            await state.started_event("x2").wait()
            await state.wait_until(lambda: "x" in state.cancelled)
            state.event("x2").set()
            w.write([call("y", "echo", 2)])
            got = await w.recv_n(2)
            got += await w.sync_point()  # and nothing else arrives
            assert sorted((mid(m), code(m), result(m)) for m in got) == [
                ("x", 200, "x2"),
                ("y", 200, 2),
            ], got
            await state.wait_until(lambda: "x" in state.cancelled)
            assert server.running_call_count == 0
            await w.close()

    run_on(loop, main)
