"""ResultSetter: a future completed so that the task awaiting it goes on at once, on
asyncio's loop and on uvloop's, as the loop itself would have run that task's wake-up."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pymprpc.server.eager import ResultSetter

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")

new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (test group)")
        monkeypatch.setattr(sys.modules[__name__], "new_loop", uvloop.new_event_loop)
    return str(request.param)


def run(main: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]]) -> None:
    loop = new_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(loop), 10))
    finally:
        loop.close()


def later(loop: asyncio.AbstractEventLoop, func: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run `func` from a plain loop callback (as a reader callback runs: no current task)
    and give what it returned."""
    done: asyncio.Future[Any] = loop.create_future()

    def step() -> None:
        try:
            done.set_result(func())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            done.set_exception(exc)

    loop.call_soon(step)
    return done


def test_the_awaiting_task_goes_on_before_set_result_now_returns() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[int] = loop.create_future()
        seen: list[Any] = []

        async def waiter() -> int:
            VAR.set("the task's")
            value = await future
            seen.append((value, asyncio.current_task() is task, VAR.get()))
            return value * 2

        task = loop.create_task(waiter())
        await asyncio.sleep(0)  # the task now waits on the future

        def complete() -> list[Any]:
            setter.set_result_now(future, 21)
            return list(seen)

        assert await later(loop, complete) == [(21, True, "the task's")]
        assert await task == 42
        assert "call_soon" not in vars(loop)  # the catcher is gone

    run(main)


def test_a_future_with_several_callbacks_has_them_scheduled_in_order() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[str] = loop.create_future()
        order: list[str] = []
        future.add_done_callback(lambda f: order.append("first " + f.result()))
        future.add_done_callback(lambda f: order.append("second " + f.result()))

        def complete() -> list[str]:
            setter.set_result_now(future, "x")
            return list(order)

        assert await later(loop, complete) == []  # not run inline: more than one
        await asyncio.sleep(0)
        assert order == ["first x", "second x"]
        assert "call_soon" not in vars(loop)

    run(main)


def test_a_future_nobody_waits_for_is_just_completed() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[None] = loop.create_future()
        await later(loop, lambda: setter.set_result_now(future, None))
        assert future.done() and future.result() is None
        # The setter is reusable: nothing was left behind by the first future.
        second: asyncio.Future[int] = loop.create_future()
        got: list[int] = []
        second.add_done_callback(lambda f: got.append(f.result()))
        await later(loop, lambda: setter.set_result_now(second, 5))
        assert got == [5]

    run(main)


def test_a_done_future_raises_as_set_result_does_and_the_loop_is_restored() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[int] = loop.create_future()
        future.cancel()
        with pytest.raises(asyncio.InvalidStateError):
            await later(loop, lambda: setter.set_result_now(future, 1))
        assert "call_soon" not in vars(loop)
        # The loop still schedules as usual.
        assert await later(loop, lambda: "ok") == "ok"

    run(main)


def test_an_error_in_the_callback_goes_to_the_loops_exception_handler() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        setter = ResultSetter(loop)
        future: asyncio.Future[int] = loop.create_future()

        def broken(_: asyncio.Future[int]) -> None:
            raise ValueError("in the callback")

        future.add_done_callback(broken)
        await later(loop, lambda: setter.set_result_now(future, 1))
        assert len(reported) == 1
        assert isinstance(reported[0]["exception"], ValueError)
        assert "Exception in callback" in reported[0]["message"]

    run(main)


def test_keyboard_interrupt_in_the_callback_propagates() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[int] = loop.create_future()

        def interrupted(_: asyncio.Future[int]) -> None:
            raise KeyboardInterrupt

        future.add_done_callback(interrupted)
        with pytest.raises(KeyboardInterrupt):
            await later(loop, lambda: setter.set_result_now(future, 1))

    run(main)


def test_a_loop_whose_call_soon_someone_shadowed_keeps_it() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        real = loop.call_soon
        asked: list[Any] = []

        def shadow(callback: Any, *args: Any, context: Any = None) -> Any:
            asked.append(callback)
            return real(callback, *args, context=context)

        vars(loop)["call_soon"] = shadow
        try:
            future: asyncio.Future[int] = loop.create_future()
            got: list[int] = []
            future.add_done_callback(lambda f: got.append(f.result()))
            await later(loop, lambda: setter.set_result_now(future, 3))
            assert len(asked) >= 1 and vars(loop)["call_soon"] is shadow
            await asyncio.sleep(0)
            assert got == [3]
        finally:
            del vars(loop)["call_soon"]

    run(main)


def test_a_task_cancelled_after_its_wake_up_ran_is_cancelled_where_it_goes_on() -> None:
    """The wake-up ran inline: the task is running its next step by the time
    set_result_now returns, and a cancel() after that reaches its next await."""

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(loop)
        future: asyncio.Future[int] = loop.create_future()
        gate: asyncio.Future[None] = loop.create_future()
        steps: list[str] = []

        async def waiter() -> None:
            await future
            steps.append("resumed")
            try:
                await gate
            except asyncio.CancelledError:
                steps.append("cancelled at the gate")
                raise

        task = loop.create_task(waiter())
        await asyncio.sleep(0)

        def complete() -> None:
            setter.set_result_now(future, 1)
            task.cancel()

        await later(loop, complete)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert steps == ["resumed", "cancelled at the gate"]

    run(main)


class _NoDict:
    """A loop-like object without an instance dict: the setter cannot shadow its
    call_soon and completes futures as usual."""

    __slots__ = ("inner",)

    def __init__(self, inner: asyncio.AbstractEventLoop) -> None:
        self.inner = inner

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        return self.inner.call_soon(callback, *args, context=context)


def test_a_loop_without_an_instance_dict_schedules_as_usual() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        setter = ResultSetter(_NoDict(loop))  # type: ignore[arg-type]
        future: asyncio.Future[int] = loop.create_future()
        got: list[int] = []
        future.add_done_callback(lambda f: got.append(f.result()))

        def complete() -> list[int]:
            setter.set_result_now(future, 9)
            return list(got)

        assert await later(loop, complete) == []  # scheduled by the loop, not run inline
        assert got == [9]

    run(main)
