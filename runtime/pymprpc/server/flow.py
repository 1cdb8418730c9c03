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

    A read that leaves the total over `limit` pauses its connection, unless no other
    connection holding a partial frame is still reading: one always reads on, so some
    frame always completes and frees its bytes. Each time bytes are freed the longest
    paused connection reads again; once the total is within the limit all do. The total
    may exceed `limit` by one read per connection plus one message.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._held: dict[Reader, int] = {}  # connections holding a partial frame
        self._paused: dict[Reader, None] = {}  # ordered: the longest waiting first

    def update(self, reader: Reader, buffered: int) -> None:
        """Record that `reader` now buffers `buffered` bytes; pause or resume readers."""
        before = self._held.pop(reader, 0)
        if buffered:
            self._held[reader] = buffered
        self.used += buffered - before
        if not self.limit:
            return
        if self.used <= self.limit:
            self._resume(len(self._paused))
        elif buffered < before:
            self._resume(1)
        if (
            self.used > self.limit
            and buffered
            and reader not in self._paused
            # Others still reading (paused readers all hold bytes; this one is held too).
            and len(self._held) - len(self._paused) > 1
        ):
            self._paused[reader] = None
            reader.pause_input()

    def forget(self, reader: Reader) -> None:
        """`reader` is gone: release its bytes."""
        self._paused.pop(reader, None)
        self.update(reader, 0)

    def _resume(self, count: int) -> None:
        for _ in range(min(count, len(self._paused))):
            reader = next(iter(self._paused))
            del self._paused[reader]
            reader.resume_input()

    @property
    def paused(self) -> int:
        """How many connections wait for the budget."""
        return len(self._paused)
