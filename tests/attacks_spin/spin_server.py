"""A server for the worker-spin attacks, run in a subprocess.

argv[1]: JSON {"server": Server options, "cpus": [cpu, ...] (pin this process first),
"threads_first": bool (a thread runs from before registration to serving: the zygote
then comes from multiprocessing's forkserver)}. Prints its port on stdout, serves until
SIGTERM, then prints the children still alive after the `with` block closed the server
(`CHILDREN_AFTER_CLOSE [...]`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))  # tests/: procfs

import spin_handlers
from procfs import children

from pymprpc.server import Server

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if cfg.get("cpus") is not None:
        os.sched_setaffinity(0, set(cfg["cpus"]))
    opts = dict(cfg.get("server", {}))
    opts.setdefault("grace_period", 2)
    if cfg.get("threads_first"):
        threading.Thread(target=threading.Event().wait, daemon=True, name="early").start()
    with Server(("127.0.0.1", 0), **opts) as server:
        for name in (
            "pid",
            "add",
            "ctx",
            "block",
            "forever",
            "osexit",
            "affinity",
            "size",
            "blob",
            "note",
            "note_and_exit",
            "burn",
        ):
            server.register_function(name)(getattr(spin_handlers, name))

        @server.register_function()
        async def server_pid() -> int:
            return os.getpid()

        print(server.port, flush=True)
        server.run_forever()
    print("CHILDREN_AFTER_CLOSE " + json.dumps(children(os.getpid())), flush=True)


if __name__ == "__main__":
    main()
