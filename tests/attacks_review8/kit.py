"""Review8 kit: a server serving review8's hostile handlers on every executor, and the
checks every attack ends with (the call was answered; the server still serves, on the
same connection and on a new one; it shuts down within its grace period)."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

from attacks_review8 import hostile
from pymprpc import RPC, Server
from pymprpc.testing import RunningServer, serve_in_thread

# Where a handler runs: the three executors of plain functions, a coroutine, a stream.
EXECUTORS = ["inline", "thread", "process", "async", "stream"]
GRACE = 1.0


def build(**options: Any) -> Server:
    """A server with `raise_<executor>(kind)` (raises hostile.RAISES[kind]) and
    `result_<executor>(kind)` (returns hostile.RESULTS[kind]; a stream yields 1, it, 2)."""
    options.setdefault("grace_period", GRACE)
    server = Server(("127.0.0.1", 0), **options)
    for executor in ("inline", "thread", "process"):
        server.register_function(f"raise_{executor}", executor=executor)(hostile.raiser)
        server.register_function(f"result_{executor}", executor=executor)(hostile.result)
    server.register_function("raise_async")(hostile.araiser)
    server.register_function("raise_stream")(hostile.sraiser)
    server.register_function("result_async")(hostile.aresult)
    server.register_function("result_stream")(hostile.sresult)
    server.register_function(executor="inline")(hostile.ping)
    return server


def invoke(rpc: RPC, name: str, *args: Any) -> Any:
    """Call `name`; a stream's items as a list."""
    value = rpc.method(name)(*args)
    if name.endswith("_stream"):
        return list(value)
    return value


@contextlib.contextmanager
def serving(
    server: Server | None = None, stop_within: float = GRACE + 3
) -> Iterator[RunningServer]:
    """Serve for the block; then the server must stop within `stop_within` seconds."""
    server = server if server is not None else build()
    with serve_in_thread(server) as running:
        yield running
        started = time.monotonic()
    took = time.monotonic() - started
    assert took < stop_within, f"shutdown took {took:.1f}s"
    gc.collect()  # a leaked task's "exception was never retrieved", inside the test


def assert_still_serving(running: RunningServer, rpc: RPC | None = None) -> None:
    """A call on the same connection (if given) and on a new one works."""
    if rpc is not None:
        assert rpc.ping() == "pong"
    with RPC(running.url, timeout=5) as fresh:
        assert fresh.ping() == "pong"
