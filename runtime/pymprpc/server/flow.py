"""Flow control shared by a server's connections: a budget of buffered input bytes.

Each connection buffers the partial frame it is receiving. Per connection that is bounded
by the message size, but across connections only by their number; `InputBudget` bounds
the sum. A connection whose read leaves the server over budget stops reading (TCP then
pushes back on its peer) until the total is back under the budget: connections that
complete or drop their frames free it.
"""

from __future__ import annotations

from typing import Protocol


class Reader(Protocol):
    """What the budget needs from a connection: pausing and resuming its reads."""

    def pause_input(self) -> None:
        """Stop reading (the budget is exhausted)."""
        ...

    def resume_input(self) -> None:
        """Read again (the budget has room)."""
        ...


class InputBudget:
    """Server-wide bound on bytes buffered in partial frames; 0 disables it.

    The total may exceed `limit` by at most one read per connection: the read that crosses
    it is kept, and that connection is paused.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._paused: dict[Reader, None] = {}  # ordered: resumed first-paused first

    def update(self, reader: Reader, before: int, after: int) -> None:
        """Record that `reader` now buffers `after` bytes instead of `before`.

        Pauses `reader` if it holds a partial frame and the total is over the limit;
        resumes every paused reader once the total is back within it.
        """
        self.used += after - before
        if not self.limit:
            return
        if self.used > self.limit:
            if after and reader not in self._paused:
                self._paused[reader] = None
                reader.pause_input()
        elif self._paused:
            paused, self._paused = self._paused, {}
            for waiting in paused:
                waiting.resume_input()

    def forget(self, reader: Reader, buffered: int) -> None:
        """`reader` is gone: release its `buffered` bytes."""
        self._paused.pop(reader, None)
        self.update(reader, buffered, 0)

    @property
    def paused(self) -> int:
        """How many connections wait for the budget."""
        return len(self._paused)
