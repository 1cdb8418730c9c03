"""What /proc says about a process, for tests that run servers in subprocesses: its
state, parent, children and descendants, CPU time, RSS and context switches.

Imported by test modules (tests/ is on their path) and by the server scripts they run
(which put tests/ on their own path first)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold anything


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    f = stat_fields(pid)
    return f is not None and f[0] != "Z"


def ppid(pid: int) -> int | None:
    """The parent's PID, or None if the process is gone."""
    f = stat_fields(pid)
    return None if f is None else int(f[1])


def children(pid: int) -> list[dict[str, object]]:
    """The live processes whose parent is `pid`: `{"pid": ..., "state": ...}` each."""
    out: list[dict[str, object]] = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = stat_fields(int(d))
            if f is not None and int(f[1]) == pid:
                out.append({"pid": int(d), "state": f[0]})
    return out


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), 0 if it is gone."""
    f = stat_fields(pid)
    if f is None:
        return 0.0
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime: fields 14 and 15


def rss(pid: int) -> int:
    """Resident set size in bytes, 0 if the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


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


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred` until it holds; AssertionError naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
