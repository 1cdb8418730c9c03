"""`DaemonThreadPool`: the thread executor, whose threads never hold the process open.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one
handler stuck in a blocking call kept a stopped server's process alive long past its
grace period. These threads are daemons: once the server has shut down, the process
exits and a function still running in a thread is abandoned with it (a thread cannot
be stopped from outside).

A call abandoned while it runs (cancelled, past its deadline, its client gone) still
holds its thread until the function returns. So that one client's abandoned work cannot
starve the others, such a thread does not count against `max_workers`: the pool may
start another in its place, up to `max_workers` more threads in all.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final

from .pool import default_size

_STOP: Final = None
_ids = itertools.count(1)


class _Item:
    __slots__ = ("abandoned", "args", "func", "future", "kwargs")

    def __init__(
        self, future: Future[Any], func: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        self.future, self.func, self.args, self.kwargs = future, func, args, kwargs
        self.abandoned = False

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.func(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.future.set_exception(exc)
            # The exception's traceback holds this frame, which holds self and so the
            # future and the exception: break the cycle, as ThreadPoolExecutor does.
            self = None  # type: ignore[assignment]
        else:
            self.future.set_result(result)


class DaemonThreadPool(Executor):
    """Up to `max_workers` daemon threads, started as calls need them and then reused."""

    def __init__(self, max_workers: int | None = None, name: str = "pymprpc") -> None:
        # ThreadPoolExecutor's default: blocking I/O is what threads are for.
        self.max_workers = max_workers or min(32, default_size() + 4)
        self._name = f"{name}-{next(_ids)}"
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._shutdown = False
        self._running: dict[Future[Any], _Item] = {}
        self._abandoned = 0  # running calls nobody waits for any more

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn(*args, **kwargs)` in a thread; RuntimeError after shutdown."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            future: Future[Any] = Future()
            self._queue.put(_Item(future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False):
                self._start_thread()
            return future

    def _start_thread(self) -> None:
        """Start a thread if the limit allows (with the lock held)."""
        if len(self._threads) >= self.max_workers + min(self._abandoned, self.max_workers):
            return
        thread = threading.Thread(
            target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            with self._lock:
                self._running[item.future] = item
            item.run()
            with self._lock:
                del self._running[item.future]
                if item.abandoned:
                    self._abandoned -= 1
            del item
            self._idle.release()

    def abandon(self, future: Future[Any]) -> None:
        """Nobody waits for `future` any more: if its call runs, stop counting its thread."""
        if future.cancel():
            return  # not started: it never will
        with self._lock:
            item = self._running.get(future)
            if item is not None and not item.abandoned:
                item.abandoned = True
                self._abandoned += 1
                if not self._queue.empty():
                    self._start_thread()  # calls wait behind it: one more thread for them

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with `cancel_futures`, drop the queued ones; with `wait`,
        join the threads (a call still running in one is waited for)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item.future.cancel()
            for _ in self._threads:
                self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()
