"""Module-level (importable) handlers for the worker-spin attacks: the forkserver zygote
(threads running at registration and at serving) needs functions it can import."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pymprpc import current_call


def pid() -> int:
    return os.getpid()


def add(a: int, b: int) -> int:
    return a + b


def ctx(tag: str) -> dict[str, Any]:
    """What the worker sees of its call, with the caller's tag echoed back."""
    c = current_call()
    return {
        "tag": tag,
        "id": c.id,
        "method": c.method,
        "metadata": dict(c.metadata),
        "remaining": c.time_remaining(),
        "pid": os.getpid(),
    }


def mark(tmp: str, tag: str) -> None:
    """Publish this process's pid under `tag` (write, then rename: readers see it whole)."""
    part = Path(tmp) / f".{tag}.{os.getpid()}"
    part.write_text(str(os.getpid()))
    part.rename(Path(tmp) / f"{tag}.pid")


def released(tmp: str, tag: str) -> bool:
    return (Path(tmp) / f"{tag}.go").exists() or (Path(tmp) / "all.go").exists()


def block(tmp: str, tag: str) -> str:
    """Runs until the test releases `tag` (or everything)."""
    mark(tmp, tag)
    while not released(tmp, tag):
        time.sleep(0.005)
    return tag


def forever(tmp: str, tag: str) -> None:
    mark(tmp, tag)
    while True:
        time.sleep(0.05)


def size(data: bytes) -> int:
    return len(data)


def blob(n: int) -> bytes:
    return b"b" * n


def note(tmp: str, tag: str) -> str:
    """Record that this call ran (one O_APPEND write: whole, whichever worker runs it)."""
    fd = os.open(Path(tmp) / "notes", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)
    return tag


def note_and_exit(tmp: str, tag: str) -> None:
    note(tmp, tag)
    os._exit(3)


def burn(tmp: str, tag: str, seconds: float) -> float:
    """Busy for `seconds` of wall time; returns the CPU seconds this process got."""
    mark(tmp, tag)
    start, end = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return time.process_time() - start


def osexit() -> None:
    os._exit(3)


def affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0))
