"""A call runs in its own task on asyncio's loop and on uvloop alike: current task, context
variables, `current_call()`, timeouts, cancellation by the client and deadlines.

The server starts a call's task eagerly (its first step runs inside the read that brought
the request); on Python 3.11 that is emulated (`pymprpc.server.eager`), and the way it is
emulated differs by loop internals, so each behaviour a handler sees is checked on both.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pymprpc import Server, current_call
from pymprpc.errors import DeadlineExceeded
from pymprpc.testing import client_for

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop == "asyncio":
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    else:
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (test group)")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), 20))


class Seen:
    """What the handlers saw, and events to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finally_ran = asyncio.Event()


def make_server(seen: Seen) -> Server:
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def whoami(suspend: bool) -> dict[str, Any]:
        # A call answered in its first step (the fast lane) and one that suspends first.
        before = VAR.get()
        VAR.set("set by this call")
        task = asyncio.current_task()
        seen.tasks.append(task)
        if suspend:
            await asyncio.sleep(0)
        return {
            "var_before": before,
            "var_after": VAR.get(),
            "same_task": asyncio.current_task() is task,
            "is_task": isinstance(task, asyncio.Task),
            "method": current_call().method,
        }

    @server.register_function()
    async def times_out() -> str:
        try:
            async with asyncio.timeout(0.01):  # from the first line of the handler
                await asyncio.Event().wait()
        except TimeoutError:
            return "timed out"
        return "not timed out"

    @server.register_function()
    async def wait_forever() -> None:
        seen.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.cancelled.set()
            raise
        finally:
            seen.finally_ran.set()

    return server


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_call_runs_in_its_own_task_with_its_own_context(loop: str) -> None:
    async def main() -> None:
        seen = Seen()
        server = make_server(seen)
        async with client_for(server) as rpc:
            for suspend in (False, True, False, True):
                got = await rpc.whoami(suspend)
                assert got == {
                    "var_before": "unset",  # nothing leaks from an earlier call
                    "var_after": "set by this call",
                    "same_task": True,
                    "is_task": True,
                    "method": "whoami",
                }
            # Calls in flight together, too: each in a task of its own.
            results = await asyncio.gather(*(rpc.whoami(i % 2 == 0) for i in range(10)))
            assert all(r["var_before"] == "unset" for r in results)
        assert VAR.get() == "unset"  # nor into the loop's (the reading callback's) context
        assert len(seen.tasks) == 14
        assert all(isinstance(t, asyncio.Task) and t.done() for t in seen.tasks)
        assert len({id(t) for t in seen.tasks}) == 14  # all alive here: distinct ids

    run_on(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_timeouts_cancellation_and_deadlines_reach_the_handler(loop: str) -> None:
    async def main() -> None:
        seen = Seen()
        server = make_server(seen)
        async with client_for(server) as rpc:
            assert await rpc.times_out() == "timed out"

            # The client cancels its call: the handler's task is cancelled where it waits.
            call = asyncio.ensure_future(rpc.wait_forever())
            await seen.started.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await seen.finally_ran.wait()
            assert seen.cancelled.is_set()

            # A deadline: the server cancels the handler and answers DeadlineExceeded.
            for event in (seen.started, seen.cancelled, seen.finally_ran):
                event.clear()
            with pytest.raises(DeadlineExceeded):
                await rpc.wait_forever.with_options(timeout=0.2)()
            await seen.finally_ran.wait()
            assert seen.started.is_set() and seen.cancelled.is_set()
            assert await rpc.whoami(False)  # the connection serves on
        assert server.running_call_count == 0

    run_on(loop, main)
