"""Module-level (importable) handlers for the process-pool contract attacks.

Importable on purpose: the forkserver path and a user-supplied ProcessPoolExecutor need
functions they can pickle by reference. Nested handlers live in pool_server.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

COUNT = {"n": 0}


def mark(tmp: str, tag: str) -> None:
    """Publish this process's pid under `tag` (atomically: write, then rename)."""
    p = Path(tmp)
    part = p / f".{tag}.{os.getpid()}"
    part.write_text(str(os.getpid()))
    part.rename(p / f"{tag}.pid")


def released(tmp: str, tag: str) -> bool:
    p = Path(tmp)
    return (p / f"{tag}.go").exists() or (p / "all.go").exists()


def mod_block(tmp: str, tag: str) -> str:
    mark(tmp, tag)
    while not released(tmp, tag):
        time.sleep(0.005)
    return tag


def mod_pid() -> int:
    return os.getpid()


def mod_add(a: int, b: int) -> int:
    return a + b


def mod_count() -> list[int]:
    COUNT["n"] += 1
    return [os.getpid(), COUNT["n"]]


def mod_one() -> str:
    return "one"


def mod_two() -> str:
    return "two"
