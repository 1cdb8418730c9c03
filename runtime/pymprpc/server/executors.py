"""Where plain (non-async) functions run: worker processes, a thread pool, or inline.

The process workers are forked from the server (through a zygote forked while the server
has one thread, see `pymprpc.server.workers`), so they inherit every registered function
and instance: calls name their target by key instead of pickling the function, which is
what lets functions defined inside the `with Server(...)` block run there. Only
arguments and results cross the process boundary (they must pickle), and an instance's
state is a per-worker copy: mutations in a worker are not seen by the server or by other
workers. Use the thread pool (shared state, but the GIL serialises CPU work), inline
execution (no overhead, but it blocks the event loop), or any
`concurrent.futures.Executor` of your own when that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import inspect
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Final, Protocol

from ..context import current_call_source, reset_current, set_current
from .shares import ThreadShares, current_owner, share_of
from .workers import ProcessPool, RemoteFunctionError, TargetTable
from .workers.threads import DaemonThreadPool

__all__ = ["ExecutorChoice", "ExecutorKind", "Executors", "RemoteFunctionError", "executor_choice"]


class ExecutorKind(enum.StrEnum):
    """How a plain function is run."""

    PROCESS = "process"
    THREAD = "thread"
    INLINE = "inline"


# Where a plain function runs: one of ours, or an executor the user passed in.
ExecutorChoice = ExecutorKind | Executor


def executor_choice(value: ExecutorKind | str | Executor) -> ExecutorChoice:
    """An executor argument as the server keeps it: a kind, or the user's Executor."""
    if isinstance(value, Executor):
        return value
    try:
        return ExecutorKind(value)
    except ValueError:
        raise ValueError(
            f"executor must be 'process', 'thread', 'inline' or a "
            f"concurrent.futures.Executor, not {value!r}"
        ) from None


def _release(
    loop: asyncio.AbstractEventLoop, shares: ThreadShares, owner: Hashable, _: object
) -> None:
    """A thread call is done: free its connection's slot, on the loop."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
        loop.call_soon_threadsafe(shares.release, owner)


_PROCESS: Final = ExecutorKind.PROCESS  # read per call: cheaper than the enum lookup


class Target(Protocol):
    """What an executor needs of a registered method (`registry.Method` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def func(self) -> Callable[..., Any]: ...
    @property
    def key(self) -> str: ...
    @property
    def path(self) -> tuple[str, ...]: ...


class Executors:
    """One server's executors: its process workers, thread pool, and user executors."""

    def __init__(
        self,
        default: ExecutorChoice,
        max_workers: int | None = None,
        targets: TargetTable | None = None,
        worker_spin: float | None = None,
    ) -> None:
        self.default = default
        self.max_workers = max_workers
        self.targets = targets if targets is not None else TargetTable()
        self.process = ProcessPool(self.targets, max_workers, worker_spin)
        self._thread: DaemonThreadPool | None = None
        self._thread_shares = ThreadShares(1)  # replaced with the pool's
        # Keep the zygote current while registration happens before threads exist.
        self.targets.listen(self.process.prepare)

    def _thread_pool(self) -> DaemonThreadPool:
        if self._thread is None:
            self._thread = DaemonThreadPool(self.max_workers)
            self._thread_shares = ThreadShares(share_of(self._thread.max_workers))
        return self._thread

    def warm_up(self) -> None:
        """Start the process workers now (on the running loop), before clients connect:
        waits for them (the server serves nothing yet), a few seconds at most."""
        self.process.start(wait=True)

    def run(
        self, kind: ExecutorChoice, method: Target, args: list[Any], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        """Run `method` on the given executor (await the result); a worker's exception
        comes back as RemoteFunctionError, a dead worker or unpicklable value as
        RPCRuntimeError."""
        if kind is _PROCESS:
            # The pool's own coroutine, not one wrapping it: one frame less per call. The
            # call's context goes along (if the function asks for it); response metadata
            # the function sets comes back.
            return self.process.run(
                method.name, method.key, method.path, args, kwargs, current_call_source()
            )
        return self._run(kind, method, args, kwargs)

    async def _run(
        self, kind: ExecutorChoice, method: Target, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if kind is ExecutorKind.INLINE:
            return method.func(*args, **kwargs)
        loop = asyncio.get_running_loop()
        if kind is ExecutorKind.THREAD:
            pool = self._thread_pool()
            # The call's context (current_call() and any other context variable) goes along.
            context = contextvars.copy_context()
            # Each connection runs at most its share of the threads (see `shares`); the
            # slot is held until the thread is done, even if the caller stops waiting.
            owner, shares = current_owner.get(), self._thread_shares
            if owner is not None:
                await shares.acquire(owner)
            try:
                future = pool.submit(context.run, call_in_thread, method.func, *args, **kwargs)
            except BaseException:
                if owner is not None:
                    shares.release(owner)
                raise
            if owner is not None:
                future.add_done_callback(functools.partial(_release, loop, shares, owner))
            try:
                # SystemExit raised in a thread comes back through the future, and the
                # handler fails that call only.
                return await asyncio.wrap_future(future, loop=loop)
            except asyncio.CancelledError:
                pool.abandon(future)
                raise
            finally:
                # The future keeps the call's exception, whose traceback keeps this frame:
                # a cycle holding the function's frames until gc.
                del future
        assert isinstance(kind, Executor)
        call = functools.partial(call_in_thread, method.func, *args, **kwargs)
        if isinstance(kind, ThreadPoolExecutor):
            # Threads of this process: the call's context goes along, as on the server's
            # own threads (current_call() works there).
            call = functools.partial(contextvars.copy_context().run, call)
        else:
            # Any other executor may be a process pool: it gets a picklable callable, run
            # outside any call's context (a forked worker inherited the context of the
            # call that was running when it was forked: never another call's).
            call = functools.partial(run_detached, method.func, *args, **kwargs)
        return await loop.run_in_executor(kind, call)

    def shutdown(self) -> None:
        """Stop the workers and the thread pool; calls still running in workers are killed.
        A thread cannot be killed: a call still running in one goes on in the background,
        but its daemon thread does not keep the process alive once the server returns.
        Executors passed in by the user are theirs to shut down."""
        self.process.shutdown()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False, cancel_futures=True)


def call_in_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)`, for a thread or another executor whose future asyncio
    wraps: a `StopIteration` it raises (`next()` on an empty iterator) comes back as
    `RuntimeError`, as from a coroutine (PEP 479). An asyncio future cannot hold
    StopIteration: the call would never be answered.

    Raises:
        RuntimeError: `func` raised StopIteration (chained as its cause).
    """
    try:
        return func(*args, **kwargs)
    except StopIteration as exc:
        name = getattr(func, "__qualname__", type(func).__name__)
        raise RuntimeError(f"{name}() raised StopIteration") from exc


def run_detached(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call `func` with no current call (`current_call()` raises LookupError), for a user's
    executor that is not a thread pool of this process.

    Module-level, so a `ProcessPoolExecutor` can pickle it by name along with `func`.

    Raises:
        TypeError: `func` returned a coroutine, which cannot leave a worker process.
    """
    token = set_current(None)
    try:
        result = call_in_thread(func, *args, **kwargs)
    finally:
        reset_current(token)
    if inspect.iscoroutine(result):
        result.close()  # never run: no "coroutine was never awaited" warning
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"{name!r} returned a coroutine, which cannot run in another process: declare "
            "it `async def` (it then runs on the server's event loop) or register it with "
            'executor="thread"'
        )
    return result
