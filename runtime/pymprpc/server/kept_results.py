"""Outcomes of `RETURN: false` calls, kept for `system.getresult(ID)`, bounded in count and age."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MPRPCError, RequestError


@dataclass(slots=True)
class KeptOutcome:
    """A kept call: running until `done` is set, then a value, stream items or an error."""

    created: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished: float | None = None
    value: Any = None
    items: list[Any] | None = None
    error: MPRPCError | None = None

    def set_value(self, value: Any, now: float) -> None:
        self.value = value
        self._finish(now)

    def set_items(self, items: list[Any], now: float) -> None:
        self.items = items
        self._finish(now)

    def set_error(self, error: MPRPCError, now: float) -> None:
        self.error = error
        self._finish(now)

    def _finish(self, now: float) -> None:
        self.finished = now
        self.done.set()


class KeptResults:
    """ID -> KeptOutcome; oldest finished outcomes go first when over `max_count`."""

    def __init__(
        self,
        max_count: int = 1000,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_stream_items: int = 10_000,
    ) -> None:
        self.max_count = max_count
        self.max_stream_items = max_stream_items
        self.ttl = ttl
        self.clock = clock
        self._outcomes: OrderedDict[str, KeptOutcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outcomes)

    def open(self, id: str) -> KeptOutcome:
        """Start keeping the outcome of call `id` (RequestError if the ID is taken)."""
        self._evict()
        if id in self._outcomes:
            raise RequestError(f"a kept result with ID {id!r} already exists", id=id)
        outcome = KeptOutcome(created=self.clock())
        self._outcomes[id] = outcome
        while len(self._outcomes) > self.max_count:
            self._drop_oldest()
        return outcome

    def _evict(self) -> None:
        now = self.clock()
        expired = [
            k
            for k, o in self._outcomes.items()
            if o.finished is not None and now - o.finished > self.ttl
        ]
        for k in expired:
            del self._outcomes[k]

    def _drop_oldest(self) -> None:
        for k, o in self._outcomes.items():
            if o.finished is not None:
                del self._outcomes[k]
                return
        self._outcomes.popitem(last=False)  # all running: the oldest goes anyway

    async def fetch(self, id: str) -> Any:
        """The kept outcome of `id`, waiting if still running; each outcome is fetched once.

        A value is returned, an error raised, and a kept stream returned as an async
        iterator (so `system.getresult` streams it).
        """
        self._evict()
        if not isinstance(id, str):
            raise RequestError(f"getresult expects a call ID string, got {id!r}")
        outcome = self._outcomes.get(id)
        if outcome is None:
            raise RequestError(
                f"no kept result for ID {id!r}: unknown, already fetched, or expired"
            )
        await outcome.done.wait()
        self._outcomes.pop(id, None)
        if outcome.error is not None:
            raise outcome.error
        if outcome.items is not None:
            return _replay(outcome.items)
        return outcome.value


async def _replay(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
