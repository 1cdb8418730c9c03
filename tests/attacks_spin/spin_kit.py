"""Kit for the worker-spin attacks: spin_server.py in a subprocess (its own session, so a
test can kill it, its workers and its process group), and what /proc says about a
process (CPU seconds, voluntary context switches, liveness, descendants: `procfs`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from procfs import (
    TICK,
    alive,
    cpu_seconds,
    descendants,
    ppid,
    voluntary_switches,
    wait_until,
)
from script_server import ScriptServer

from pymprpc import RPC, AsyncRPC

HERE = Path(__file__).parent

__all__ = [
    "SpinSrv",
    "alive",
    "cpu_seconds",
    "descendants",
    "ppid",
    "spinning",
    "voluntary_switches",
    "wait_until",
]


def spinning(pid: int, timeout: float = 10.0) -> None:
    """Wait until `pid` is seen using CPU on its own (a worker polling for calls): at
    least 5 clock ticks more while the test sends it nothing."""
    start = cpu_seconds(pid)
    wait_until(lambda: cpu_seconds(pid) >= start + 5 / TICK, timeout, f"{pid} to spin")


class SpinSrv(ScriptServer):
    """spin_server.py in a subprocess (own session), stdout and stderr in files."""

    def __init__(self, *, taskset: set[int] | None = None, **cfg: Any) -> None:
        """`taskset`: the CPUs the process may use from its start (as `taskset` sets
        them); `cpus` in `cfg`: set by the server's main() after its imports."""
        super().__init__(
            HERE / "spin_server.py",
            cfg,
            prefix="atkspin-",
            preexec_fn=None if taskset is None else lambda: os.sched_setaffinity(0, taskset),
        )

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def rpc(self, **options: Any) -> RPC:
        options.setdefault("timeout", 60)
        return RPC(self.url, **options)

    def arpc(self, **options: Any) -> AsyncRPC:
        options.setdefault("timeout", 60)
        return AsyncRPC(self.url, **options)

    def children_after_close(self) -> list[Any]:
        line = [x for x in self.stdout().splitlines() if x.startswith("CHILDREN_AFTER_CLOSE")]
        assert line, self.stdout() + self.stderr()
        return list(json.loads(line[0].split(" ", 1)[1]))
