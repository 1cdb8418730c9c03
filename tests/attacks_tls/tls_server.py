"""A TLS (or plain) pymprpc server in a process of its own, for measurements that need the
server's own memory, descriptors and log: `python tls_server.py JSON` where JSON holds
`certs` (directory), `cert` (name, or null: plaintext), `loop` ("asyncio"/"uvloop"),
`nofile` (a hard RLIMIT_NOFILE to set first, or null), `options` (Server keywords),
`require_client` (mutual TLS). Prints `PORT n` once serving, logs to stderr; runs until
stdin is closed (then shuts down gracefully)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
import threading
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from certs import Certs  # type: ignore[import-not-found]  # (this directory)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("nofile"):
        resource.setrlimit(resource.RLIMIT_NOFILE, (spec["nofile"], spec["nofile"]))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    from pymprpc import Server

    ctx = None
    if spec.get("cert"):
        ctx = Certs(Path(spec["certs"])).server_context(
            spec["cert"], require_client=spec.get("require_client", False)
        )
    server = Server(("127.0.0.1", 0), ssl=ctx, **spec.get("options", {}))

    @server.register_function()
    async def echo(value: object) -> object:
        return value

    @server.register_function()
    async def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async def run() -> None:
        await server.start()
        print(f"PORT {server.address[1]}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=watch, daemon=True).start()
        await done.wait()
        await server.close()

    if spec.get("loop") == "uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


if __name__ == "__main__":
    main()
