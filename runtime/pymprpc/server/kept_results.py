"""Outcomes of `RETURN: false` calls, kept for `system.getresult(ID)`.

Each outcome belongs to a scope: the account that made the call, or its connection when
the client logged in anonymously. Only the same scope can fetch it, IDs are unique per
scope only, and each scope has its own quota (count and bytes), so one client can neither
read, claim nor evict another's results. Values are kept MessagePack-encoded: the bytes
counted are the bytes held. Every operation is O(1) amortised.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextvars import ContextVar
from typing import Any, Final

import msgpack

from ..errors import MPRPCError, RequestError, ResultLimitError
from ..protocol.codec import _pairs_to_dict, pack_checked, packing_failure

# The scope of the call running in the current task: set by the connection handler for
# each call, read by `system.getresult`.
current_scope: ContextVar[Hashable] = ContextVar("pymprpc_kept_scope", default=None)
# The call whose kept outcome `fetch` returned in this task, (method, ID): what the server
# names when that value then cannot be sent, rather than the fetch itself.
fetched_call: ContextVar[tuple[str, str] | None] = ContextVar("pymprpc_fetched", default=None)


def _pack(value: Any, method: str = "", what: str = "result") -> bytes:
    """`value` (what call `method` returned, or a stream item) as kept, or the 405 its
    fetch gets, in the words a direct call's reply would have (see Codec.encode)."""
    try:
        return pack_checked(value)
    except Exception as exc:  # noqa: BLE001 - any refusal, user code's too
        naming = f"{method}(): " if method else ""
        failure = packing_failure(value, exc, path="MESSAGE.RESULT")
        raise ResultLimitError(f"{naming}{what} not delivered: {failure}") from None


def _unpack(data: bytes) -> Any:
    # Map keys that are arrays come back as tuples, as a call's do (codec._pairs_to_dict).
    return msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_pairs_to_dict)


class _Scope:
    __slots__ = ("bytes", "entries", "finished", "key")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.entries: dict[str, KeptOutcome] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()  # in finishing order
        self.bytes = 0


class KeptOutcome:
    """A kept call: running until `done` is set, then a value, stream items or an error."""

    __slots__ = (
        "_scope",
        "_table",
        "done",
        "error",
        "finished",
        "id",
        "items",
        "method",
        "size",
        "value",
    )

    def __init__(self, table: KeptResults, scope: _Scope, id: str, method: str = "") -> None:
        self._table: KeptResults = table
        self._scope: _Scope | None = scope  # None once dropped: finishing keeps nothing
        self.id = id
        self.method = method
        self.done = asyncio.Event()
        self.finished: float | None = None
        self.value: bytes | None = None
        self.items: bytearray | None = None  # a stream's items, MessagePack one after another
        self.error: MPRPCError | None = None
        self.size = 0

    def set_value(self, value: Any) -> ResultLimitError | None:
        """Keep a call's value (an error instead if it cannot be encoded or kept).

        Returns:
            The error kept instead when the value cannot be encoded (the method's bug,
            for the server to log); None otherwise (over `kept_results_bytes` included).
        """
        unencodable = None
        try:
            data = _pack(value, self.method, "result")
        except ResultLimitError as exc:
            unencodable = exc
        try:
            if unencodable is not None:
                raise unencodable
            self._charge(len(data), "result")
        except ResultLimitError as exc:
            exc.id, exc.__traceback__ = self.id, None  # no frames (and cycles) kept
            self.set_error(exc)
            return unencodable
        self.value = data
        self._finish()
        return None

    def add_item(self, item: Any) -> None:
        """Keep one more item of a stream; ResultLimitError if it cannot be kept."""
        data = _pack(item, self.method, "stream item")
        self._charge(len(data), "stream")
        if self.items is None:
            self.items = bytearray()
        self.items += data

    def end_stream(self) -> None:
        if self.items is None:
            self.items = bytearray()
        self._finish()

    def set_error(self, error: MPRPCError) -> None:
        self._release()
        self.value, self.items = None, None
        self.error = error
        self._finish()

    def _charge(self, size: int, what: str) -> None:
        scope = self._scope
        if scope is None:
            return  # nobody can fetch it any more: nothing is kept
        self._table.make_room(scope, size, self)
        limit = self._table.max_bytes
        if scope.bytes + size > limit:
            raise ResultLimitError(
                f"a kept {what} (RETURN false) may hold {limit} bytes with the others kept "
                f"for this client (kept_results_bytes); fetch them with system.getresult, "
                "or call the method directly"
            )
        scope.bytes += size
        self.size += size

    def _release(self) -> None:
        if self._scope is not None:
            self._scope.bytes -= self.size
        self.size = 0

    def _finish(self) -> None:
        if self.done.is_set():
            return
        self.finished = self._table.clock()
        self.done.set()
        if self._scope is not None:
            self._table.finished(self._scope, self)


# Why a RETURN-false call is refused, and getresult finds nothing, on such a server.
_KEEPS_NONE: Final = (
    "this server keeps no results of RETURN-false calls (kept_results=0): call the "
    "method and wait for its reply instead, or have the server raise kept_results"
)


# How many refused calls (see KeptResults._refused) are remembered per scope, and the
# longest ID remembered (an ID is the peer's text: a long one is not worth holding).
_REFUSED_KEPT: Final = 1024
_REFUSED_ID_LENGTH: Final = 256


class KeptResults:
    """(scope, ID) -> KeptOutcome, bounded per scope by count and bytes, and by age."""

    def __init__(
        self,
        max_count: int = 1000,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self._scopes: dict[Hashable, _Scope] = {}
        # Every finished outcome, oldest first: the expiry queue.
        self._expiry: OrderedDict[KeptOutcome, Hashable] = OrderedDict()
        # Expires outcomes nobody fetched even when no client stores or fetches any more
        # (else an account gone quiet would hold its kept bytes past the TTL for good).
        self._timer: asyncio.TimerHandle | None = None
        # Per scope, the calls refused for a full table (405 when they arrived), newest
        # last, so that getresult says why there is nothing to fetch: the client's
        # delay() returned their IDs before the 405 came back. Bounded per scope by count
        # and by the IDs' length (a scope's refusals never push out another's); a scope
        # is an account or a connection, dropped with it (drop_scope).
        self._refused: dict[Hashable, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return sum(len(s.entries) for s in self._scopes.values())

    def bytes_held(self) -> int:
        return sum(s.bytes for s in self._scopes.values())

    def open(self, scope: Hashable, id: str, method: str = "") -> KeptOutcome:
        """Start keeping the outcome of call `id` (of `method`) made in `scope`.

        Raises RequestError if the scope already keeps that ID, ResultLimitError if the
        scope has `max_count` calls still running.
        """
        self._expire()
        if not self.max_count:
            raise ResultLimitError(_KEEPS_NONE, id=id)
        table = self._scopes.get(scope) or _Scope(scope)
        if id in table.entries:
            raise RequestError(f"a kept result with ID {id!r} already exists", id=id)
        while len(table.entries) >= self.max_count:
            if not table.finished:
                if len(id) <= _REFUSED_ID_LENGTH:
                    refused = self._refused.get(scope)
                    if refused is None:
                        refused = self._refused[scope] = OrderedDict()
                    refused[id] = None
                    refused.move_to_end(id)
                    if len(refused) > _REFUSED_KEPT:
                        refused.popitem(last=False)
                raise ResultLimitError(self._full(), id=id)
            self._remove(table, table.entries[next(iter(table.finished))])
        refused = self._refused.get(scope)
        if refused is not None and id in refused:  # refused before: this call's now
            del refused[id]
            if not refused:
                del self._refused[scope]
        outcome = KeptOutcome(self, table, id, method)
        table.entries[id] = outcome
        self._scopes[scope] = table  # (again, if evicting emptied it)
        return outcome

    def _full(self) -> str:
        """Why a RETURN-false call is refused when its scope's table is full."""
        return (
            f"{self.max_count} calls with RETURN false are already running for this client "
            "(kept_results); wait for some with system.getresult"
        )

    def make_room(self, table: _Scope, size: int, keep: KeptOutcome) -> None:
        """Drop the scope's oldest finished outcomes until `size` more bytes fit."""
        while table.bytes + size > self.max_bytes and table.finished:
            oldest = table.entries[next(iter(table.finished))]
            if oldest is keep:
                break
            self._remove(table, oldest)

    def finished(self, table: _Scope, outcome: KeptOutcome) -> None:
        if table.entries.get(outcome.id) is outcome:
            table.finished[outcome.id] = None
            self._expiry[outcome] = None
            if self._timer is None:
                self._expire_later(self.ttl)

    def _expire_later(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a unit test's table): expired when used
            return
        # A little after the oldest is due, so that it is due when the timer runs.
        self._timer = loop.call_later(delay + 0.01, self._timed_expire)

    def _timed_expire(self) -> None:
        self._timer = None
        self._expire()
        if self._expiry:
            oldest = next(iter(self._expiry)).finished
            due = self.ttl if oldest is None else oldest + self.ttl - self.clock()
            self._expire_later(max(due, 0.0))

    def close(self) -> None:
        """Stop expiring on a timer (the server is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _remove(self, table: _Scope, outcome: KeptOutcome) -> None:
        if table.entries.get(outcome.id) is not outcome:
            return
        del table.entries[outcome.id]
        table.finished.pop(outcome.id, None)
        self._expiry.pop(outcome, None)
        outcome._release()
        outcome._scope = None
        if not table.entries and self._scopes.get(table.key) is table:
            del self._scopes[table.key]

    def _expire(self) -> None:
        now = self.clock()
        expiry = self._expiry
        while expiry:
            outcome = next(iter(expiry))
            if outcome.finished is not None and now - outcome.finished <= self.ttl:
                break
            expiry.popitem(last=False)
            table = outcome._scope
            if table is not None:
                self._remove(table, outcome)

    def drop_scope(self, scope: Hashable) -> None:
        """Forget everything kept for `scope` (its connection closed: nobody can fetch
        it); calls still running finish without keeping anything."""
        self._refused.pop(scope, None)
        table = self._scopes.pop(scope, None)
        if table is None:
            return
        for outcome in list(table.entries.values()):
            self._remove(table, outcome)

    async def fetch(self, scope: Hashable, id: str) -> Any:
        """The kept outcome of `id` in `scope`, waiting if still running; each outcome is
        fetched once.

        A value is returned, an error raised, and a kept stream returned as an async
        iterator (so `system.getresult` streams it). RequestError if there is none;
        ResultLimitError if the call was refused when it arrived (the table was full).
        """
        self._expire()
        if not isinstance(id, str):
            raise RequestError(f"getresult expects a call ID string, got {id!r}")
        table = self._scopes.get(scope)
        outcome = table.entries.get(id) if table is not None else None
        if outcome is None:
            if not self.max_count:
                raise RequestError(f"no kept result for ID {id!r}: {_KEEPS_NONE}")
            refused = self._refused.get(scope)
            if refused is not None and id in refused:
                del refused[id]
                if not refused:
                    del self._refused[scope]
                raise ResultLimitError(
                    f"the call with ID {id!r} was refused when it arrived, and never ran: "
                    f"{self._full()}"
                )
            raise RequestError(
                f"no kept result for ID {id!r}: unknown, already fetched, or expired"
            )
        await outcome.done.wait()
        if outcome._scope is None:
            raise RequestError(f"the kept result for ID {id!r} was already fetched or dropped")
        self._remove(outcome._scope, outcome)
        fetched_call.set((outcome.method, outcome.id))
        if outcome.error is not None:
            raise outcome.error
        if outcome.items is not None:
            return _replay(outcome.items)
        return _unpack(outcome.value) if outcome.value is not None else None


async def _replay(items: bytearray) -> AsyncIterator[Any]:
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=False,
        object_pairs_hook=_pairs_to_dict,
        max_buffer_size=len(items) + 1,
    )
    unpacker.feed(items)
    del items
    for item in unpacker:
        yield item
