"""The failed-login throttle keeps bounded, short-lived records and logs no secrets."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from pymprpc.protocol import Credentials
from pymprpc.server.logins import (
    FORGET_AFTER,
    MAX_TRACKED,
    LoginThrottle,
    ThrottledCredentials,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_long_user_names_cost_a_digest_not_their_length() -> None:
    throttle = LoginThrottle(free=1, backoff=1.0, clock=Clock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            throttle.failed(f"10.0.{i}.1", f"{'u' * 50_000}{i}")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown  # 200 names of 50 KB would be 10 MB
    # The digest still identifies the name: its back-off applies to it again.
    throttle.failed("10.9.9.9", "u" * 50_000 + "7")
    assert throttle.blocked("10.8.8.8", "u" * 50_000 + "7")
    assert not throttle.blocked("10.8.8.8", "u" * 50_000 + "8")


def test_records_are_forgotten_after_their_last_failure() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=1, backoff=1.0, clock=clock)
    for i in range(100):
        throttle.failed(f"10.0.0.{i}", f"user{i}")
    assert throttle.tracked() == (100, 100)
    clock.now += FORGET_AFTER + 1
    throttle.failed("10.1.1.1", "someone")
    assert throttle.tracked() == (1, 1)


def test_records_are_capped() -> None:
    throttle = LoginThrottle(free=1, backoff=1.0, clock=Clock())
    for i in range(MAX_TRACKED + 50):
        throttle.failed(f"p{i}", f"u{i}")
    assert throttle.tracked() == (MAX_TRACKED, MAX_TRACKED)


@pytest.mark.parametrize(
    ("user", "shown"),
    [("admin", "'admin'"), ("s3cret-pw", "an unknown user (#"), ("", "an unknown user (#")],
)
def test_only_known_account_names_are_logged(
    caplog: pytest.LogCaptureFixture, user: str, shown: str
) -> None:
    creds = ThrottledCredentials(Credentials([("admin", "s3cret-pw")]), LoginThrottle())
    creds.peer = "10.0.0.1"
    with caplog.at_level(logging.WARNING, logger="pymprpc.server"):
        assert not creds.check(user, "wrong")
    (record,) = caplog.records
    text = record.getMessage()
    assert f"failed login as {shown}" in text
    assert "s3cret-pw" not in text  # the password, typed as a user name or not
