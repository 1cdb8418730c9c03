"""Where plain (non-async) functions run: a process pool, a thread pool, or inline.

The process pool is forked from the server process, so workers inherit every registered
function and instance: calls name their target by key instead of pickling the function,
which is what lets functions defined inside the `with Server(...)` block run there. Only
arguments and results cross the process boundary (they must pickle), and an instance's
state is a per-worker copy: mutations in a worker are not seen by the server or by other
workers. Use the thread pool (shared state, but the GIL serialises CPU work) or inline
execution (no overhead, but it blocks the event loop) when that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import multiprocessing
import os
import signal
import stat
import traceback
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..context import CallContext, current_call_or_none, run_in_call
from ..errors import RPCRuntimeError
from .shares import ThreadShares, current_owner, share_of


class ExecutorKind(enum.StrEnum):
    """How a plain function is run."""

    PROCESS = "process"
    THREAD = "thread"
    INLINE = "inline"


# Targets visible to forked workers: key -> function or instance. Filled in the server
# process before the pool forks; a worker resolves (key, attribute path) here.
_TARGETS: dict[str, Any] = {}
_generation = 0


def publish(key: str, target: Any) -> None:
    """Make `target` callable by key in process-pool workers forked from now on."""
    global _generation
    _TARGETS[key] = target
    _generation += 1


def _resolve(key: str, path: Sequence[str]) -> Callable[..., Any]:
    target = _TARGETS[key]
    for part in path:
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def _detach_inherited_sockets() -> None:
    """Point every inherited socket fd at /dev/null.

    A forked worker holds copies of the server's listening socket and of every client
    connection open at fork time; without this, closing a connection in the server would
    not reach the peer while a worker lives. dup2 (not close) keeps the fd numbers taken,
    so a stale socket object closing its fd later cannot hit a pipe the pool reuses.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        for name in os.listdir(fd_dir):
            fd = int(name)
            if fd <= 2 or fd == null:
                continue
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
            except OSError:
                continue
    finally:
        os.close(null)


def _worker_init() -> None:
    # The parent's event loop owns the signal wakeup fd and handles SIGINT for the whole
    # server; a worker must neither write into that fd nor die with a traceback on Ctrl-C.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _detach_inherited_sockets()


def _invoke(
    key: str,
    path: tuple[str, ...],
    args: list[Any],
    kwargs: dict[str, Any],
    ctx: CallContext | None = None,
) -> Any:
    """Run a published target in a worker, with the call's context current; exceptions
    come back as plain data, the response metadata the target set with its value."""
    try:
        return ("ok", *run_in_call(ctx, _resolve(key, path), args, kwargs))
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the caller
        return ("error", type(exc).__name__, str(exc), traceback.format_exc())


def _submit(
    loop: asyncio.AbstractEventLoop,
    pool: ThreadPoolExecutor,
    shares: ThreadShares,
    owner: Hashable,
    call: Callable[[], Any],
) -> asyncio.Future[Any]:
    """Start `call` on `pool` within `owner`'s share (already acquired); the slot is
    released when the thread is done, not when the caller stops waiting: a cancelled
    call's thread runs on and still uses the share."""
    try:
        future = pool.submit(call)
    except BaseException:
        shares.release(owner)
        raise

    def release(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
            loop.call_soon_threadsafe(shares.release, owner)

    future.add_done_callback(release)
    return asyncio.wrap_future(future, loop=loop)


class RemoteFunctionError(Exception):
    """A function raised inside a worker process; carries its type name and traceback."""

    def __init__(self, type_name: str, message: str, frame: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.frame = frame


class Executors:
    """The server's pools, created on first use and recreated when broken or stale."""

    def __init__(self, default: ExecutorKind, max_workers: int | None = None) -> None:
        self.default = default
        self.max_workers = max_workers
        self._process: ProcessPoolExecutor | None = None
        self._process_generation = -1
        self._thread: ThreadPoolExecutor | None = None
        self._thread_shares = ThreadShares(1)  # replaced with the pool's
        self._retired: list[ProcessPoolExecutor] = []

    def _retire(self, pool: ProcessPoolExecutor) -> None:
        pool.shutdown(wait=False, cancel_futures=False)
        self._retired.append(pool)

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._process is not None and self._process_generation != _generation:
            # Something was registered after the workers forked: they cannot see it.
            # Calls already running on the old pool finish there.
            self._retire(self._process)
            self._process = None
        if self._process is None:
            self._process = ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_init,
            )
            self._process_generation = _generation
        return self._process

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._thread is None:
            # ThreadPoolExecutor's own default, spelled out: the shares are cut from it.
            workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
            self._thread = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pymprpc")
            self._thread_shares = ThreadShares(share_of(workers))
        return self._thread

    async def _run_in_thread(self, loop: asyncio.AbstractEventLoop, call: Callable[[], Any]) -> Any:
        """Run `call` in the thread pool within its connection's share (see `shares`)."""
        pool = self._thread_pool()
        owner, shares = current_owner.get(), self._thread_shares
        if owner is None:
            return await loop.run_in_executor(pool, call)
        await shares.acquire(owner)
        # No local here may keep the future: it keeps the call's exception, whose
        # traceback keeps this frame (a cycle holding the function's frames until gc).
        return await _submit(loop, pool, shares, owner, call)

    def warm_up(self) -> None:
        """Fork the process pool now, before clients connect."""
        self._process_pool().submit(os.getpid).result()

    async def run(
        self,
        kind: ExecutorKind,
        key: str,
        path: tuple[str, ...],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a published target by the given executor kind."""
        if kind is ExecutorKind.INLINE:
            return _resolve(key, path)(*args, **kwargs)
        loop = asyncio.get_running_loop()
        if kind is ExecutorKind.THREAD:
            call = functools.partial(_resolve(key, path), *args, **kwargs)
            # The call's context (current_call() and any other context variable) goes along.
            context = contextvars.copy_context()
            return await self._run_in_thread(loop, functools.partial(context.run, call))
        pool = self._process_pool()
        ctx = current_call_or_none()
        try:
            outcome = await loop.run_in_executor(pool, _invoke, key, path, args, kwargs, ctx)
        except BrokenProcessPool as exc:
            if self._process is pool:
                self._retire(pool)
                self._process = None
            name = ".".join((key.split(":", 1)[-1], *path))
            raise RPCRuntimeError(
                f"the worker process running {name!r} died ({exc}); the pool was restarted",
                exception="BrokenProcessPool",
            ) from None
        if outcome[0] == "ok":
            if outcome[2] and ctx is not None:
                ctx.response_metadata.update(outcome[2])
            return outcome[1]
        _, type_name, message, frame = outcome
        raise RemoteFunctionError(type_name, message, frame)

    def shutdown(self) -> None:
        """Stop the pools; calls still running in worker processes are killed."""
        pools = [p for p in (self._process, *self._retired) if p is not None]
        thread = self._thread
        self._process, self._thread, self._retired = None, None, []
        for pool in pools:
            # Running calls had their grace period already. Killing the workers lets a
            # waiting shutdown return at once, and a waiting shutdown is needed: one that
            # does not wait races the interpreter's exit hook on a closed pipe (EBADF).
            workers: dict[int, Any] = getattr(pool, "_processes", None) or {}
            for worker in list(workers.values()):
                worker.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        if thread is not None:
            thread.shutdown(wait=False, cancel_futures=True)
