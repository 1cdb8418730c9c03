"""Attack fixtures: fail a test on any logged traceback or ERROR, or thread exception."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    old = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"thread {args.thread}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    yield
    threading.excepthook = old
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR
    ]
    assert not bad + seen, f"logged tracebacks/errors: {bad + seen}"
