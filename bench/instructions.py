"""`python -m bench.instructions server|client [--typed | --floor | --stream] [--uvloop]
[--conns N] [--pipeline K]`: instructions per call under callgrind, deterministic whatever else runs
on the machine.

The in-process workloads of `bench.hotpath` (the server) and `bench.clientpath` (the
async client) run under `valgrind --tool=callgrind` twice, at 4,000 and 24,000 calls;
the difference of the two totals over the 20,000 calls between them is the cost of a
call, without start-up and warm-up. W2's shape is `--conns 1 --pipeline 64` (the
default), fan-in's `--conns 200 --pipeline 1`. Needs valgrind (Debian: `apt-get install
valgrind`); takes about a minute per figure. `--floor` counts the floor's side instead
(`floor-task` for the server), `--uvloop` runs the loop on uvloop.

`--stream` counts W3's shape instead, per stream item: the measured side (its `count`
stream, or `AsyncRPC` reading it) runs under callgrind against the other side in a
process of its own over 127.0.0.1, streams of 20,000 and 120,000 items after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from typing import Any

SHORT, LONG = 4_000, 24_000
STREAM_SHORT, STREAM_LONG = 20_000, 120_000
WARM_UP_ITEMS = 2_000


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


async def stream_client(port: int, items: int) -> None:
    """Read a warm-up stream, then one of `items` items, from the server on `port`."""
    from pymprpc.client import AsyncRPC

    for _ in range(1500):  # the server may still be starting (under callgrind: slowly)
        try:
            rpc = AsyncRPC(f"tcp://127.0.0.1:{port}")
            await rpc.connect()
            break
        except OSError:
            await asyncio.sleep(0.2)
    else:
        raise RuntimeError(f"no server on port {port}")
    async for _ in await rpc.count(WARM_UP_ITEMS):
        pass
    n = 0
    async for _ in await rpc.count(items):
        n += 1
    assert n == items
    await rpc.stop()
    await rpc.close()


def stream_server(port: int, uvloop: bool) -> None:
    """Serve `count` (bench.servers' W3 stream) on `port` until a client calls `stop`."""
    from bench import hotpath
    from pymprpc.server import Server

    async def main() -> None:
        done = asyncio.Event()
        server = Server(("127.0.0.1", port), timeout=None)

        @server.register_function()
        async def count(n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        @server.register_function()
        async def stop() -> None:
            asyncio.get_running_loop().call_later(0.05, done.set)  # after the reply

        async with server:
            await done.wait()

    hotpath.run_loop(main(), uvloop)


def stream_total(side: str, uvloop: bool, items: int) -> int:
    """Callgrind's instruction total for `side` of one W3 run of `items` items."""
    from bench import hotpath
    from bench.__main__ import free_port

    port = free_port()
    flags = ["--uvloop"] if uvloop else []
    measured = [sys.executable, "-m", "bench.instructions", side, "--stream", *flags]
    measured += ["--run-once", str(items), "--port", str(port)]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *measured]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if side == "server":
                hotpath.run_loop(stream_client(port, items), uvloop)
            else:
                stream_server(port, uvloop)
        except BaseException:
            proc.kill()  # it would wait for ever for its peer
            proc.wait()
            raise
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError(f"the measured {side} failed: {err.decode()[-2000:]}")
        with open(out) as f:
            found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if found is None:
        raise RuntimeError("callgrind wrote no total")
    return int(found.group(1))


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
    what.add_argument("--stream", action="store_true", help="W3's shape, per stream item")
    parser.add_argument("--run-once", type=int, metavar="CALLS", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    how = [f"--{flag}" for flag in ("typed", "floor", "uvloop") if getattr(args, flag)]
    if args.run_once and args.stream:
        if args.side == "client":
            from bench import hotpath

            hotpath.run_loop(stream_client(args.port, args.run_once), args.uvloop)
        else:
            stream_server(args.port, args.uvloop)
        return
    if args.run_once:
        run_once(args.side, how, args.run_once, args.conns, args.pipeline)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.stream:
        short = stream_total(args.side, args.uvloop, STREAM_SHORT)
        long = stream_total(args.side, args.uvloop, STREAM_LONG)
        loop = "uvloop" if args.uvloop else "asyncio"
        per_item = (long - short) / (STREAM_LONG - STREAM_SHORT)
        print(f"{args.side}, W3 stream, {loop}: {per_item:,.0f} instructions per item")
        return
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
