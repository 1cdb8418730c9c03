"""start_task: a call's first step runs at once, inside a real task (3.11 emulates 3.12).

Every test runs with each implementation this Python has: the emulations (on 3.11, 3.12 and
3.13 alike) and, from 3.12, the built-in `eager_start`; each on asyncio's loop and on
uvloop's (whose ready queue has no Python view, and whose tasks are made differently)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from pymprpc.server import eager
from pymprpc.server.eager import (
    start_task,
    start_task_builtin,
    start_task_caught,
    start_task_emulated,
)

T = TypeVar("T")
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


IMPLEMENTATIONS = {
    "caught": start_task_caught,
    "emulated": start_task_emulated,
}
if sys.version_info >= (3, 12):
    IMPLEMENTATIONS["builtin"] = start_task_builtin

new_loop = asyncio.new_event_loop  # the loop run() makes: set per test by the fixture below


@pytest.fixture(autouse=True, params=sorted(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.modules[__name__], "start_task", IMPLEMENTATIONS[request.param])
    return str(request.param)


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (test group)")
        monkeypatch.setattr(sys.modules[__name__], "new_loop", uvloop.new_event_loop)
    return str(request.param)


def test_the_emulation_has_the_private_task_switch_it_needs() -> None:
    # If a Python release drops it, the server still works (see the next test), without
    # the eager first step: this test says so instead of letting it go unnoticed.
    assert eager.private_task_switch() is not None


def test_without_the_private_api_the_emulation_falls_back_to_a_plain_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eager, "_SWITCH", None)
    ran: list[str] = []

    async def handler() -> str:
        ran.append("ran")
        return "ok"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        started: asyncio.Future[tuple[Any, list[str]]] = loop.create_future()
        loop.call_soon(
            lambda: started.set_result((start_task_emulated(loop, handler()), list(ran)))
        )
        task, ran_at_start = await started
        assert task is not None and ran_at_start == []  # not eager, but it runs
        assert await task == "ok"

    run(main)


def run(main: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, T]]) -> T:
    loop = new_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(loop), 5))
    finally:
        loop.close()


async def from_callback(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any] | None:
    """start_task as the server calls it: from a transport callback, outside any task."""
    started: asyncio.Future[asyncio.Task[Any] | None] = loop.create_future()
    loop.call_soon(lambda: started.set_result(start_task(loop, coro)))
    return await started


def test_a_call_that_does_not_suspend_finishes_within_start_task() -> None:
    seen: list[Any] = []

    async def handler() -> None:
        seen.append(asyncio.current_task())

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        assert await from_callback(loop, handler()) is None
        assert len(seen) == 1 and isinstance(seen[0], asyncio.Task)

    run(main)


def test_a_suspending_call_goes_on_in_the_same_task() -> None:
    seen: list[Any] = []

    async def handler() -> str:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0.01)
        seen.append(asyncio.current_task())
        return "done"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None and seen == [task]  # first step ran before the return
        assert await task == "done"
        assert seen == [task, task]

    run(main)


def test_a_waiting_call_shows_where_it_waits() -> None:
    async def waiting_handler() -> None:
        await asyncio.sleep(10)

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, waiting_handler())
        assert task is not None
        await asyncio.sleep(0)
        assert "waiting_handler() running at" in repr(task)
        [frame] = task.get_stack()
        assert frame.f_code.co_name == "waiting_handler"
        task.cancel()

    run(main)


def test_timeout_and_task_group_work_from_the_first_line() -> None:
    async def handler() -> list[str]:
        out = []
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        except TimeoutError:
            out.append("timed out")
        async with asyncio.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, "child"))
        out.append(child.result())
        return out

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None
        assert await task == ["timed out", "child"]

    run(main)


def test_cancelled_before_the_tasks_first_step_cancels_what_it_waits_on() -> None:
    events: list[str] = []
    waited: list[asyncio.Future[None]] = []

    async def handler(loop: asyncio.AbstractEventLoop) -> None:
        future: asyncio.Future[None] = loop.create_future()
        waited.append(future)
        try:
            await future
        except asyncio.CancelledError:
            events.append("cancelled where it waits")
            raise
        finally:
            events.append("finally")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        started: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()

        def start_then_cancel() -> None:
            task = start_task(loop, handler(loop))
            assert task is not None
            task.cancel()  # in the same callback: the task has not stepped yet
            started.set_result(task)

        loop.call_soon(start_then_cancel)
        task = await started
        assert task is not None
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert events == ["cancelled where it waits", "finally"]
        assert waited[0].cancelled()

    run(main)


def test_cancelled_after_it_suspended() -> None:
    events: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            events.append("finally")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None
        await asyncio.sleep(0)  # one pass: the task's own first step has taken over
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert events == ["finally"]

    run(main)


def test_context_variables_stay_with_the_call() -> None:
    async def handler() -> str:
        VAR.set("in call")
        await asyncio.sleep(0)
        return VAR.get()

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None
        assert await task == "in call"
        assert VAR.get() == "unset"

    run(main)


def test_an_error_after_suspending_is_the_tasks_exception() -> None:
    async def handler() -> None:
        await asyncio.sleep(0)
        raise ValueError("late")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None
        with pytest.raises(ValueError, match="late"):
            await task

    run(main)


def test_an_error_in_the_first_step_is_reported_like_any_unretrieved_task_error() -> None:
    reported: list[BaseException] = []

    async def handler() -> None:
        raise ValueError("early")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(lambda _, ctx: reported.append(ctx["exception"]))
        assert await from_callback(loop, handler()) is None
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()

    run(main)
    assert [str(e) for e in reported] == ["early"]


def test_keyboard_interrupt_in_the_first_step_propagates(
    implementation: str, loop_kind: str
) -> None:
    if implementation == "caught":
        # asyncio's C task step lets KeyboardInterrupt out with 3.11's recursion counter
        # off (a CPython bug plain tasks share: later compiles fail with "AST constructor
        # recursion depth mismatch"), so that case runs in a process of its own.
        subprocess_run_keyboard_interrupt_case(f"start_task_{implementation}", loop_kind)
        return

    async def handler() -> None:
        raise KeyboardInterrupt

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        outcome: asyncio.Future[str] = loop.create_future()

        def start() -> None:
            try:
                start_task(loop, handler())
            except KeyboardInterrupt:
                outcome.set_result("raised at once")

        loop.call_soon(start)
        assert await outcome == "raised at once"
        for _ in range(3):
            await asyncio.sleep(0)  # and not once more from the task's own step

    run(main)


def test_closing_a_pending_call_runs_its_finally() -> None:
    events: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            events.append("finally")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = await from_callback(loop, handler())
        assert task is not None
        task.get_coro().close()
        assert events == ["finally"]
        task.cancel()

    run(main)


def test_an_application_task_factory_is_respected() -> None:
    made: list[Any] = []
    ran: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def handler() -> None:
        ran.append("ran")

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        loop.set_task_factory(factory)
        started: asyncio.Future[tuple[Any, list[str]]] = loop.create_future()
        loop.call_soon(lambda: started.set_result((start_task(loop, handler()), list(ran))))
        task, ran_at_start = await started
        assert task is not None and made == [task]
        assert ran_at_start == []  # not eager: the factory decides how tasks start
        await task
        assert ran == ["ran"]

    run(main)


def test_started_from_inside_a_task_it_still_runs_to_completion() -> None:
    async def handler() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = start_task(loop, handler())
        assert task is not None
        assert await task == "ok"

    run(main)


KEYBOARD_INTERRUPT_CASE = """
import asyncio, sys
from pymprpc.server import eager

start = getattr(eager, sys.argv[1])

async def handler():
    raise KeyboardInterrupt

async def main():
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    # A second step would fail in the loop ("already done"); the task's own unretrieved
    # KeyboardInterrupt may be logged too, when it is collected: both go to stderr.
    loop.set_exception_handler(
        lambda _, ctx: print("loop error:", ctx["message"], ctx.get("exception"), file=sys.stderr)
    )

    def begin():
        try:
            start(loop, handler())
        except KeyboardInterrupt:
            outcome.set_result("raised at once")

    loop.call_soon(begin)
    print(await outcome)
    for _ in range(3):
        await asyncio.sleep(0)  # and not once more from the task's own step
    print("no second step")

if sys.argv[2] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""


def subprocess_run_keyboard_interrupt_case(function: str, loop_kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KEYBOARD_INTERRUPT_CASE, function, loop_kind],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["raised at once", "no second step"], done.stdout
    assert "already done" not in done.stderr + done.stdout  # the task's step ran only once


# -- start_task_caught: what it relies on, and what it does when that does not hold --------


def test_the_default_on_this_python() -> None:
    expected = start_task_builtin if sys.version_info >= (3, 12) else start_task_caught
    assert eager.start_task is expected


def test_a_new_task_asks_its_loop_once_to_schedule_its_own_step() -> None:
    """What start_task_caught relies on (the C task and the Python one, on both loops):
    making a task looks up `call_soon` on the loop object and calls it once, with a
    callback bound to the task and the task's context."""
    calls: list[tuple[Any, tuple[Any, ...], Any]] = []

    async def handler() -> None:
        pass

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        for task_type in {asyncio.Task, asyncio.tasks._PyTask}:  # type: ignore[attr-defined]
            calls.clear()
            loop.__dict__["call_soon"] = lambda cb, *args, context=None: calls.append(
                (cb, args, context)
            )
            try:
                task = task_type(handler(), loop=loop)
            finally:
                del loop.__dict__["call_soon"]
            [(callback, args, context)] = calls
            assert callback.__self__ is task and args == ()
            assert isinstance(context, contextvars.Context)
            loop.call_soon(callback, *args, context=context)  # as the loop would have
            await task

    run(main)


def test_nothing_is_left_scheduled_after_a_call_that_finished_at_once() -> None:
    """A step run twice fails in the loop ("already done"): nothing of the kind, and the
    loop's call_soon is its own again."""
    errors: list[str] = []
    ran: list[int] = []

    async def handler(i: int) -> None:
        ran.append(i)

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(lambda _, ctx: errors.append(ctx["message"]))
        for i in range(5):
            assert await from_callback(loop, handler(i)) is None
        for _ in range(3):
            await asyncio.sleep(0)
        assert "call_soon" not in getattr(loop, "__dict__", {})

    run(main)
    assert ran == [0, 1, 2, 3, 4] and errors == []


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("with_args", [True, False])
def test_a_callback_scheduled_while_the_task_is_made_is_passed_on(
    monkeypatch: pytest.MonkeyPatch, when: str, with_args: bool
) -> None:
    """If making a task schedules anything besides its step (before or after it, with
    arguments or without), start_task_caught schedules all of it as asked, in order: the
    task then starts on the next pass, like a plain task."""
    if start_task is not start_task_caught:
        pytest.skip("start_task_caught only")
    events: list[str] = []

    def other(loop: asyncio.AbstractEventLoop) -> None:
        if with_args:
            loop.call_soon(events.append, "other callback")
        else:
            loop.call_soon(lambda: events.append("other callback"))

    class ChattyTask(asyncio.Task):  # type: ignore[type-arg]
        def __init__(self, coro: Any, *, loop: asyncio.AbstractEventLoop, **kw: Any) -> None:
            if when == "before":
                other(loop)
            super().__init__(coro, loop=loop, **kw)
            if when == "after":
                other(loop)

    async def handler() -> str:
        events.append("step")
        return "ok"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        monkeypatch.setattr(eager.asyncio, "Task", ChattyTask)
        task = await from_callback(loop, handler())
        monkeypatch.undo()
        assert task is not None and await task == "ok"
        order = ["other callback", "step"]
        assert events == (order if when == "before" else order[::-1])
        caught = eager._catchers.catcher  # nothing left for the next task
        assert caught.callback is None and caught.context is None and caught.more == []

    run(main)


def test_tasks_started_on_loops_in_several_threads_each_run_their_own_step() -> None:
    """The catcher is the thread's: servers on loops in other threads, starting tasks at
    the same time, each run their own call's step, in its own context."""
    if start_task is not start_task_caught:
        pytest.skip("start_task_caught only")
    calls = 2_000
    errors: list[str] = []

    async def handler(n: int) -> int:
        if VAR.get() != f"call {n}":
            errors.append(f"call {n} ran in the context of {VAR.get()}")
        return n

    def serve(thread: int) -> None:
        async def main(loop: asyncio.AbstractEventLoop) -> None:
            done: asyncio.Future[None] = loop.create_future()

            def start_all() -> None:
                for n in range(calls):
                    context = contextvars.copy_context()
                    context.run(VAR.set, f"call {thread * calls + n}")
                    if start_task_caught(loop, handler(thread * calls + n), context) is not None:
                        errors.append(f"call {n} did not finish in its first step")
                done.set_result(None)

            loop.call_soon(start_all)
            await done

        run(main)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: within a task's making too
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_a_loop_whose_call_soon_someone_shadowed_keeps_it() -> None:
    """Another shadow of the loop's call_soon (a test's spy, say) is left in place: the
    call starts the emulated way, through it."""
    seen: list[Any] = []

    async def handler() -> str:
        return "ok"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        real = loop.call_soon

        def spy(callback: Any, *args: Any, context: Any = None) -> Any:
            seen.append(callback)
            return real(callback, *args, context=context)

        loop.__dict__["call_soon"] = spy
        try:
            started: asyncio.Future[Any] = loop.create_future()
            real(lambda: started.set_result(start_task_caught(loop, handler())))
            assert await started is None  # finished in its first step all the same
            assert loop.__dict__["call_soon"] is spy
            assert seen  # the task's step went through the spy
        finally:
            del loop.__dict__["call_soon"]

    run(main)


def test_the_loop_is_restored_when_making_the_task_fails() -> None:
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        started: asyncio.Future[None] = loop.create_future()

        def begin() -> None:
            try:
                start_task_caught(loop, "not a coroutine")  # type: ignore[arg-type]
            except TypeError as exc:
                started.set_result(None) if "coroutine" in str(exc) else started.set_exception(exc)

        loop.call_soon(begin)
        await started
        assert "call_soon" not in getattr(loop, "__dict__", {})

    run(main)


def test_the_running_task_map_start_task_caught_reads_agrees_with_current_task() -> None:
    # If a Python release drops or stops filling it, start_task_caught falls back to
    # asyncio.current_task() (next test): this test says so instead of letting it go.
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        assert eager._CURRENT_TASKS is not None
        assert eager._CURRENT_TASKS.get(loop) is asyncio.current_task()

    run(main)


def test_without_the_running_task_map_a_nested_start_is_still_a_plain_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eager, "_CURRENT_TASKS", None)

    async def handler() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        task = start_task_caught(loop, handler())  # from inside a task: not eager
        assert task is not None
        assert await task == "ok"
        assert await from_callback(loop, handler()) is not None  # eager from a callback

    run(main)
