"""Composing server interceptors around a call.

A server interceptor is `async def interceptor(ctx, call_next)`: it may inspect or replace
the `CallContext` (e.g. `ctx.replace(metadata=...)`), refuse the call by raising any
`pymprpc.errors` exception (a 403 `RestrictAccessError` for access control), and see the
outcome — the value `await call_next(ctx)` returns, or the exception it raises. For a
stream (`ctx.streaming`), `call_next` returns the stream's async iterator; wrap it to see
its items and its end (`observe_stream` does that).

Interceptors run in the order given: the first is outermost.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ..context import CallContext

__all__ = ["CallNext", "ServerInterceptor", "compose", "observe_stream"]

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
    """`observe_stream`'s iterator. Not an async generator: one closed before its first
    step never runs its body, and `on_end` must run all the same."""

    __slots__ = ("_count", "_ended", "_iterator", "_on_end", "_stream")

    def __init__(
        self, stream: AsyncIterator[Any], on_end: Callable[[BaseException | None, int], None]
    ) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[Any] | None = None  # (not an iterable: fails its call)
        self._on_end = on_end
        self._count = 0
        self._ended = False

    def __aiter__(self) -> _Observed:
        return self

    async def __anext__(self) -> Any:
        if self._ended:
            raise StopAsyncIteration
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = aiter(self._stream)
            item = await anext(iterator)
        except StopAsyncIteration:
            await self._end(None)
            raise
        except BaseException as exc:
            await self._end(exc)
            raise
        self._count += 1
        return item

    async def aclose(self) -> None:
        """Close the stream (the client went away, or nobody reads it)."""
        if not self._ended:
            await self._end(GeneratorExit())

    async def _end(self, error: BaseException | None) -> None:
        self._ended = True
        aclose = getattr(self._stream, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            self._on_end(error, self._count)
