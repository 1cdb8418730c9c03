"""`run_forever()` in a process of its own receiving SIGTERM / SIGINT, as systemd,
Kubernetes and a terminal send them. README: run_forever serves "until Ctrl-C /
SIGTERM" then shuts down gracefully; "Workers ignore SIGINT and SIGTERM, so Ctrl-C or a
SIGTERM to the whole process group (what systemd sends) lets running pool calls finish
within the grace period; the server then kills whatever still runs, and the workers have
exited when close() returns"; docs/protocol.md "Shutdown": "Every wait is bounded ... and
run_forever() returns anyway"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymprpc import RPC
from pymprpc.errors import CancelledError, ConnectionLostError

from .kit import wait_until

SCRIPT = Path(__file__).with_name("lifecycle_server.py")
ROOT = Path(__file__).resolve().parents[2]


def _descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(d)] = int(fields[1])
    out: set[int] = set()
    grew = True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pid not in out and (pp == root or pp in out):
                out.add(pid)
                grew = True
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Proc:
    """lifecycle_server.py in a session of its own."""

    def __init__(self, **cfg: Any) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="r26-"))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "runtime"), str(ROOT)]))
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), json.dumps(cfg), str(self.dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.url = f"tcp://127.0.0.1:{int(line)}"
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def call(self, name: str, tag: str, *args: Any) -> None:
        """Call `name(tag, *args)` in a thread, once started on the server (its pid file)."""

        def run() -> None:
            try:
                with RPC(self.url) as rpc:
                    got = getattr(rpc, name)(tag, *args)
                    if name in ("ticks", "slow_finally"):
                        got = sum(1 for _ in got)
                    self.results[tag] = got
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                self.results[tag] = exc

        t = threading.Thread(target=run)
        t.start()
        self.threads.append(t)
        wait_until((self.dir / f"{tag}.pid").exists, 20, f"{tag} to start")

    def signal(self, sig: int, group: bool) -> None:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def wait(self, bound: float) -> tuple[int, str, str, float]:
        began = time.monotonic()
        try:
            out, err = self.proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
            raise AssertionError(f"run_forever did not return within {bound}s:\n{err}") from None
        for t in self.threads:
            t.join(15)
        return self.proc.returncode, out, err, time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


def _clean(err: str) -> bool:
    return "Traceback" not in err and "ERROR" not in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("group", [True, False], ids=["group", "main-only"])
def test_signal_lets_running_calls_of_every_executor_finish(sig: str, group: bool) -> None:
    """Calls on every executor shorter than the grace period, the signal sent to the
    process group (systemd, a terminal's Ctrl-C) or to the server alone (kill, docker
    stop): every call returns its value, run_forever returns, exit status 0, nothing
    logged at ERROR, no worker left."""
    p = Proc(grace=10, workers=3)
    try:
        p.call("sleep_async", "a", 1.5)
        p.call("sleep_thread", "t", 1.5)
        p.call("sleep_proc", "p", 1.5)
        p.call("sleep_proc", "p2", 1.5)
        below = _descendants(p.proc.pid)
        p.signal(getattr(signal, sig), group)
        rc, out, err, _ = p.wait(10 + 10)
    finally:
        p.kill()
    assert p.results == {"a": "a", "t": "t", "p": "p", "p2": "p2"}
    assert rc == 0, err
    assert "RETURNED" in out
    assert _clean(err), err
    assert below and not any(_alive(pid) for pid in below)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_signal_with_calls_outliving_the_grace_period(sig: str, twice: bool, uvloop: bool) -> None:
    """Calls that will not end (a long coroutine, a thread blocked for an hour, a pool
    call sleeping and one spinning, an endless stream) and a signal sent once or twice in
    quick succession to the whole group: run_forever returns within grace + a few
    seconds with status 0, the callers are answered 407, nothing is logged at ERROR, and
    every worker is gone."""
    grace = 1.5
    p = Proc(grace=grace, workers=2, uvloop=uvloop)
    try:
        p.call("sleep_async", "a", 600)
        p.call("sleep_thread", "t", 3600)
        p.call("sleep_proc", "p", 600)
        p.call("spin_proc", "s")
        p.call("ticks", "k")
        below = _descendants(p.proc.pid)
        p.signal(getattr(signal, sig), True)
        if twice:
            time.sleep(0.2)
            p.signal(getattr(signal, sig), True)
        rc, out, err, took = p.wait(grace + 15)
    finally:
        p.kill()
    assert took < grace + 6, (took, err)
    assert rc == 0, err
    assert "RETURNED" in out
    assert _clean(err), err
    assert set(p.results) == {"a", "t", "p", "s", "k"}
    wrong = {k: v for k, v in p.results.items() if not isinstance(v, CancelledError)}
    assert not wrong, wrong
    assert below and not any(_alive(pid) for pid in below)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("handler", ["stubborn", "slow_finally"])
def test_signal_with_a_handler_resisting_cancellation_still_exits(handler: str) -> None:
    """A coroutine swallowing CancelledError, or a stream whose `finally` awaits an hour:
    run_forever still returns within grace + max(1, grace) + a little, status 0, with a
    WARNING (not an ERROR) naming the call; its client's call ends (it does not hang)."""
    grace = 1
    p = Proc(grace=grace)
    try:
        p.call(handler, "x")
        p.signal(signal.SIGTERM, True)
        rc, out, err, took = p.wait(grace + 15)
    finally:
        p.kill()
    assert took < grace + max(1, grace) + 5, (took, err)
    assert rc == 0, err
    assert "RETURNED" in out
    assert _clean(err), err
    assert "WARNING" in err
    assert isinstance(p.results["x"], (CancelledError, ConnectionLostError))


@pytest.mark.timeout(60)
def test_threads_left_running_do_not_hold_the_process() -> None:
    """A thread-pool call blocked for an hour: the process still exits once run_forever
    returns (README: "Pool threads are daemons: one still running does not hold the
    process open after shutdown")."""
    p = Proc(grace=0.5)
    try:
        p.call("sleep_thread", "t", 3600)
        p.signal(signal.SIGTERM, False)
        rc, out, err, took = p.wait(15)
    finally:
        p.kill()
    assert rc == 0, err
    assert "RETURNED" in out
    threads = json.loads(out.split("THREADS", 1)[1])
    assert threads  # it was still running when run_forever returned
    assert took < 0.5 + 6
