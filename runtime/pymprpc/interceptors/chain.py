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


async def observe_stream(
    stream: AsyncIterator[Any], on_end: Callable[[BaseException | None, int], None]
) -> AsyncIterator[Any]:
    """Yield `stream`'s items; then call `on_end(error or None, items yielded)` once.

    `on_end` gets the exception that ended the stream (including `CancelledError` or
    `GeneratorExit` when the client went away), or None when it ran to its end.
    """
    count = 0
    error: BaseException | None = None
    try:
        async for item in stream:
            count += 1
            yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        aclose = getattr(stream, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            on_end(error, count)
