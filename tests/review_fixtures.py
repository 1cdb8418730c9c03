"""The independent reviews' fixtures (tests/attacks_review5, tests/attacks_review6):
fail a test on any ERROR logged by asyncio or pymprpc (a handler's own "raised" or
"answered 405" log aside, and unless it is marked `logs_errors`) or any thread exception;
`loop`, the loop kind a test runs on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_tracebacks(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    seen: list[str] = []
    old = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"thread {args.thread}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    yield
    threading.excepthook = old
    if request.node.get_closest_marker("logs_errors") is not None:
        return
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for when in ("setup", "call")
        for r in caplog.get_records(when)
        if r.levelno >= logging.ERROR
        and r.name.startswith(("asyncio", "pymprpc"))
        # The handler's own report of an application error: an exception it raised, or a
        # result it returned that could not be sent.
        and not (
            r.name == "pymprpc.server.handler"
            and (" raised " in r.getMessage() or "cannot be sent, answered 405" in r.getMessage())
        )
    ]
    assert not bad + seen, f"logged errors: {bad + seen}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "logs_errors: the test's handlers raise (logged)")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)
