"""Fair use of the thread pool: each connection runs at most a share of its workers.

The pool's own queue is first come, first served, so one client that pipelines slow
thread-executor calls would otherwise take every worker and make every other client's
calls wait behind its own. Capping what one connection runs at once to all workers but
one leaves a worker for the others; its further calls wait in their connection's own
queue (first come, first served), which also bounds what each connection can put in the
pool's queue, so connections are served in turn when the pool is saturated.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Hashable

# Which connection the running call belongs to (set by the connection handler for each
# call's task); None outside a connection: not capped.
current_owner: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar(
    "pymprpc_thread_owner", default=None
)


def share_of(workers: int) -> int:
    """Thread calls one connection may run at once in a pool of `workers` threads."""
    return max(1, workers - 1)


class ThreadShares:
    """Per-owner cap on calls running at once; the owner's further calls wait in order.

    A slot is held until the call's thread work ends, not until its caller stops
    waiting: a cancelled call whose thread runs on still counts.
    """

    def __init__(self, per_owner: int) -> None:
        self.per_owner = per_owner
        self._running: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}

    async def acquire(self, owner: Hashable) -> None:
        """Wait until `owner` may start one more call (then it holds a slot)."""
        waiting = self._waiting.get(owner)
        if not waiting and self._running.get(owner, 0) < self.per_owner:
            self._running[owner] = self._running.get(owner, 0) + 1
            return
        if waiting is None:
            waiting = self._waiting[owner] = deque()
        granted = asyncio.get_running_loop().create_future()
        waiting.append(granted)
        try:
            await granted  # release() hands its slot over: the count stays
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(owner)  # granted as it was cancelled: pass the slot on
            else:
                waiting.remove(granted)
                if not waiting:
                    del self._waiting[owner]
            raise

    def release(self, owner: Hashable) -> None:
        """A call of `owner` finished: hand its slot to the owner's next waiting call."""
        waiting = self._waiting.get(owner)
        while waiting:
            granted = waiting.popleft()
            if not waiting:
                del self._waiting[owner]
            if not granted.done():
                granted.set_result(None)
                return
        count = self._running[owner] - 1
        if count:
            self._running[owner] = count
        else:
            del self._running[owner]

    def running(self, owner: Hashable) -> int:
        """Calls of `owner` holding a slot."""
        return self._running.get(owner, 0)
