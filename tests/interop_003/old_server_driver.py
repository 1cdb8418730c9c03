# ruff: noqa: UP031, BLE001, RUF006
# (Python 3.6 code: the old code runs it on its own interpreter.)
"""Serve tests/interop_003/handlers.py with the REAL pymprpc 0.0.3 server (its own venv).

    python old_server_driver.py '{"auth": [["admin", "admin"]], "debug": false, ...}'

Options are 0.0.3's `SimpleMprpcServer` keyword options (auth, timeout, debug, compreser);
it listens on 127.0.0.1, a free port, prints "PORT <n>" once it accepts connections, and
serves until killed. Set "executor": "thread" to pass `func_executor=ThreadPoolExecutor()`;
"probe_protocol": true only calls the protocol factory once, as asyncio does for each
connection, and prints the outcome (asyncio itself reports its failure only in debug mode).
Nothing of the old code is patched: the port is read from its own `rpc_server`.
"""

import asyncio
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
OUT = sys.stdout
sys.stdout = sys.stderr  # 0.0.3 logs to stdout: keep it for the port

import handlers  # noqa: E402

from pymprpc.server import SimpleMprpcServer  # noqa: E402


class MyMPRPCServer(SimpleMprpcServer):
    """the usage page's server"""


def main():
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if options.pop("executor", None) == "thread":
        from concurrent.futures import ThreadPoolExecutor

        options["func_executor"] = ThreadPoolExecutor()
    if "auth" in options:
        options["auth"] = [tuple(pair) for pair in options["auth"]]
    probe = options.pop("probe_protocol", False)
    with MyMPRPCServer(("127.0.0.1", 0), **options) as server:
        handlers.register(server)
        if probe:
            # What asyncio does for each accepted connection: call the protocol factory.
            try:
                server._protocol()
                OUT.write("PROTOCOL OK\n")
            except Exception:
                OUT.write("PROTOCOL FAILED\n" + traceback.format_exc())
            OUT.flush()
            return

        async def report():
            while server.rpc_server is None:
                await asyncio.sleep(0.01)
            port = server.rpc_server.sockets[0].getsockname()[1]
            OUT.write("PORT %d\n" % port)
            OUT.flush()

        def show(loop, context):
            # What asyncio would log (0.0.3's logging setup hides it): to the log file.
            exc = context.get("exception")
            sys.stderr.write("LOOP ERROR: %s\n" % context.get("message"))
            if exc is not None:
                traceback.print_exception(type(exc), exc, exc.__traceback__)
            sys.stderr.flush()

        server.loop.set_exception_handler(show)
        asyncio.ensure_future(report(), loop=server.loop)
        server.run_forever()


if __name__ == "__main__":
    main()
