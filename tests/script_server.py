"""A test server script run in a subprocess of its own session, so that a test can kill
it, its workers and its process group.

The script gets its configuration as JSON in argv[1] and prints its port on a line of
its own on stdout. Handlers write `<tag>.pid` into the server's directory when they
start and wait for `<tag>.go` (or `all.go`) there: `pidfile` and `release`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procfs import descendants, wait_until


class ScriptServer:
    """`script` in a subprocess (own session), its stdout and stderr in files."""

    def __init__(
        self,
        script: Path,
        cfg: dict[str, Any],
        *,
        flags: tuple[str, ...] = (),
        prefix: str = "srv-",
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`flags`: options for the interpreter (`-W error::...`); `preexec_fn`: run in
        the child before the script starts (`os.sched_setaffinity`, say)."""
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.out = Path(self.tmp) / "stdout"
        self.err = Path(self.tmp) / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *flags, str(script), json.dumps(cfg)],
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        self.pid = self.proc.pid
        wait_until(
            lambda: self.proc.poll() is not None or self._port() is not None,
            40,
            "the server's port",
        )
        port = self._port()
        if port is None:
            raise RuntimeError(f"server did not start:\n{self.stderr()}")
        self.port = port

    def _port(self) -> int | None:
        for line in self.out.read_text().splitlines():
            if line.strip().isdigit():
                return int(line)
        return None

    def pidfile(self, tag: str, timeout: float = 30) -> int:
        """The PID the handler `tag` wrote when it started (waiting for it)."""
        path = Path(self.tmp) / f"{tag}.pid"
        wait_until(path.exists, timeout, f"handler {tag!r} to start")
        return int(path.read_text())

    def started(self, tag: str) -> bool:
        """Whether the handler `tag` has started."""
        return (Path(self.tmp) / f"{tag}.pid").exists()

    def release(self, tag: str = "all") -> None:
        """Let the handler `tag` (every waiting handler: "all") go on."""
        (Path(self.tmp) / f"{tag}.go").write_text("")

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM to the server alone; seconds until it exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        """Release every handler, stop the server, and kill whatever of it is left
        (a test that failed half-way): its process group and its descendants."""
        self.release()
        family = descendants(self.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop(20)
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in family | descendants(self.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
