"""`RateLimit`: a token bucket per user or per peer address."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from ..context import CallContext
from ..errors import RpcUnavailableException
from .chain import CallNext

__all__ = ["RateLimit"]


_LONGEST_WAIT = 1e9  # seconds (31 years): the RETRY_AFTER of an absurdly low rate


class RateLimit:
    """A server interceptor allowing `rate` calls per second per key, in bursts of `burst`.

    A call over the limit fails alone with 503 (`RpcUnavailableException`) whose message
    says when to retry; its DATA carries `RETRY_AFTER` (seconds). The connection and the
    caller's other calls are not affected.

    Args:
        rate: calls per second refilled into each bucket.
        burst: bucket size (default: `max(1, rate)`), the most calls accepted at once.
        per: `"user"` (the authenticated user; anonymous callers by peer host) or
            `"peer"` (the client's host, whoever it logs in as).
        max_keys: buckets kept; the least recently used is forgotten beyond it, so a flood
            of distinct keys cannot grow memory without bound.
        clock: seconds, monotonic (tests pass a fake).

    Raises:
        ValueError: `rate` not a positive finite number, `burst` under 1, `per` neither
            `"user"` nor `"peer"`, or `max_keys` not an int of at least 1.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        per: Literal["user", "peer"] = "user",
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of calls per second, got {rate!r}")
        if per not in ("user", "peer"):
            raise ValueError(f"per must be 'user' or 'peer', got {per!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        if not self.burst >= 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an int of at least 1, got {max_keys!r}")
        self.per = per
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def _key(self, ctx: CallContext) -> str:
        host = ctx.peer[0] if ctx.peer else "?"
        if self.per == "user" and ctx.user is not None:
            return f"user:{ctx.user}"
        return f"peer:{host}"

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if granted, else seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        # Within rounding of a whole token is a token: a client that waited exactly the
        # RETRY_AFTER it was told must not be refused again because `now - last`, on a
        # clock of days of uptime, came out a hair under it.
        if tokens >= 1.0 - 1e-9:
            tokens = max(0.0, tokens - 1.0)
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        """Refuse the call with 503 when its bucket is empty, else run it."""
        wait = self.take(self._key(ctx))
        if wait:
            who = f"user {ctx.user!r}" if self.per == "user" and ctx.user else "this address"
            raise RpcUnavailableException(
                f"rate limit of {self.rate:g} calls/s exceeded for {who}; retry in {wait:.2f}s",
                id=ctx.id,
                # Whole milliseconds, rounded up: a client waiting that long finds a token
                # (bounded: a rate of 1e-320 calls/s would make it infinite).
                data={"RETRY_AFTER": math.ceil(min(wait, _LONGEST_WAIT) * 1000) / 1000},
            )
        return await call_next(ctx)
