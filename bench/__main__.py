"""`python -m bench`: every workload on every system, interleaved, as a table of ratios.

Servers and clients run in separate processes over 127.0.0.1. Each round measures every
(workload, system) pair once, in turn, rows compared with each other within a few rows
of each other; each figure is the median of the rounds, with min and max, and each ratio a target
judges is the geometric mean of the rounds' own ratios, with a 90% interval (`Paired`).
Every other round runs the rows in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import wakeups
from bench.fanin import cpu_seconds, gc_log_path
from pymprpc.server.workers.pool import DEFAULT_SPIN

HERE = Path(__file__).parent
PY = sys.executable

try:
    import uvloop  # noqa: F401

    HAVE_UVLOOP = True
except ImportError:
    HAVE_UVLOOP = False

try:
    import opentelemetry.sdk

    HAVE_OTEL = True
except ImportError:
    HAVE_OTEL = False

try:
    import opentelemetry.instrumentation.grpc  # noqa: F401

    HAVE_GRPC_OTEL = HAVE_OTEL
except ImportError:
    HAVE_GRPC_OTEL = False


@dataclass(frozen=True)
class Row:
    """One line of the table: a client system against a server, on one workload."""

    workload: str
    label: str
    server: str  # key of the running server
    client: str  # client system for bench.clients
    uvloop: bool = False
    metric: str = "rate"


@dataclass
class Servers:
    procs: dict[str, tuple[subprocess.Popen[str], int]] = field(default_factory=dict)

    def start(self, key: str, system: str, uvloop: bool = False, workers: int | None = None) -> int:
        proc, port = start_server(system, uvloop, workers)
        self.procs[key] = (proc, port)
        return port

    def port(self, key: str) -> int:
        return self.procs[key][1]

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            stop_process(proc)

    def settle(self, quiet: float = 0.1, most: float = 3.0) -> float:
        """Wait until no server uses CPU (under 5% of a core over `quiet` seconds), at
        most `most` seconds; return the wait. A server may work on after its row ends
        (gRPC with OTel did, for about a second), which slowed whichever row came next
        by ~7% on 2 cores: every row now starts on an idle machine."""
        start = time.monotonic()
        pids = [proc.pid for proc, _ in self.procs.values()]
        before = sum(map(_cpu_or_zero, pids))
        while time.monotonic() - start < most:
            time.sleep(quiet)
            now = sum(map(_cpu_or_zero, pids))
            if now - before < 0.05 * quiet:
                break
            before = now
        return time.monotonic() - start


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # gone
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_line(stream: IO[str], expected: str, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if not line:
            raise RuntimeError("process exited before it was ready")
        if expected in line:
            return line
    raise RuntimeError(f"timed out waiting for {expected!r}")


def start_server(
    system: str, uvloop: bool = False, workers: int | None = None
) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    cmd = [PY, "-m", "bench.servers", system, str(port)] + (["--uvloop"] if uvloop else [])
    if workers is not None:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    assert proc.stdout is not None
    wait_line(proc.stdout, "ready")
    return proc, port


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with contextlib.suppress(OSError):
        os.unlink(gc_log_path(proc.pid))  # bench.servers' GC pause log


def measure(row: Row, port: int, seconds: float) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.clients", row.client, row.workload, str(port), str(seconds)]
    if row.uvloop:
        cmd.append("--uvloop")
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds * 10 + 120, cwd=HERE.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def measure_memory(system: str) -> float:
    """Peak RSS (MiB) of a fresh server holding 1,000 idle authenticated connections."""
    server, port = start_server(system)
    try:
        client = subprocess.Popen(
            [PY, "-m", "bench.clients", system, "mem", str(port), "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        assert client.stdout is not None and client.stdin is not None
        wait_line(client.stdout, "ready", timeout=180)
        time.sleep(0.5)
        peak = rss_kib(server.pid)["VmHWM"] / 1024
        client.stdin.close()
        client.wait(60)
        return peak
    finally:
        stop_process(server)


def rows() -> list[Row]:
    out: list[Row] = []
    for workload in ("w1", "w2", "w3", "w4"):
        out.append(Row(workload, "pymprpc", "pymprpc", "pymprpc"))
        # The rows compared with this one come within the next few rows (typed, uvloop
        # and the pool right after it, then the floor and gRPC), so that a pair shares
        # the machine's state of that minute (and a row that follows a heavy one, gRPC +
        # OTel, measured ~7% low from what that one left running).
        if workload in ("w1", "w2"):
            out.append(Row(workload, TYPED, "pymprpc-typed", "pymprpc-typed"))
        if HAVE_UVLOOP:
            out.append(Row(workload, "pymprpc + uvloop", "pymprpc-uvloop", "pymprpc", True))
        if workload != "w3":
            out.append(Row(workload + "p", POOL, "pymprpc", "pymprpc"))
        out += [
            Row(workload, "floor (asyncio + msgpack)", "floor", "floor"),
            Row(workload, "gRPC aio", "grpc", "grpc"),
        ]
        if workload == "w1":
            out.append(Row(workload, "pymprpc, sync client", "pymprpc", "pymprpc-sync"))
        if HAVE_OTEL and workload in ("w1", "w2"):
            # Server and client telemetry on every call: what tracing costs.
            out.append(Row(workload, OTEL, "pymprpc-otel", "pymprpc-otel"))
            # Spans alone, as gRPC's instrumentation records them: the peer comparison.
            out.append(Row(workload, OTEL_SPANS, "pymprpc-otel-spans", "pymprpc-otel-spans"))
            if HAVE_GRPC_OTEL:
                out.append(Row(workload, GRPC_OTEL, "grpc-otel", "grpc-otel"))
    out += [
        Row("w5t", "pymprpc, thread pool", "pymprpc", "pymprpc"),
        Row("cpu", "pymprpc, 1 worker", "pymprpc-1w", "pymprpc"),
        Row("cpu", "pymprpc, 2 workers", "pymprpc-2w", "pymprpc"),
    ]
    return out


POOL = "pymprpc, plain def (process pool)"
OTEL = "pymprpc + OTel"
OTEL_SPANS = "pymprpc + OTel, spans only"
GRPC_OTEL = "gRPC aio + OTel, spans only"
TYPED = "pymprpc, typed (mprpcgen)"
TYPED_TARGET = 0.95
# Process-pool rows compare with the coroutine path on the same workload.
BASE = {"w1p": "w1", "w2p": "w2", "w4p": "w4"}
POOL_TARGETS = {"w1p": 0.6, "w2p": 0.3, "w4p": 0.6}
CPU_SCALING_TARGET = 1.6
UVLOOP_TARGET = 1.0  # pymprpc on uvloop against pymprpc on asyncio, same workload


TITLES = {
    "w1": "W1 sequential unary add, calls/s",
    "w2": "W2 64 unary adds in flight on one connection, calls/s",
    "w3": "W3 server stream of 100,000 ints, items/s",
    "w4": "W4 echo of a 1 MiB bytes value, MB/s",
    "w1p": "W1 on a plain def in the process pool, calls/s",
    "w2p": "W2 on a plain def in the process pool, calls/s",
    "w4p": "W4 on a plain def in the process pool, MB/s",
    "w5t": "W5 plain function on a thread pool, calls/s",
    "cpu": "2 ms of pure-Python work per call, 8 in flight, process pool of 1 or 2, calls/s",
    "mem": "Peak server RSS with 1,000 idle authenticated connections, MiB",
}

SHORT = {
    "w1": "W1 sequential calls/s",
    "w2": "W2 64 in flight, calls/s",
    "w3": "W3 stream, items/s",
    "w4": "W4 echo 1 MiB, MB/s",
    "w1p": "W1 sequential calls/s",
    "w2p": "W2 64 in flight, calls/s",
    "w4p": "W4 echo 1 MiB, MB/s",
    "w5t": "W5 thread pool, calls/s",
    "cpu": "CPU-bound 2 ms calls, 8 in flight, calls/s",
    "mem": "1,000 idle connections, peak RSS MiB",
}

TARGETS = {"w1": (3.0, 0.7), "w2": (10.0, 0.5), "w3": (8.0, 0.6), "w4": (1.3, 0.8)}


@dataclass(frozen=True)
class FanRow:
    """One system under the fan-in workload: `conns` connections, a call in flight on each."""

    label: str
    server: str
    client: str
    conns: int
    uvloop: bool = False

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.label, self.conns, self.uvloop)

    @property
    def name(self) -> str:
        return f"fan-in {self.conns} {'uvloop' if self.uvloop else 'asyncio'} {self.label}"


PYMPRPC, FLOOR, GRPC = "pymprpc", "floor (asyncio + msgpack)", "gRPC aio"
IDLE_CONNS, IDLE_ACTIVE, IDLE_BASE = 10_000, 1_000, 200
# The open loop's offered calls/s, as a fraction of N = 200's closed-loop calls/s
# (saturation) measured just before it: well below it, so the queues stay short.
OPEN_LOAD = 0.5
IDLE_KEY = (PYMPRPC, IDLE_CONNS, False)
# Fan-in at N = 200 against the floor: (figure, what it is, target, lower is better).
FANIN_TARGETS = (
    ("rate", "calls/s", 0.8, False),
    ("p99_us", "p99", 1.5, True),
    ("server_us", "server CPU/call", 1.3, True),
    ("client_us", "client CPU/call", 1.3, True),
)


def fanin_rows() -> list[FanRow]:
    out = []
    for conns in (200, 1000):
        for uv in (False, True) if HAVE_UVLOOP else (False,):
            suffix = "-uvloop" if uv else ""
            out.append(FanRow(PYMPRPC, "pymprpc" + suffix, "pymprpc", conns, uv))
            # The floor runs every call in its own task too: what a framework must pay.
            out.append(FanRow(FLOOR, "floor-task" + suffix, "floor", conns, uv))
    out.append(FanRow(GRPC, "grpc", "grpc", 200))  # one channel per connection: costly
    return out


def measure_fanin(
    row: FanRow, port: int, server_pid: int, seconds: float, active: int | None = None
) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.fanin", row.client, str(port), str(seconds)]
    cmd += ["--conns", str(row.conns), "--server-pid", str(server_pid)]
    if active is not None:
        cmd += ["--active", str(active)]
    if row.uvloop:
        cmd.append("--uvloop")
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds * 10 + 300, cwd=HERE.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_fanin_10k(seconds: float) -> dict[str, Any]:
    """A fresh server: N = 200 and 1,000 active connections alone, closed loop and open
    loop at half N = 200's calls/s; then 10,000 held (server RSS growth per connection,
    the idle ones from a second client process) with the same 1,000 active (see
    bench.fanin.run_held)."""
    proc, port = start_server("pymprpc")
    try:
        cmd = [PY, "-m", "bench.fanin", "pymprpc", str(port), str(seconds)]
        cmd += ["--hold", str(IDLE_CONNS), "--active", str(IDLE_ACTIVE)]
        cmd += ["--base", str(IDLE_BASE), "--load", str(OPEN_LOAD), "--server-pid", str(proc.pid)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds * 20 + 600, cwd=HERE.parent
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        sample = dict(json.loads(done.stdout.strip().splitlines()[-1]))
        closed: dict[str, Any] = sample["closed_held"]
        return sample | closed  # the closed-loop row of the fan-in table
    finally:
        stop_process(proc)


HELD_PHASES = {
    "closed_base": f"{IDLE_BASE} active, closed loop",
    "closed_active": f"{IDLE_ACTIVE:,} active, closed loop",
    "closed_held": f"{IDLE_ACTIVE:,} active of {IDLE_CONNS:,} held, closed loop",
    "open_base": f"{IDLE_BASE} active, open loop",
    "open_active": f"{IDLE_ACTIVE:,} active, open loop",
    "open_held": f"{IDLE_ACTIVE:,} active of {IDLE_CONNS:,} held, open loop",
}
HELD_FIGURES = (
    "rate",
    "p50_us",
    "p99_us",
    "server_us",
    "client_us",
    "server_longest_gc_ms",
    "client_longest_gc_ms",
)


def held_table(samples: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The idle-connection study (medians over rounds) and its verdicts."""
    med = {
        phase: {k: statistics.median(s[phase].get(k, 0.0) for s in samples) for k in HELD_FIGURES}
        for phase in HELD_PHASES
    }
    offered = statistics.median(s["offered"] for s in samples)
    kib = statistics.median(s["server_kib_per_conn"] for s in samples)
    lines = [
        "| connections | calls/s | p50 | p99 | server CPU/call | client CPU/call | "
        "longest GC pause, server / client |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase, label in HELD_PHASES.items():
        m = med[phase]
        lines.append(
            f"| {label} | {fmt(m['rate'])} | {m['p50_us'] / 1000:.1f} ms | "
            f"{m['p99_us'] / 1000:.1f} ms | {m['server_us']:.1f} µs | {m['client_us']:.1f} µs "
            f"| {m['server_longest_gc_ms']:.1f} / {m['client_longest_gc_ms']:.1f} ms |"
        )
    held, alone, base = med["open_held"], med["open_active"], med["open_base"]
    # Judged as every other ratio: the geometric mean of the rounds' ratios, see Paired
    # (each round measures both phases in one client process, one after the other).
    held_vs_base = Paired.of(
        [s["open_held"] | {"round": s["round"]} for s in samples],
        [s["open_base"] | {"round": s["round"]} for s in samples],
        "p99_us",
    )
    ratio, note = held_vs_base.estimate, held_vs_base.note(2.0, at_most=True)
    closed = med["closed_held"]["p99_us"] / med["closed_base"]["p99_us"]
    # Replies counted in the window, against what was offered: under 95%, the open loop
    # was saturated (the client fell behind) and its p99 measures a growing queue.
    kept_up = min(m["rate"] for m in (held, alone, base)) >= 0.95 * offered
    verdicts = [
        f"fan-in {IDLE_CONNS:,} held / {IDLE_ACTIVE:,} active, open loop at {fmt(offered)} "
        f"calls/s ({OPEN_LOAD:.0%} of the lower of N = {IDLE_BASE}'s and {IDLE_ACTIVE:,} "
        f"active's closed-loop calls/s): p99 "
        f"{ratio:.2f}x of N = {IDLE_BASE}'s at the same offered load (target <= 2x): "
        f"{'met' if ratio <= 2 else 'NOT met'}{note}; {kib:.1f} KiB of server RSS per held "
        f"connection"
        + ("" if kept_up else " (SATURATED: fewer replies than calls offered, see the table)"),
        f"fan-in idle cost (not a target; ratios of medians), {IDLE_ACTIVE:,} active with "
        f"{IDLE_CONNS - IDLE_ACTIVE:,} idle against alone: open-loop p99 "
        f"{held['p99_us'] / alone['p99_us']:.2f}x, server CPU "
        f"per call {held['server_us'] / alone['server_us']:.2f}x (closed loop "
        f"{med['closed_held']['server_us'] / med['closed_active']['server_us']:.2f}x), client "
        f"{held['client_us'] / alone['client_us']:.2f}x; closed-loop p99 {closed:.2f}x of N = "
        f"{IDLE_BASE}'s (not a target: Little's law, 5x the calls in flight at the same calls/s)",
    ]
    return "\n".join(lines), verdicts


def fanin_table(
    results: dict[tuple[str, int, bool], list[dict[str, Any]]],
) -> tuple[str, list[str]]:
    lines = [
        "| N | loop | system | calls/s (min-max) | p99 latency | server CPU/call | "
        "client CPU/call | vs floor: calls/s, p99, server, client |",
        "|---|---|---|---|---|---|---|---|",
    ]
    med: dict[tuple[str, int, bool], dict[str, float]] = {}
    for key, samples in results.items():
        med[key] = {
            k: statistics.median(s[k] for s in samples)
            for k in ("rate", "p99_us", "server_us", "client_us")
            if k in samples[0]
        }
    verdicts = []
    for key, samples in results.items():
        label, conns, uv = key
        m = med[key]
        rates = [s["rate"] for s in samples]
        floor = med.get((FLOOR, conns, uv))
        vs = ""
        if label == PYMPRPC and floor and key != IDLE_KEY:
            r = (
                m["rate"] / floor["rate"],
                m["p99_us"] / floor["p99_us"],
                m["server_us"] / floor["server_us"],
                m["client_us"] / floor["client_us"],
            )
            vs = f"{r[0]:.2f}x, {r[1]:.2f}x, {r[2]:.2f}x, {r[3]:.2f}x"
            if conns == 200:
                # Judged as every other ratio: round by round (see Paired).
                floors = results[FLOOR, conns, uv]
                parts, ok = [], True
                for key_, what, target, at_most in FANIN_TARGETS:
                    p = Paired.of(samples, floors, key_)
                    ok = ok and p.meets(target, at_most)
                    sign = "<=" if at_most else ">="
                    met = "met" if p.meets(target, at_most) else "NOT met"
                    note = p.note(target, at_most)
                    parts.append(f"{what} {p.estimate:.2f}x (target {sign} {target}x, {met}){note}")
                verdicts.append(
                    f"fan-in N=200 {'uvloop' if uv else 'asyncio'}, against the floor: "
                    + ", ".join(parts)
                    + f": {'met' if ok else 'NOT met'}"
                )
        n = f"{conns:,}"
        if key == IDLE_KEY:
            kib = statistics.median(s["server_kib_per_conn"] for s in samples)
            n = f"{conns:,} held, {IDLE_ACTIVE:,} active ({kib:.1f} KiB/conn)"
            active = med.get((PYMPRPC, IDLE_ACTIVE, False))
            if active:
                vs = f"p99 {m['p99_us'] / active['p99_us']:.2f}x of N = 1,000 alone"
        lines.append(
            f"| {n} | {'uvloop' if uv else 'asyncio'} | {label} | {fmt(m['rate'])} "
            f"({fmt(min(rates))}-{fmt(max(rates))}) | {m['p99_us'] / 1000:.1f} ms | "
            f"{m.get('server_us', 0):.1f} µs | {m['client_us']:.1f} µs | {vs} |"
        )
    return "\n".join(lines), verdicts


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


# Student's t for a two-sided 90% interval, by degrees of freedom (rounds - 1); past the
# table, the value for 30 (a little wider than the normal's 1.645).
T90: tuple[float, ...] = (
    *(6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782),
    *(1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711),
    *(1.708, 1.706, 1.703, 1.701, 1.699, 1.697),
)


@dataclass(frozen=True)
class Paired:
    """One row against another, round by round: what a target's verdict judges.

    Each round measures both rows one after the other, so the two share that minute of
    this shared machine, where the same client against the same server moves by a fifth
    from one run to the next (W2, quiet machine: 47k-78k calls/s over 12 runs of one
    script). The estimate is the geometric mean of the rounds' ratios (the mean of their
    logs: a ratio and its inverse are judged alike), with a 90% interval from the spread
    of those logs; the ratio of the two rows' medians is shown beside it. The estimate is
    also the ratio of the two rows' geometric means, so pairing by round decides only the
    interval (narrower when both rows of a round move together), never met / NOT met.
    """

    estimate: float
    low: float
    high: float
    of_medians: float
    rounds: int

    @classmethod
    def of(cls, a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "rate") -> Paired:
        """`a`'s figure `key` over `b`'s, paired by the round each sample was measured in.

        Raises:
            ValueError: a round measured one row and not the other, or a figure is not
                positive (a ratio of it means nothing).
        """
        by_round_a = {s["round"]: s[key] for s in a}
        by_round_b = {s["round"]: s[key] for s in b}
        if by_round_a.keys() != by_round_b.keys() or not by_round_a:
            raise ValueError(f"unpaired rounds: {sorted(by_round_a)} against {sorted(by_round_b)}")
        pairs = [(by_round_a[r], by_round_b[r]) for r in sorted(by_round_a)]
        if any(x <= 0 or y <= 0 for x, y in pairs):
            raise ValueError(f"a figure {key!r} that is not positive: {pairs}")
        logs = [math.log(x / y) for x, y in pairs]
        mean = statistics.fmean(logs)
        n = len(logs)
        half = 0.0
        if n > 1:
            t = T90[min(n - 1, len(T90)) - 1]
            half = t * statistics.stdev(logs) / math.sqrt(n)
        of_medians = statistics.median(x for x, _ in pairs) / statistics.median(y for _, y in pairs)
        return cls(math.exp(mean), math.exp(mean - half), math.exp(mean + half), of_medians, n)

    def meets(self, target: float, at_most: bool = False) -> bool:
        """Whether the estimate meets `target` (`at_most`: a cost, lower is better)."""
        return self.estimate <= target if at_most else self.estimate >= target

    def note(self, target: float, at_most: bool = False) -> str:
        """The interval, and whether it clears the target or straddles it."""
        if self.rounds < 2:
            return f" [1 round: no interval; ratio of medians {self.of_medians:.2f}]"
        clear = self.high <= target if at_most else self.low >= target
        wrong = self.low > target if at_most else self.high < target
        where = "clear" if clear else "clearly short" if wrong else "within noise"
        return (
            f" [90% interval {self.low:.2f}-{self.high:.2f}: {where}; ratio of medians "
            f"{self.of_medians:.2f}; {self.rounds} rounds]"
        )


def table(results: dict[tuple[str, str], list[dict[str, Any]]]) -> tuple[str, list[str]]:
    lines = [
        "| workload | system | median | min | max | p50 / p99 latency | vs gRPC aio | vs floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    medians: dict[tuple[str, str], float] = {}
    for (workload, label), samples in results.items():
        medians[workload, label] = statistics.median(s["rate"] for s in samples)
    for (workload, label), samples in results.items():
        rates = [s["rate"] for s in samples]
        med = medians[workload, label]
        latency = ""
        if "p50_us" in samples[0]:
            p50 = statistics.median(s["p50_us"] for s in samples)
            p99 = statistics.median(s["p99_us"] for s in samples)
            latency = f"{p50:.0f} / {p99:.0f} µs"
        vs_grpc = vs_floor = ""
        base = BASE.get(workload, workload)
        grpc = medians.get((base, "gRPC aio"))
        floor = medians.get((base, "floor (asyncio + msgpack)"))
        if workload != "mem" and label.startswith("pymprpc"):
            if grpc:
                vs_grpc = f"{med / grpc:.2f}x"
            if floor:
                vs_floor = f"{med / floor:.2f}x"
        elif workload == "mem" and label == "pymprpc":
            vs_grpc = f"{med / grpc:.2f}x" if grpc else ""
            vs_floor = f"{med / floor:.2f}x" if floor else ""
        lines.append(
            f"| {SHORT[workload]} | {label} | {fmt(med)} | {fmt(min(rates))} | "
            f"{fmt(max(rates))} | {latency} | {vs_grpc} | {vs_floor} |"
        )
        if workload in TARGETS and label == "pymprpc" and grpc and floor:
            want_grpc, want_floor = TARGETS[workload]
            vs_g = Paired.of(samples, results[workload, "gRPC aio"])
            vs_f = Paired.of(samples, results[workload, FLOOR])
            ok = vs_g.meets(want_grpc) and vs_f.meets(want_floor)
            verdicts.append(
                f"{workload}: {vs_g.estimate:.2f}x gRPC (target {want_grpc}x)"
                f"{vs_g.note(want_grpc)}, {vs_f.estimate:.2f}x floor (target {want_floor}x)"
                f"{vs_f.note(want_floor)}: {'met' if ok else 'NOT met'}"
            )
        coroutine = results.get((base, "pymprpc"))
        if workload in POOL_TARGETS and coroutine:
            want = POOL_TARGETS[workload]
            p = Paired.of(samples, coroutine)
            verdicts.append(
                f"{workload}: a plain def on the process pool at {p.estimate:.2f}x of the "
                f"coroutine path (target {want}x): {'met' if p.meets(want) else 'NOT met'}"
                + p.note(want)
            )
        if label == "pymprpc + uvloop" and (workload, "pymprpc") in results:
            p = Paired.of(samples, results[workload, "pymprpc"])
            verdicts.append(
                f"{workload}: uvloop at {p.estimate:.2f}x of asyncio (target {UVLOOP_TARGET}x): "
                f"{'met' if p.meets(UVLOOP_TARGET) else 'NOT met'}{p.note(UVLOOP_TARGET)}"
            )
    for workload in ("w1", "w2"):
        plain, grpc = medians.get((workload, "pymprpc")), medians.get((workload, "gRPC aio"))
        traced = [
            f"{label} at {medians[workload, label] / base:.2f}x of {name}"
            for label, base, name in (
                (OTEL, plain, "pymprpc"),
                (OTEL_SPANS, plain, "pymprpc"),
                (GRPC_OTEL, grpc, "gRPC aio"),
            )
            if base and (workload, label) in medians
        ]
        if traced:
            verdicts.append(
                f"{workload}: tracing every call (not a target; ratios of medians): "
                + "; ".join(traced)
            )
    for workload in ("w1", "w2"):
        if (workload, TYPED) in results and (workload, "pymprpc") in results:
            p = Paired.of(results[workload, TYPED], results[workload, "pymprpc"])
            verdicts.append(
                f"{workload}: typed at {p.estimate:.2f}x of untyped (target {TYPED_TARGET}x): "
                f"{'met' if p.meets(TYPED_TARGET) else 'NOT met'}{p.note(TYPED_TARGET)}"
            )
    one, two = results.get(("cpu", "pymprpc, 1 worker")), results.get(("cpu", "pymprpc, 2 workers"))
    if one and two:
        p = Paired.of(two, one)
        verdicts.append(
            f"cpu: 2 workers at {p.estimate:.2f}x of 1 worker (target {CPU_SCALING_TARGET}x): "
            f"{'met' if p.meets(CPU_SCALING_TARGET) else 'NOT met'}{p.note(CPU_SCALING_TARGET)}"
        )
    return "\n".join(lines), verdicts


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def write_readme(text: str) -> None:
    readme = HERE / "README.md"
    content = readme.read_text()
    start, end = "<!-- results -->", "<!-- /results -->"
    head, _, rest = content.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


SAMPLES = HERE / ".build" / "last-run.json"


def save_samples(
    args: argparse.Namespace,
    results: dict[tuple[str, str], list[dict[str, Any]]],
    fan_results: dict[tuple[str, int, bool], list[dict[str, Any]]],
    hops: dict[str, list[float]],
) -> None:
    """Every sample of this run, as measured, in `bench/.build/last-run.json`: a verdict
    found wrong later can be recomputed from the run itself, and the figures studied."""
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        "rows": [
            {"workload": w, "system": label, "samples": samples}
            for (w, label), samples in results.items()
        ],
        "fanin": [
            {"system": label, "conns": conns, "uvloop": uv, "samples": samples}
            for (label, conns, uv), samples in fan_results.items()
        ],
        "hops": hops,
    }
    SAMPLES.write_text(json.dumps(data, indent=1) + "\n")
    print(f"samples: {SAMPLES}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--runs", type=int, default=3, help="rounds (median of these)")
    parser.add_argument(
        "--only",
        nargs="*",
        help="workloads to run (w1 w2 w3 w4 w5p w5t w1p w2p w4p cpu mem fanin fanin10k)",
    )
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args()

    selected = [r for r in rows() if not args.only or r.workload in args.only]
    want_mem = not args.only or "mem" in args.only
    servers = Servers()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fan_results: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
    hops: dict[str, list[float]] = {}
    try:
        fan_rows = [r for r in fanin_rows() if not args.only or "fanin" in args.only]
        want_10k = not args.only or "fanin10k" in args.only
        for key in sorted({r.server for r in selected} | {r.server for r in fan_rows}):
            if key in ("pymprpc-otel", "pymprpc-otel-spans", "pymprpc-typed"):
                system = key
            elif key.startswith("pymprpc"):
                system = "pymprpc"
            else:
                system = key.removesuffix("-uvloop")
            # pymprpc-1w, pymprpc-2w: a process pool of that size
            workers = int(key[-2]) if key.endswith("w") and key[-2].isdigit() else None
            servers.start(key, system, uvloop=key.endswith("uvloop"), workers=workers)
        if args.runs > 1 and args.runs % 2:
            print(
                f"note: {args.runs} rounds run the rows forward {args.runs // 2 + 1} times and "
                f"in reverse {args.runs // 2}: an even number balances the two orders",
                file=sys.stderr,
            )
        for run in range(1, args.runs + 1):
            # Every other round runs the rows in reverse, so that no row of a compared
            # pair always comes first (and after the heaviest rows of the workload before).
            forward = run % 2 == 1
            for row in selected if forward else selected[::-1]:
                waited = servers.settle()
                sample = measure(row, servers.port(row.server), args.seconds) | {"round": run}
                results.setdefault((row.workload, row.label), []).append(sample)
                print(
                    f"run {run} {row.workload:<4} {row.label:<28} {fmt(sample['rate'])}"
                    + (f" (servers busy {waited:.1f} s before it)" if waited > 0.15 else ""),
                    file=sys.stderr,
                    flush=True,
                )
            if any(row.workload == "w1p" for row in selected):
                # What one more process hop costs with no framework, in the same run: the
                # ceiling W1 on the pool can reach here (bench/wakeups.py).
                # The hop with the worker asleep, and spinning as the pool's do.
                for kind, with_hop, spin in (
                    ("direct", False, 0.0),
                    ("asleep", True, 0.0),
                    ("spinning", True, DEFAULT_SPIN),
                ):
                    hops.setdefault(kind, []).append(wakeups.one_round(3000, with_hop, spin))
            for fan in fan_rows if forward else fan_rows[::-1]:
                proc, port = servers.procs[fan.server]
                servers.settle()
                sample = measure_fanin(fan, port, proc.pid, args.seconds) | {"round": run}
                fan_results.setdefault(fan.key, []).append(sample)
                print(
                    f"run {run} {fan.name:<36} {fmt(sample['rate'])}", file=sys.stderr, flush=True
                )
            if want_10k:
                sample = measure_fanin_10k(args.seconds) | {"round": run}
                fan_results.setdefault(IDLE_KEY, []).append(sample)
                print(
                    f"run {run} fan-in 10k held, 1k active: open-loop p99 "
                    f"{sample['open_held']['p99_us']:.0f} µs (N = {IDLE_BASE}: "
                    f"{sample['open_base']['p99_us']:.0f} µs, 1k alone: "
                    f"{sample['open_active']['p99_us']:.0f} µs) at {fmt(sample['offered'])} "
                    f"calls/s, {sample['server_kib_per_conn']:.1f} KiB/conn",
                    file=sys.stderr,
                    flush=True,
                )
            if want_mem:
                for system, label in (
                    ("pymprpc", "pymprpc"),
                    ("floor", "floor (asyncio + msgpack)"),
                    ("grpc", "gRPC aio"),
                ):
                    rss = measure_memory(system)
                    results.setdefault(("mem", label), []).append({"rate": rss, "round": run})
                    print(f"run {run} mem  {label:<28} {rss:.1f} MiB", file=sys.stderr, flush=True)
    finally:
        servers.stop()

    text, verdicts = table(results) if results else ("", [])
    if hops:
        direct, asleep, spinning = (
            statistics.median(hops[k]) for k in ("direct", "asleep", "spinning")
        )
        verdicts.append(
            f"w1p: one process hop with no framework, same run (bench/wakeups.py): a bare "
            f"TCP echo {direct:.0f} µs per call; through one worker process {asleep:.0f} µs "
            f"if it sleeps between calls ({direct / asleep:.2f}x), {spinning:.0f} µs if it "
            f"spins as the pool's workers do ({direct / spinning:.2f}x)"
        )
    if fan_results:
        fan_text, fan_verdicts = fanin_table(fan_results)
        text += (
            "\n\nFan-in: N connections from one asyncio client process, one `add` in flight "
            "on each; CPU per call from /proc (user + system) of each process.\n\n" + fan_text
        )
        verdicts += fan_verdicts
    if IDLE_KEY in fan_results:
        held_text, held_verdicts = held_table(fan_results[IDLE_KEY])
        text += (
            f"\n\nIdle connections ({IDLE_CONNS:,} held, `fanin10k`): one fresh server; one "
            f"client process measures on the same {IDLE_ACTIVE:,} connections throughout, a "
            f"second one holds the idle ones; closed loop: one call in flight per active "
            f"connection; open loop: calls sent round-robin at a fixed rate, latency from when "
            f"each was due.\n\n" + held_text
        )
        verdicts += held_verdicts
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    when += ", load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) at the end".format(
        *os.getloadavg()
    )
    report = (
        f"Measured {when} on {machine()}; {args.runs} rounds of {args.seconds:g} s per "
        f"measurement, default asyncio loop unless noted, length framing negotiated.\n\n"
        f"{text}\n\nTargets (pymprpc, default loop; a ratio judged is the geometric mean "
        f"of the rounds' own ratios, with its 90% interval; the table's ratio columns are "
        f"ratios of medians):\n\n" + "\n".join(f"- {v}" for v in verdicts)
    )
    print(report)
    save_samples(args, results, fan_results, hops)
    if args.write_readme:
        write_readme(report)


if __name__ == "__main__":
    main()
