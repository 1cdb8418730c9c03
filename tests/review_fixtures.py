"""The independent reviews' fixtures (tests/attacks_review5, tests/attacks_review6):
fail a test on any ERROR logged by asyncio or pymprpc (a handler's own "raised" or
"answered 405" log aside, and unless it is marked `logs_errors`) or any thread exception;
`loop`, the loop kind a test runs on; `LoopServer` and `client_run`, a server and a
client on a loop of either kind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc import Server


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


class LoopServer:
    """A server serving on its own loop (asyncio or uvloop) in a thread: `ready` is set
    once it listens (or failed to start: `error`)."""

    def __init__(self, server: Server, loop: str) -> None:
        self.server = server
        self.loop_kind = loop
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            try:
                await self.server.start()
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(BaseException):
            if self.loop_kind == "uvloop":
                import uvloop

                uvloop.run(main())
            else:
                asyncio.run(main())

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.port}"


def client_run(loop: str, coro: Any, timeout: float = 60) -> Any:
    """Run `coro` to its end on a new asyncio or uvloop loop, within `timeout` s."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    if loop == "uvloop":
        import uvloop

        return uvloop.run(bounded())
    return asyncio.run(bounded())
