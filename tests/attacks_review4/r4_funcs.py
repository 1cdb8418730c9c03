"""Module-level functions for the review4 attacks (a pool worker imports them by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from attacks_pool.pool_funcs import fork_and_die

from pymprpc import current_call


def p_echo(x: Any) -> Any:
    return ["p", x]


def p_sleep(seconds: float, tag: Any) -> Any:
    time.sleep(seconds)
    return ["p-slept", tag]


def t_echo(x: Any) -> Any:
    return ["t", x]


def t_sleep(seconds: float, tag: Any) -> Any:
    time.sleep(seconds)
    return ["t-slept", tag]


def publish(tmp: str, tag: str) -> None:
    p = Path(tmp)
    part = p / f".{tag}.{os.getpid()}"
    part.write_text(str(os.getpid()))
    part.rename(p / f"{tag}.pid")


def wait_go(tmp: str, tag: str, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if (Path(tmp) / f"{tag}.go").exists():
            return True
        time.sleep(0.002)
    return False


def ctx_loop(tmp: str, tag: str, n: int) -> Any:
    """Publishes its pid, then asks for its context (the first ask is a round trip to the
    server) and reads it `n` times."""
    publish(tmp, tag)
    out = None
    for _ in range(n):
        ctx = current_call()
        out = [ctx.id, ctx.method, dict(ctx.metadata)]
    return out


def ctx_after_go(tmp: str, tag: str) -> Any:
    publish(tmp, tag)
    wait_go(tmp, tag)
    ctx = current_call()
    return [ctx.id, ctx.method]


def big_result(tmp: str, tag: str, n: int) -> Any:
    publish(tmp, tag)
    return b"z" * n


def big_str_result(tmp: str, tag: str, n: int) -> Any:
    publish(tmp, tag)
    return ["s" * n, tag]


def spawn_then_exit(tmp: str, seconds: float) -> Any:
    """Forks a child that keeps the worker's descriptors open, then `os._exit(7)`s."""
    return fork_and_die(tmp, seconds, status=7)


def popen_then_exit(tmp: str, seconds: float) -> Any:
    """subprocess.Popen with close_fds=False and pass_fds of every open descriptor."""
    import subprocess
    import sys

    fds = [int(x) for x in os.listdir("/proc/self/fd")]
    keep = []
    for fd in fds:
        try:
            os.set_inheritable(fd, True)
            keep.append(fd)
        except OSError:
            pass
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({seconds})"],
        close_fds=False,
    )
    (Path(tmp) / "popen.pid").write_text(str(proc.pid))
    os._exit(9)


def my_pid() -> Any:
    return os.getpid()
