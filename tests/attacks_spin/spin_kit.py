"""Kit for the worker-spin attacks: spin_server.py in a subprocess (its own session, so a
test can kill it, its workers and its process group), and what /proc says about a
process (CPU seconds, voluntary context switches, liveness, descendants)."""

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

from pymprpc import RPC, AsyncRPC

HERE = Path(__file__).parent
TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    f = stat_fields(pid)
    return f is not None and f[0] != "Z"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), 0 if it is gone."""
    f = stat_fields(pid)
    if f is None:
        return 0.0
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime: fields 14 and 15


def voluntary_switches(pid: int) -> int:
    """Times the process's threads blocked (slept) so far: a worker that sleeps until
    its next call adds one per call; one that catches the call while polling does not
    (a yield leaves the thread runnable, which the kernel counts as involuntary)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


def ppid(pid: int) -> int | None:
    f = stat_fields(pid)
    return None if f is None else int(f[1])


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to `root`."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            p = ppid(int(d))
            if p is not None:
                parent[int(d)] = p
    out: set[int] = set()
    grew = True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pid not in out and (pp == root or pp in out):
                out.add(pid)
                grew = True
    return out


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def spinning(pid: int, timeout: float = 10.0) -> None:
    """Wait until `pid` is seen using CPU on its own (a worker polling for calls): at
    least 5 clock ticks more while the test sends it nothing."""
    start = cpu_seconds(pid)
    wait_until(lambda: cpu_seconds(pid) >= start + 5 / TICK, timeout, f"{pid} to spin")


class SpinSrv:
    """spin_server.py in a subprocess (own session), stdout and stderr in files."""

    def __init__(self, *, taskset: set[int] | None = None, **cfg: Any) -> None:
        """`taskset`: the CPUs the process may use from its start (as `taskset` sets
        them); `cpus` in `cfg`: set by the server's main() after its imports."""
        self.tmp = tempfile.mkdtemp(prefix="atkspin-")
        self.out = Path(self.tmp) / "stdout"
        self.err = Path(self.tmp) / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "spin_server.py"), json.dumps(cfg)],
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=None if taskset is None else lambda: os.sched_setaffinity(0, taskset),
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

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def rpc(self, **options: Any) -> RPC:
        options.setdefault("timeout", 60)
        return RPC(self.url, **options)

    def arpc(self, **options: Any) -> AsyncRPC:
        options.setdefault("timeout", 60)
        return AsyncRPC(self.url, **options)

    def pidfile(self, tag: str, timeout: float = 30) -> int:
        path = Path(self.tmp) / f"{tag}.pid"
        wait_until(path.exists, timeout, f"handler {tag!r} to start")
        return int(path.read_text())

    def release(self, tag: str = "all") -> None:
        (Path(self.tmp) / f"{tag}.go").write_text("")

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def children_after_close(self) -> list[Any]:
        line = [x for x in self.stdout().splitlines() if x.startswith("CHILDREN_AFTER_CLOSE")]
        assert line, self.stdout() + self.stderr()
        return list(json.loads(line[0].split(" ", 1)[1]))

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM to the server alone; seconds until it exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        self.release()
        family = descendants(self.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop(20)
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        # anything of ours still around (a test failed half-way) goes too
        for pid in family | descendants(self.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
