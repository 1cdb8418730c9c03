"""Review10 kit: servers on 127.0.0.1 (ephemeral ports), on asyncio or uvloop in a
thread; scripts run in a process of their own (for os.fork and successive event loops);
a logger that keeps what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymprpc import Server

ROOT = Path(__file__).resolve().parents[2]


def run_script(source: str, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """Run `source` (dedented) in a fresh interpreter with this tree's runtime."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT), str(ROOT / "tests")]),
    }
    return subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Kept(logging.Handler):
    """Keeps the records of one logger (which then does not propagate)."""

    def __init__(self, name: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)
        self._old_level = self.logger.level  # restored by close(): later tests see no change
        self.logger.addHandler(self)
        self.logger.setLevel(level)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old_level)
        self.logger.propagate = True
        super().close()


@contextlib.contextmanager
def kept_log(name: str, level: int = logging.INFO) -> Iterator[Kept]:
    kept = Kept(name, level)
    try:
        yield kept
    finally:
        kept.close()


@contextlib.contextmanager
def serving_on(server: Server, kind: str = "asyncio") -> Iterator[asyncio.AbstractEventLoop]:
    """Serve `server` on a fresh asyncio or uvloop loop in a thread; stop it on exit."""
    ready = threading.Event()
    box: list[Any] = []

    async def main() -> None:
        box.append(asyncio.get_running_loop())
        try:
            await server.start()
        finally:
            ready.set()
        await server.serve_forever()

    def run() -> None:
        factory: Any = asyncio.new_event_loop
        if kind == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with contextlib.suppress(BaseException), asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box[0]
    finally:
        box[0].call_soon_threadsafe(server.stop)
        thread.join(10)
