"""`python -m bench.poolphases [--calls N]`: where the wall time of one sequential call
to the process pool goes, step by step, in the server and in its worker.

It runs `bench.poolcost --in-process`'s W1 shape (the server's connection handler fed
one `padd` at a time through a fake transport, once the reply to the last one was
written; the workers are real processes) with time stamps taken at each step:

- in the server: the read that brings the call (`data_received`), its frame written
  to the worker (`ProcessPool._send`), the loop entering and leaving its wait for I/O,
  the worker's result read (`ProcessPool._on_readable`), the reply written;
- in the worker: its wait for the call over, the function's run begun and ended, the
  result sent.

The methods are wrapped from outside (this is a measuring tool, not a test): the
worker's through the module the pool's zygote is forked from (this process starts no
thread first, so the zygote is forked, not started by a forkserver). The worker appends
its stamps to a file every 100 calls. Medians and the 10th and 90th
percentiles of each step over the measured calls, in microseconds; the clocks of the
two processes are both `time.perf_counter` (CLOCK_MONOTONIC on Linux), so the hops
between them are comparable.
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import poolcost
from pymprpc.server.handler import ConnectionHandler
from pymprpc.server.workers import child
from pymprpc.server.workers.pool import ProcessPool

clock = time.perf_counter
_DUMP_EVERY = 100  # the worker's stamps written in batches (a file write per call would
# weigh on what it measures); the last partial batch is lost, so measure many calls


class _ServerStamps:
    """The server's time stamps, one list per step, wrapped into the classes that take
    them."""

    def __init__(self) -> None:
        self.read: list[float] = []
        self.sent: list[float] = []
        self.wait_in: list[float] = []
        self.wait_out: list[float] = []
        self.result: list[float] = []
        self.replied: list[float] = []

    def install(self) -> None:
        stamps = self
        data_received = ConnectionHandler.data_received
        send = ProcessPool._send
        on_readable = ProcessPool._on_readable
        select = poolcost._CountingSelector.select
        write = poolcost._FakeTransport.write

        def stamped_data_received(handler: Any, data: bytes) -> None:
            stamps.read.append(clock())
            data_received(handler, data)

        def stamped_send(pool: Any, worker: Any, call: Any) -> None:
            send(pool, worker, call)
            stamps.sent.append(clock())

        def stamped_on_readable(pool: Any, worker: Any) -> None:
            stamps.result.append(clock())
            on_readable(pool, worker)

        def stamped_select(selector: Any, timeout: float | None = None) -> Any:
            entered = clock()
            events = select(selector, timeout)
            stamps.wait_in.append(entered)
            stamps.wait_out.append(clock())
            return events

        def stamped_write(transport: Any, data: Any) -> None:
            stamps.replied.append(clock())
            write(transport, data)

        ConnectionHandler.data_received = stamped_data_received  # type: ignore[method-assign]
        ProcessPool._send = stamped_send  # type: ignore[method-assign]
        ProcessPool._on_readable = stamped_on_readable  # type: ignore[method-assign]
        poolcost._CountingSelector.select = stamped_select  # type: ignore[method-assign]
        poolcost._FakeTransport.write = stamped_write  # type: ignore[method-assign]


def _install_worker_stamps(directory: str) -> None:
    """Stamp the worker's steps; each worker appends them to `directory/<pid>` every
    `_DUMP_EVERY` calls (one line per call: woke, run begun, run ended, result sent):
    the pool kills its workers when it shuts down."""
    rows: list[tuple[float, float, float, float]] = []
    now: dict[str, float] = {}
    run_one = child._Serving._run_one
    send_all = child._send_all
    init = child._Serving.__init__

    def stamped_init(serving: Any, *args: Any, **kwargs: Any) -> None:
        init(serving, *args, **kwargs)
        wait = serving._wait  # its Waiter's: the stamp goes right after it

        def stamped_wait() -> None:
            wait()
            now["woke"] = clock()

        serving._wait = stamped_wait

    def stamped_run_one(serving: Any, call_id: int, body: Any, buffers: Any) -> Any:
        now["begun"] = clock()
        frames = run_one(serving, call_id, body, buffers)
        now["ended"] = clock()
        return frames

    def stamped_send_all(sock: Any, buffers: Any) -> None:
        send_all(sock, buffers)
        rows.append((now["woke"], now["begun"], now["ended"], clock()))
        if len(rows) == _DUMP_EVERY:
            with open(Path(directory, str(os.getpid())), "a") as out:
                out.writelines(" ".join(repr(x) for x in row) + "\n" for row in rows)
            rows.clear()

    child._Serving.__init__ = stamped_init  # type: ignore[method-assign]
    child._Serving._run_one = stamped_run_one  # type: ignore[method-assign]
    child._send_all = stamped_send_all


def _after(times: list[float], t: float) -> float | None:
    """The first of `times` (sorted) after `t`."""
    i = bisect.bisect(times, t)
    return times[i] if i < len(times) else None


def _line(label: str, values: list[float]) -> str:
    xs = sorted(values)
    if not xs:
        return f"  {label:44} (no samples)"
    p10, p90 = xs[len(xs) // 10], xs[len(xs) * 9 // 10]
    return f"  {label:44} {statistics.median(xs) * 1e6:7.1f}  ({p10 * 1e6:.1f}-{p90 * 1e6:.1f})"


def main(calls: int) -> None:
    server = _ServerStamps()
    server.install()
    with tempfile.TemporaryDirectory() as directory:
        _install_worker_stamps(directory)
        # One round: `add` then `padd` (poolcost's pair); only the pool calls are read.
        poolcost._in_process(calls, 1, False, 1, "w1")
        worker_rows = [
            tuple(float(x) for x in line.split())
            for path in Path(directory).iterdir()
            for line in path.read_text().splitlines()
            if line.strip()
        ]
    # A call's row is the first whose result was sent after the server sent the call (a
    # spinning worker may see the call before the server's send returns).
    worker_rows.sort(key=lambda row: row[3])
    results_sent = [row[3] for row in worker_rows]
    steps: dict[str, list[float]] = {
        "read -> frame written to the worker": [],
        "frame written -> server waits for I/O": [],
        "frame written -> worker has it": [],
        "worker: awake -> function begins": [],
        "worker: function begins -> returns": [],
        "worker: returns -> result sent": [],
        "worker's result sent -> server resumes": [],
        "server's wait for I/O (the sleep)": [],
        "server resumes -> reading the result": [],
        "result read -> reply written": [],
        "reply written -> next read": [],
        "whole call (read -> next read)": [],
    }
    # The pool calls: the last `calls` frames sent (padd runs after add).
    for sent in server.sent[-calls:]:
        read = server.read[bisect.bisect(server.read, sent) - 1]
        entered = _after(server.wait_in, sent)
        result = _after(server.result, sent)
        replied = _after(server.replied, sent)
        next_read = _after(server.read, sent)
        i = bisect.bisect(results_sent, sent)
        if None in (entered, result, replied, next_read) or i >= len(worker_rows):
            continue
        assert entered is not None and result is not None
        assert replied is not None and next_read is not None
        w_woke, w_begun, w_ended, w_sent = worker_rows[i]
        left = server.wait_out[server.wait_in.index(entered)]
        steps["read -> frame written to the worker"].append(sent - read)
        steps["frame written -> server waits for I/O"].append(entered - sent)
        steps["frame written -> worker has it"].append(w_woke - sent)
        steps["worker: awake -> function begins"].append(w_begun - w_woke)
        steps["worker: function begins -> returns"].append(w_ended - w_begun)
        steps["worker: returns -> result sent"].append(w_sent - w_ended)
        steps["worker's result sent -> server resumes"].append(left - w_sent)
        steps["server's wait for I/O (the sleep)"].append(left - entered)
        steps["server resumes -> reading the result"].append(result - left)
        steps["result read -> reply written"].append(replied - result)
        steps["reply written -> next read"].append(next_read - replied)
        steps["whole call (read -> next read)"].append(next_read - read)
    print(f"\none sequential pool call, {calls} calls, µs: median (10th-90th percentile)")
    for label, values in steps.items():
        print(_line(label, values))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    main(parser.parse_args().calls)
