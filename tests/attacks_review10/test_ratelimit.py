"""RateLimit's RETRY_AFTER, rounded up to the millisecond: does waiting that long find a
token?"""

from __future__ import annotations

import math

import pytest

from pymprpc.interceptors import RateLimit


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _retry_after(wait: float) -> float:
    return math.ceil(wait * 1000) / 1000  # what RateLimit sends (asserted below)


@pytest.mark.timeout(10)
def test_retry_after_is_what_the_client_is_sent() -> None:
    limit = RateLimit(rate=3, burst=1, clock=Clock(1000.0))
    assert limit.take("k") == 0.0
    wait = limit.take("k")
    assert _retry_after(wait) == 0.334


@pytest.mark.timeout(10)
def test_waiting_exactly_retry_after_with_an_uptime_clock() -> None:
    clock = Clock(987654.321)
    limit = RateLimit(rate=10, burst=1, clock=clock)
    assert limit.take("k") == 0.0
    retry_after = _retry_after(limit.take("k"))
    assert retry_after == 0.1
    clock.now += retry_after  # the client waited exactly what it was told
    assert limit.take("k") == 0.0


@pytest.mark.timeout(10)
def test_max_keys_checked() -> None:
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(ValueError):
            RateLimit(rate=1, max_keys=bad)  # type: ignore[arg-type]
    limit = RateLimit(rate=1, burst=1, max_keys=1, clock=Clock(5.0))
    assert limit.take("a") == 0.0
    assert limit.take("b") == 0.0
    assert limit.take("a") == 0.0  # "a" was forgotten: a full bucket again
