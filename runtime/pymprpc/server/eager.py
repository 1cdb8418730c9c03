"""Start a call's task eagerly: its first step runs at once, inside the task.

A handler that returns without suspending (most small calls) then answers within the
read that brought its request, instead of one event-loop pass later. Python 3.12 has
this built in (`eager_start`); on 3.11 it is emulated below. Either way the call runs
inside a real `asyncio.Task`, so `asyncio.current_task()`, `asyncio.timeout()` and
`TaskGroup` work in a handler from its first line.

On 3.11, `start_task_caught` runs the new task's own first step at once (on asyncio's
loop and on uvloop alike); where it cannot (a loop without an instance `__dict__`, or
whose `call_soon` someone else shadows), `start_task_emulated` drives the coroutine's
first step inside the task through a wrapper. What they rely on beyond the public API:
asyncio's `_enter_task`/`_leave_task` and `_current_tasks` (read if present), and that
a new task asks `loop.call_soon` for its first step; `tests/unit/test_eager.py` checks
each on 3.11, 3.12 and 3.13, on both loops.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

TaskSwitch = tuple[
    Callable[[asyncio.AbstractEventLoop, "asyncio.Task[Any]"], None],
    Callable[[asyncio.AbstractEventLoop, "asyncio.Task[Any]"], None],
]


def private_task_switch() -> TaskSwitch | None:
    """asyncio's private `_enter_task` / `_leave_task` (what a task's step does to become
    the current task), or None if this Python does not have them.

    Used by `start_task_emulated` only.
    """
    try:
        from asyncio.tasks import _enter_task, _leave_task
    except ImportError:
        return None
    return _enter_task, _leave_task


_SWITCH = private_task_switch()
# asyncio's map of loops to their running task (what current_task reads), if it has one.
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    asyncio.tasks, "_current_tasks", None
)


def start_task_builtin(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context | None = None,
) -> asyncio.Task[T] | None:
    """Run `coro` as a task whose first step runs now; None if it already finished
    (Python 3.12+: `eager_start`). The task runs in `context` (None: a copy of the
    current one), as `asyncio.Task`'s own argument says."""
    if loop.get_task_factory() is not None:
        # The application chose how tasks are made; its factory may start them eagerly
        # too (asyncio.eager_task_factory): a task already done is not running.
        task = loop.create_task(coro, context=context)
        return None if task.done() else task
    task = asyncio.Task(coro, loop=loop, eager_start=True, context=context)  # type: ignore[call-arg,unused-ignore]
    return None if task.done() else task


def start_task_emulated(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context | None = None,
) -> asyncio.Task[T] | None:
    """Run `coro` as a task whose first step runs now; None if it already finished
    (emulates `eager_start` where Python lacks it). Without asyncio's private task switch
    it falls back to a plain task, whose first step runs one loop pass later."""
    switch = _SWITCH
    if (
        switch is None
        or loop.get_task_factory() is not None
        or asyncio.current_task(loop) is not None
    ):
        task = loop.create_task(coro, context=context)  # a factory chose / nested
        return None if task.done() else task  # an eager factory may have finished it
    enter, leave = switch
    if context is None:
        context = contextvars.copy_context()
    resume = _Resume(coro)
    # The task exists before the first step so that step runs as the task (current
    # task, timeouts, cancellation). 3.11 tasks always schedule their first step; here
    # that step only picks up where the eager one left off.
    task = asyncio.Task(resume, loop=loop, context=context)
    enter(loop, task)
    try:
        context.run(resume.first_step)
    finally:
        leave(loop, task)
    return None if resume.finished else task


class _StepCatcher:
    """Stands in for a loop's `call_soon` while `start_task_caught` makes a task: keeps
    what the task asks to schedule (its first step) for it to run at once. One per
    thread (a loop runs in one thread), reused: it holds nothing between two tasks."""

    __slots__ = ("callback", "context", "more")

    def __init__(self) -> None:
        # The first callback asked for without arguments (a task's step), and its context.
        self.callback: Any = None
        self.context: contextvars.Context | None = None
        # Anything else asked for (never, for asyncio's own tasks), in order.
        self.more: list[tuple[Any, tuple[Any, ...], contextvars.Context | None]] = []

    def __call__(
        self, callback: Any, *args: Any, context: contextvars.Context | None = None
    ) -> None:
        if self.callback is None and not args and not self.more:
            self.callback, self.context = callback, context
        else:
            self.more.append((callback, args, context))


class _Catchers(threading.local):
    def __init__(self) -> None:
        self.catcher = _StepCatcher()


_catchers = _Catchers()


def start_task_caught(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context | None = None,
) -> asyncio.Task[T] | None:
    """Run `coro` as a task whose first step runs now; None if it already finished
    (emulates `eager_start` on any loop whose instances have a `__dict__`, asyncio's and
    uvloop's among them; the cheapest way on both).

    A new task asks its loop to schedule its first step (`loop.call_soon(step,
    context=...)`, looked up on the loop object by the C and the Python task alike).
    While the task is made, that lookup finds a catcher in the loop's instance dict,
    shadowing the method; the caught step, the task's own (C) step, then runs at once in
    the task's context, as the loop would have run it, and is never scheduled: no wrapper
    coroutine, no leftover step one pass later, nothing taken off a queue (uvloop's has
    no Python view). Anything caught that is not this task's step is passed on to the
    real `call_soon`; if the step was not caught, the task starts on the next pass.
    """
    attrs = getattr(loop, "__dict__", None)
    if (
        attrs is None
        or "call_soon" in attrs  # someone else shadows it already: leave it be
        or loop.get_task_factory() is not None
        or (_CURRENT_TASKS.get(loop) if _CURRENT_TASKS is not None else asyncio.current_task(loop))
        is not None
    ):
        return start_task_emulated(loop, coro, context)  # a factory / nested: a plain task
    # The thread's catcher, not a closure made per call (about 1k instructions less per
    # task, bench/README.md "Session 12"). Free again before the step runs, which may
    # start a task of its own (nested: start_task_emulated, above).
    catcher = _catchers.catcher
    attrs["call_soon"] = catcher
    try:
        task = asyncio.Task(coro, loop=loop, context=context)
    finally:
        del attrs["call_soon"]
        callback, catcher.callback = catcher.callback, None
        step_context, catcher.context = catcher.context, None
        more = catcher.more
        if more:
            catcher.more = []
    if more or callback is None or getattr(callback, "__self__", None) is not task:
        first = [] if callback is None else [(callback, (), step_context)]
        return _pass_on(loop, task, first + more)
    # What the loop's handle does: run the step in the task's context. The step itself
    # catches everything but SystemExit and KeyboardInterrupt, as when the loop runs it.
    if step_context is None:
        callback()
    else:
        step_context.run(callback)
    return None if task.done() else task


def _pass_on(
    loop: asyncio.AbstractEventLoop,
    task: asyncio.Task[T],
    caught: list[tuple[Any, tuple[Any, ...], contextvars.Context | None]],
) -> asyncio.Task[T]:
    """Schedule what a task's making asked `call_soon` for, as asked (its first step
    included): the task then starts on the next pass, as a plain one does."""
    for callback, args, context in caught:
        loop.call_soon(callback, *args, context=context)
    return task


start_task = start_task_builtin if sys.version_info >= (3, 12) else start_task_caught


class _Resume(Coroutine[Any, Any, T]):
    """The coroutine a 3.11 eager task drives: `coro`, whose first step ran already.

    It behaves as `coro` would from that point: the first `send` hands the task the
    future `coro` suspended on; later sends and throws go to `coro` itself.
    """

    __slots__ = ("_coro", "_error", "_started", "_value", "_yielded", "finished")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._yielded: Any = None
        self._started = False  # the task has taken over from the eager step
        self.finished = False
        self._value: Any = None
        self._error: BaseException | None = None

    def first_step(self) -> None:
        try:
            self._yielded = self._coro.send(None)
        except StopIteration as stop:
            self.finished, self._value = True, stop.value
        except (KeyboardInterrupt, SystemExit):
            self.finished = True
            raise  # as a task's step does: these stop the loop
        except BaseException as exc:  # noqa: BLE001 - kept for the task, as its step would
            self.finished, self._error = True, exc

    def send(self, value: Any) -> Any:
        if self._started:
            return self._coro.send(value)
        self._started = True
        if self.finished:
            self._raise_outcome()
        yielded, self._yielded = self._yielded, None
        return yielded

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if isinstance(typ, BaseException) else typ(*(() if val is None else (val,)))
        if not self._started:
            self._started = True
            if self.finished:
                self._raise_outcome()
            # Cancelled before the task's first step: cancel what the coroutine waits on,
            # as Task.cancel() would have, then deliver the exception where it waits.
            waited, self._yielded = self._yielded, None
            if isinstance(exc, asyncio.CancelledError) and asyncio.isfuture(waited):
                waited.cancel()
            waited = None
        try:
            return self._coro.throw(exc)
        finally:
            # The exception's traceback keeps this frame: without this its locals would
            # keep the exception (a cycle, and with it the call's frames, until gc).
            del typ, val, tb, exc

    def close(self) -> None:
        self._yielded = None
        self._coro.close()

    def _raise_outcome(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            try:
                raise error
            finally:
                del error  # no cycle through this frame (see throw)
        raise StopIteration(self._value)

    # What task reprs, get_stack() and debuggers read: the call's coroutine, not this
    # wrapper, so a stuck call shows where it waits as in a plain task.
    @property
    def __name__(self) -> str:
        return str(getattr(self._coro, "__qualname__", type(self._coro).__name__))

    @property
    def cr_code(self) -> Any:
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_frame(self) -> Any:
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coro, "cr_running", False))

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)

    def __repr__(self) -> str:
        return repr(self._coro)

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("_Resume is driven by its task, not awaited")


class _CallbackCatcher:
    """Stands in for a loop's `call_soon` while `set_result_now` completes a future:
    keeps what completing it schedules (its done callbacks: a waiting task's wake-up).
    One per thread, reused: it holds nothing between two futures."""

    __slots__ = ("caught",)

    def __init__(self) -> None:
        self.caught: list[tuple[Any, tuple[Any, ...], contextvars.Context | None]] = []

    def __call__(
        self, callback: Any, *args: Any, context: contextvars.Context | None = None
    ) -> None:
        self.caught.append((callback, args, context))


class ResultSetter:
    """Completes futures of one loop so that the task awaiting one goes on at once.

    `set_result_now(future, value)` is `future.set_result(value)`, with its one done
    callback (the wake-up of the task awaiting it) run at once, as the loop would run it
    on its next pass: one loop pass fewer between a result arriving and the task going on
    with it. For the loop's own thread only.

    Completing a future asks `loop.call_soon` for each done callback (looked up on the
    loop object by the C and the Python future alike); that lookup finds a catcher in the
    loop's instance dict meanwhile, as in `start_task_caught`. A future with any other
    number of callbacks, or a loop where the lookup cannot be shadowed, has them
    scheduled as usual. The callback runs as a loop handle runs it: in its context,
    SystemExit and KeyboardInterrupt propagate, anything else goes to the loop's
    exception handler.
    """

    __slots__ = ("_attrs", "_catcher", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._attrs: dict[str, Any] | None = getattr(loop, "__dict__", None)
        self._catcher = _CallbackCatcher()

    def set_result_now(self, future: asyncio.Future[T], value: T) -> None:
        attrs = self._attrs
        if attrs is None or "call_soon" in attrs:  # (someone else shadows it: leave it be)
            future.set_result(value)
            return
        catcher = self._catcher
        caught = catcher.caught
        attrs["call_soon"] = catcher
        try:
            future.set_result(value)
        finally:
            del attrs["call_soon"]
        if len(caught) != 1:
            for callback, args, context in caught:
                self.loop.call_soon(callback, *args, context=context)
            caught.clear()
            return
        callback, args, context = caught.pop()
        try:
            if context is None:
                callback(*args)
            else:
                context.run(callback, *args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - what a loop handle does with it
            self.loop.call_exception_handler(
                {"message": f"Exception in callback {callback!r}{args!r}", "exception": exc}
            )
