"""`python -m bench.instructions server|client [--typed | --floor] [--uvloop] [--conns N]
[--pipeline K]`: instructions per call under callgrind, deterministic whatever else runs
on the machine.

The in-process workloads of `bench.hotpath` (the server) and `bench.clientpath` (the
async client) run under `valgrind --tool=callgrind` twice, at 4,000 and 24,000 calls;
the difference of the two totals over the 20,000 calls between them is the cost of a
call, without start-up and warm-up. W2's shape is `--conns 1 --pipeline 64` (the
default), fan-in's `--conns 200 --pipeline 1`. Needs valgrind (Debian: `apt-get install
valgrind`); takes about a minute per figure. `--floor` counts the floor's side instead
(`floor-task` for the server), `--uvloop` runs the loop on uvloop.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from typing import Any

SHORT, LONG = 4_000, 24_000


def run_once(side: str, how: list[str], calls: int, conns: int, pipeline: int) -> None:
    """The measured workload alone (what runs under callgrind)."""
    typed, uvloop = "--typed" in how, "--uvloop" in how
    main: Coroutine[Any, Any, Any]
    if side == "server":
        from bench import hotpath

        if "--floor" in how:
            main = hotpath.measure_floor(conns, calls, pipeline)
        else:
            main = hotpath.measure_pymprpc(conns, calls, False, pipeline, typed=typed)
        hotpath.run_loop(main, uvloop)
    else:
        from bench import clientpath

        rounds = max(1, calls // (conns * pipeline))
        if "--floor" in how:
            main = clientpath.measure_floor(conns, rounds, pipeline)
        else:
            main = clientpath.measure_pymprpc(conns, rounds, typed, False, pipeline)
        clientpath.run_loop(main, uvloop)


def total(side: str, how: list[str], calls: int, conns: int, pipeline: int) -> int:
    """Callgrind's instruction total for one run of `calls` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [sys.executable, "-m", "bench.instructions", side, "--run-once", str(calls)]
        cmd += ["--conns", str(conns), "--pipeline", str(pipeline), *how]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        with open(out) as f:
            found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if found is None:
        raise RuntimeError("callgrind wrote no total")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("side", choices=["server", "client"])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--typed", action="store_true", help="the generated typed path")
    what.add_argument("--floor", action="store_true", help="the floor's side instead")
    parser.add_argument("--uvloop", action="store_true", help="run the loop on uvloop")
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=64)
    parser.add_argument("--run-once", type=int, metavar="CALLS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    how = [f"--{flag}" for flag in ("typed", "floor", "uvloop") if getattr(args, flag)]
    if args.run_once:
        run_once(args.side, how, args.run_once, args.conns, args.pipeline)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    short = total(args.side, how, SHORT, args.conns, args.pipeline)
    long = total(args.side, how, LONG, args.conns, args.pipeline)
    what = "floor" if args.floor else "typed" if args.typed else "untyped"
    print(
        f"{args.side}, {what}{', uvloop' if args.uvloop else ''}, {args.conns} connection(s) "
        f"x {args.pipeline} in flight: {(long - short) / (LONG - SHORT):,.0f} instructions "
        "per call"
    )


if __name__ == "__main__":
    main()
