"""The process pool when its zygote cannot be asked for a worker: the calls waiting for
one fail with a clear 404 (never hang), and a later call tries again. The pool is driven
directly, with real processes; the zygote "gone when asked" is simulated by making the
request fail, since a real zygote's exit races with the request."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pymprpc.errors import RPCRuntimeError
from pymprpc.server.workers import ProcessPool, TargetTable
from pymprpc.server.workers import pool as pool_module

pytestmark = pytest.mark.timeout(60)


# Module level: importable, so they reach workers started by the forkserver too (when the
# test process already runs threads).
def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def _gone(p: int) -> bool:
    try:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def _until(pred: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if pred():
            return
        await asyncio.sleep(0.005)  # lets the loop see the worker's end; polls state
    raise AssertionError(f"timed out waiting for {what}")


def test_a_zygote_gone_when_asked_fails_the_call_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    targets = TargetTable()
    targets.publish("add", add)
    targets.publish("pid", pid)
    pool = ProcessPool(targets, 1)

    def refuse(self: object) -> None:
        raise BrokenPipeError("the zygote is gone")

    async def main() -> None:
        pool.start(wait=True)
        worker = await pool.run("pid", "pid", (), [], {})
        with monkeypatch.context() as patch:
            patch.setattr(pool_module._Zygote, "request", refuse)
            os.kill(worker, signal.SIGKILL)
            await _until(lambda: _gone(worker), "the worker to die")
            await _until(lambda: not pool._workers, "the pool to see it")
            with pytest.raises(RPCRuntimeError) as info:
                await asyncio.wait_for(pool.run("add", "add", (), [1, 2], {}), 30)
            assert info.value.exception == "WorkerUnavailable"
            assert "'add' was not run" in str(info.value) and "call again" in str(info.value)
        assert await asyncio.wait_for(pool.run("add", "add", (), [1, 2], {}), 30) == 3

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
