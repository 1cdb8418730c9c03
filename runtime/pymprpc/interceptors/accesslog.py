"""`AccessLog`: one log record per call, with its outcome and duration."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..context import CallContext
from ..errors import MPRPCError, printable
from .chain import CallNext, observe_call

__all__ = ["AccessLog", "outcome_code"]


_TIMER_EARLY = 0.002  # seconds a deadline's timer may fire before its time


def outcome_code(
    error: BaseException | None, *, streaming: bool = False, ctx: CallContext | None = None
) -> int:
    """The protocol code a call's outcome is answered with (200/201 for success).

    With the call's `ctx`, a cancellation once its deadline has passed is the deadline's
    (408: the server cancels the call then, and answers 408).
    """
    if error is None:
        return 201 if streaming else 200
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        # The deadline's timer may fire a little before time.monotonic() reaches it
        # (uvloop's runs on its millisecond loop clock): hence the tolerance.
        if (
            ctx is not None
            and ctx.deadline is not None
            and time.monotonic() >= ctx.deadline - _TIMER_EARLY
        ):
            return 408
        return 407  # the client cancelled or went away, or the server is shutting down
    code = getattr(error, "code", None) if isinstance(error, MPRPCError) else None
    return int(code) if code is not None else 404


class AccessLog:
    """A server interceptor logging every call once it is answered.

    Each record reads `method id=... peer=host:port user=... -> code in 1.2ms` (a stream
    adds its item count and is logged when it ends). Records go to `logger`
    (`pymprpc.access` by default) at `level`; errors are logged at the same level, since
    the server already logs application errors at ERROR.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("pymprpc.access")
        self.level = level

    def _log(self, ctx: CallContext, started: float, code: int, items: int | None) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        peer = f"{ctx.peer[0]}:{ctx.peer[1]}" if ctx.peer else "-"
        extra = f" items={items}" if items is not None else ""
        self.logger.log(
            self.level,
            "%s id=%s peer=%s user=%s -> %d in %.1fms%s",
            printable(ctx.method),
            printable(ctx.id),
            peer,
            ctx.user or "-",
            code,
            (time.perf_counter() - started) * 1000,
            extra,
        )

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        """Run the call and log its outcome (a stream: when it ends)."""
        started = time.perf_counter()

        def ended(error: BaseException | None, items: int | None = None) -> None:
            # Once the call is over, with what its client got: what call_next returned may
            # still be refused by the connection (405), and what it raised answered with
            # another code (a handler's GeneratorExit: 404; cut short at shutdown: 503).
            # A stream (items counted) is 201, a coroutine's returned one included.
            code = outcome_code(error, streaming=items is not None, ctx=ctx)
            self._log(ctx, started, code, items)

        try:
            result = await call_next(ctx)
        except BaseException:
            ctx.add_done_callback(ended)
            raise
        return observe_call(ctx, result, ended)
