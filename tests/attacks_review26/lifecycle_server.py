"""A server for the lifecycle tests, run in its own session by `run_forever()`.

argv[1]: JSON options (`grace`, `uvloop`, `workers`). Prints its port, then, after
run_forever() returned, `RETURNED` and the threads still alive. Handlers that block
write `<tag>.pid` into argv[2] when they start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from pymprpc import Server

cfg = json.loads(sys.argv[1])
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
where = Path(sys.argv[2])


def mark(tag: str) -> None:
    (where / f"{tag}.pid").write_text(str(os.getpid()))


def main() -> None:
    with Server(
        ("127.0.0.1", 0), grace_period=cfg.get("grace", 2), max_workers=cfg.get("workers", 2)
    ) as server:

        @server.register_function()
        async def echo(x):
            return x

        @server.register_function()
        async def sleep_async(tag, t):
            mark(tag)
            await asyncio.sleep(t)
            return tag

        @server.register_function(executor="thread")
        def sleep_thread(tag, t):
            mark(tag)
            time.sleep(t)
            return tag

        @server.register_function(executor="process")
        def sleep_proc(tag, t):
            mark(tag)
            time.sleep(t)
            return tag

        @server.register_function(executor="process")
        def spin_proc(tag):
            mark(tag)
            while True:
                pass

        @server.register_function()
        async def stubborn(tag):
            mark(tag)
            while True:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)

        @server.register_function()
        async def ticks(tag):
            mark(tag)
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.05)

        @server.register_function()
        async def slow_finally(tag):
            mark(tag)
            try:
                while True:
                    yield 1
                    await asyncio.sleep(0.05)
            finally:
                await asyncio.sleep(3600)

        print(server.port, flush=True)
        if cfg.get("uvloop"):
            import uvloop

            uvloop.install()
        server.run_forever()
        print("RETURNED", flush=True)
        alive = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("THREADS", json.dumps(alive), flush=True)


if __name__ == "__main__":
    main()
