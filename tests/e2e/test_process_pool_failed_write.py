"""A worker that ends while the server still has its results unread, found by a failed
write of the next call: the results it sent settle their calls (once), the call it was
running fails with WorkerDied, and the call whose write failed runs on its replacement.

The test holds the event loop (a blocking wait) from the moment the third call's write
is due until the worker has sent the first call's result and closed its end, so the
server learns of the end by that write, before it reads anything. (If the first result
arrived already in the loop pass that scheduled the write, the read comes first and the
test passes without reaching the path; it cannot fail for it. Without the fix it failed
3 runs of 3.)"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from pymprpc.errors import RPCRuntimeError
from pymprpc.server.workers import ProcessPool, TargetTable
from pymprpc.server.workers import pool as pool_module

pytestmark = pytest.mark.timeout(60)


def record(path: str, tag: str, delay: float = 0.0) -> str:
    """Note that `tag` ran (once per run), and return it (after `delay` seconds)."""
    time.sleep(delay)
    with open(path, "a") as f:
        f.write(tag + "\n")
    return tag


def hang_up(marker: str) -> str:
    """Close every descriptor of this worker (its channel to the server among them),
    then say so in `marker`: the worker ends when it tries to send this result."""
    os.closerange(3, 65536)
    Path(marker).write_text(str(os.getpid()))
    return "never delivered"


def test_results_sent_before_a_failed_write_settle_their_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every call is "short", so the pool sends the next call to the busy worker at once
    # (its write is what fails) instead of queueing it.
    monkeypatch.setattr(pool_module, "SHORT_CALL", 3600.0)
    log = str(tmp_path / "ran")
    marker = tmp_path / "hung-up"

    async def main() -> None:
        targets = TargetTable()
        targets.publish("record", record)
        targets.publish("hang_up", hang_up)
        pool = ProcessPool(targets, 1, 0.0)
        try:
            assert await pool.run("record", "record", (), [log, "warm"], {}) == "warm"
            # `first` takes a moment: its result cannot arrive before the third call's
            # write is due (two loop passes), even on a busy machine.
            first = asyncio.ensure_future(pool.run("record", "record", (), [log, "first", 0.2], {}))
            hung = asyncio.ensure_future(pool.run("hang_up", "hang_up", (), [str(marker)], {}))
            (worker,) = pool._workers
            while len(worker.inflight) < 2 or worker.out or worker.write_scheduled:
                await asyncio.sleep(0)  # until both are written to the one worker, in order
            # The next call to a busy worker is written at the end of a loop pass: send it
            # now, so that its write is due before the loop next reads anything.
            third = asyncio.ensure_future(pool.run("record", "record", (), [log, "third"], {}))
            await asyncio.sleep(0)
            assert worker.write_scheduled and len(worker.inflight) == 3
            # Hold the loop: the worker runs `first`, sends its result, then hangs up.
            deadline = time.monotonic() + 30
            while not marker.exists():
                assert time.monotonic() < deadline, "the worker never hung up"
                time.sleep(0.005)
            assert await asyncio.wait_for(first, 30) == "first"
            with pytest.raises(RPCRuntimeError, match="hang_up"):
                await asyncio.wait_for(hung, 30)
            assert await asyncio.wait_for(third, 30) == "third"
        finally:
            pool.shutdown()

    asyncio.run(main())
    # Each ran once: `first` was answered, not run again; `third` ran on the replacement.
    assert Path(log).read_text().split() == ["warm", "first", "third"]
