"""Composing server interceptors around a call.

A server interceptor is `async def interceptor(ctx, call_next)`: it may inspect or replace
the `CallContext` (e.g. `ctx.replace(metadata=...)`), refuse the call by raising any
`pymprpc.errors` exception (a 403 `RestrictAccessError` for access control), and see the
outcome — the value `await call_next(ctx)` returns, or the exception it raises. For a
stream (`ctx.streaming`), `call_next` returns the stream's async iterator; wrap it to see
its items and its end (`observe_stream` does that).

What `call_next` returns is still to be sent: the connection may refuse it (405: not
encodable as MessagePack, or too large), and an interceptor may turn it into something it
can send. To record the code the client got (a log, a span, a metric), report from the
call's end: `observe_call(ctx, result, on_end)`, or `ctx.add_done_callback(...)`.

Interceptors run in the order given: the first is outermost.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ..context import CallContext, CallEnding

__all__ = [
    "CallNext",
    "ServerInterceptor",
    "compose",
    "observe_call",
    "observe_stream",
]

CallNext = Callable[[CallContext], Awaitable[Any]]
ServerInterceptor = Callable[[CallContext, CallNext], Awaitable[Any]]


def compose(interceptors: Sequence[ServerInterceptor], terminal: CallNext) -> CallNext:
    """`terminal` wrapped by `interceptors`, the first one outermost."""
    call: CallNext = terminal
    for interceptor in reversed(interceptors):
        call = functools.partial(_step, interceptor, call)
    return call


async def _step(interceptor: ServerInterceptor, call_next: CallNext, ctx: CallContext) -> Any:
    return await interceptor(ctx, call_next)


def compose_call(
    interceptors: Sequence[ServerInterceptor], terminal: CallNext, first: CallContext
) -> CallNext:
    """`compose`, for a call the server ends through its context `first`: a context an
    interceptor builds afresh (not by `replace`) and passes on ends with it, so that
    callbacks added to it run even if the call is refused before its method runs."""
    call: CallNext = terminal
    ending = first._ending
    for interceptor in reversed(interceptors):
        call = functools.partial(_followed_step, interceptor, call, ending)
    return call


async def _followed_step(
    interceptor: ServerInterceptor, call_next: CallNext, ending: CallEnding, ctx: CallContext
) -> Any:
    if ctx._ending is not ending:
        ending.follow(ctx._ending)
    return await interceptor(ctx, call_next)


def observe_call(
    ctx: CallContext,
    result: Any,
    on_end: Callable[[BaseException | None, int | None], None],
) -> Any:
    """What an interceptor returns for `result` (what `call_next(ctx)` returned), with
    `on_end(error, items)` called once, when the call is over.

    `error` is None when everything was sent; else the exception the call ended with: a
    `ResultLimitError` (405) for a value or a stream item the connection could not send,
    what a stream raised, what an interceptor outside this one raised, `CancelledError`
    or `GeneratorExit` for a stream cancelled or closed unread. `outcome_code(error,
    streaming=items is not None, ctx=ctx)` gives the code its client was answered with.
    `items` is the number of items a stream yielded (a stream method's, or an async
    iterator a coroutine returned); None for a call whose result is not a stream. For
    what `call_next` raised, see `when_done`.
    """
    if not ctx.streaming and not isinstance(result, AsyncIterator):
        ctx.add_done_callback(functools.partial(_unary_end, on_end))
        return result
    ending = _StreamEnding(on_end)
    observed = ending.observed = _Observed(result, ending.stream_ended)
    ctx.add_done_callback(ending.done)
    return observed


def _unary_end(
    on_end: Callable[[BaseException | None, int | None], None], error: BaseException | None
) -> None:
    on_end(error, None)


class _StreamEnding:
    """`observe_call` for a stream: reports once both the stream has ended (its own
    error, its item count) and the server is done with the call (what its client was
    answered: a 405 for an item it refused, which ends the stream as a close). If the
    server is done first, the stream was left unfinished (an interceptor outside this
    one wrapped it and closed its own wrapper only): reported then, as closed."""

    __slots__ = ("_answered", "_done", "_ended", "_items", "_on_end", "_stream_error", "observed")

    def __init__(self, on_end: Callable[[BaseException | None, int | None], None]) -> None:
        self._on_end: Callable[[BaseException | None, int | None], None] | None = on_end
        self._ended = self._done = False
        self._stream_error: BaseException | None = None
        self._answered: BaseException | None = None
        self._items = 0
        self.observed: _Observed | None = None

    def stream_ended(self, error: BaseException | None, items: int) -> None:
        self._ended = True
        self._stream_error, self._items = error, items
        if self._done:
            self._report()

    def done(self, error: BaseException | None) -> None:
        self._done = True
        self._answered = error
        if not self._ended:
            observed = self.observed
            self._stream_error = GeneratorExit()  # closed unread, as far as it can tell
            self._items = observed.items if observed is not None else 0
        self._report()

    def _report(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is None:
            return  # reported already (the server was done first)
        error = self._answered if self._answered is not None else self._stream_error
        # Dropped: they may hold tracebacks whose frames hold this object.
        self._answered = self._stream_error = None
        self.observed = None
        on_end(error, self._items)


def observe_stream(
    stream: AsyncIterator[Any], on_end: Callable[[BaseException | None, int], None]
) -> AsyncIterator[Any]:
    """Yield `stream`'s items; then call `on_end(error or None, items yielded)` once.

    `on_end` gets the exception that ended the stream (including `CancelledError` or
    `GeneratorExit` when the client went away), or None when it ran to its end. It is
    called even when the stream is closed before its first item was asked for (a stream
    called oneway, or one whose start could not be sent): with `GeneratorExit` then.
    """
    return _Observed(stream, on_end)


class _Observed(AsyncIterator[Any]):
    """`observe_stream`'s iterator: an async generator (`_observe`), so that one left
    unclosed once started (an interceptor wrapping it stopped reading it) is closed by the
    loop's finalizer as any async generator is; and a close before its first step, which
    never runs a generator's body, reports the end itself."""

    __slots__ = ("_closed", "_count", "_generator", "_on_end", "_started", "_stream")

    def __init__(
        self, stream: AsyncIterator[Any], on_end: Callable[[BaseException | None, int], None]
    ) -> None:
        self._stream = stream
        self._on_end = on_end
        # Items yielded so far, shared with the generator (not this object: a cycle).
        self._count = [0]
        self._generator = _observe(stream, on_end, self._count)
        self._started = False
        self._closed = False

    @property
    def items(self) -> int:
        """Items yielded so far."""
        return self._count[0]

    def __aiter__(self) -> _Observed:
        return self

    def __anext__(self) -> Awaitable[Any]:
        if self._closed:
            return _exhausted()
        self._started = True
        return self._generator.__anext__()

    async def aclose(self) -> None:
        """Close the stream (the client went away, or nobody reads it)."""
        if self._started:
            await self._generator.aclose()
            return
        if self._closed:
            return
        self._closed = True
        await _close_then_report(self._stream, self._on_end, GeneratorExit(), 0)


async def _exhausted() -> Any:
    raise StopAsyncIteration


async def _observe(
    stream: AsyncIterator[Any],
    on_end: Callable[[BaseException | None, int], None],
    counted: list[int],
) -> AsyncGenerator[Any, None]:
    count = 0
    error: BaseException | None = None
    try:
        async for item in stream:
            count += 1
            counted[0] = count
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        await _close_then_report(stream, on_end, error, count)


async def _close_then_report(
    stream: AsyncIterator[Any],
    on_end: Callable[[BaseException | None, int], None],
    error: BaseException | None,
    count: int,
) -> None:
    """Close `stream` (if it can be), then call `on_end` whatever closing raised."""
    aclose = getattr(stream, "aclose", None)
    try:
        if aclose is not None:
            await aclose()
    finally:
        on_end(error, count)
