"""`python -m bench.instructions server|client [--typed] [--conns N] [--pipeline K]`:
instructions per call under callgrind, deterministic whatever else runs on the machine.

The in-process workloads of `bench.hotpath` (the server) and `bench.clientpath` (the
async client) run under `valgrind --tool=callgrind` twice, at 4,000 and 24,000 calls;
the difference of the two totals over the 20,000 calls between them is the cost of a
call, without start-up and warm-up. W2's shape is `--conns 1 --pipeline 64` (the
default), fan-in's `--conns 200 --pipeline 1`. Needs valgrind (Debian: `apt-get install
valgrind`); takes about a minute per figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SHORT, LONG = 4_000, 24_000


def run_once(side: str, typed: bool, calls: int, conns: int, pipeline: int) -> None:
    """The measured workload alone (what runs under callgrind)."""
    if side == "server":
        from bench import hotpath

        hotpath.run_loop(hotpath.measure_pymprpc(conns, calls, False, pipeline, typed=typed), False)
    else:
        from bench import clientpath

        rounds = max(1, calls // (conns * pipeline))
        clientpath.run_loop(
            clientpath.measure_pymprpc(conns, rounds, typed, False, pipeline), False
        )


def total(side: str, typed: bool, calls: int, conns: int, pipeline: int) -> int:
    """Callgrind's instruction total for one run of `calls` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [sys.executable, "-m", "bench.instructions", side, "--run-once", str(calls)]
        cmd += ["--conns", str(conns), "--pipeline", str(pipeline)] + (["--typed"] if typed else [])
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
    parser.add_argument("--typed", action="store_true", help="the generated typed path")
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=64)
    parser.add_argument("--run-once", type=int, metavar="CALLS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_once:
        run_once(args.side, args.typed, args.run_once, args.conns, args.pipeline)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    shape = (args.side, args.typed)
    short = total(*shape, SHORT, args.conns, args.pipeline)
    long = total(*shape, LONG, args.conns, args.pipeline)
    what = "typed" if args.typed else "untyped"
    print(
        f"{args.side}, {what}, {args.conns} connection(s) x {args.pipeline} in flight: "
        f"{(long - short) / (LONG - SHORT):,.0f} instructions per call"
    )


if __name__ == "__main__":
    main()
