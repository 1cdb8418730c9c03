"""The blocking client after os.fork(): the at-fork hook (`RPC._forked`). Each fork runs
in a script of its own; the server runs here, in a thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from attacks_review10.kit import run_script
from pymprpc import Server, current_call
from pymprpc.testing import RunningServer, serve_in_thread

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _server() -> Server:
    server = Server(("127.0.0.1", 0), grace_period=1.0)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def port() -> int:
        peer = current_call().peer
        assert peer is not None
        return int(peer[1])

    @server.register_function()
    async def numbers(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i
            await asyncio.sleep(0.05)

    return server


@pytest.fixture
def running() -> Iterator[RunningServer]:
    with serve_in_thread(_server()) as running:
        yield running


STREAM_ACROSS_FORK = """
    import os, sys
    from pymprpc import RPC
    from pymprpc.errors import MPRPCError

    rpc = RPC(sys.argv[1], timeout=3)
    rpc.connect()
    stream = rpc.numbers(1000)
    assert next(stream) == 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            next(stream)  # the stream is the parent's: its replies never reach the child
            said = "no error"
        except MPRPCError as exc:
            said = f"mprpc {type(exc).__name__}"
        except BaseException as exc:
            said = f"other {type(exc).__name__}: {exc}"
        try:
            said += " | " + rpc.ping()
        except BaseException as exc:
            said += f" | ping {type(exc).__name__}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    print(child, "|", next(stream), rpc.ping(), flush=True)
    stream.close()
    rpc.close()
"""


@pytest.mark.timeout(30)
def test_child_reading_a_stream_opened_before_the_fork(running: RunningServer) -> None:
    done = run_script(STREAM_ACROSS_FORK, running.url)
    assert done.returncode == 0, done.stderr
    child_stream, child_ping, parent = done.stdout.strip().split(" | ")
    assert child_ping == "pong"  # the child connects again for its own calls
    assert parent == "1 pong"  # the parent's stream and connection go on
    assert child_stream == "mprpc ConnectionLostError", done.stdout


THREADS_AND_FORKS = """
    import os, sys, threading
    from pymprpc import RPC

    url = sys.argv[1]
    shared = RPC(url, timeout=5)
    shared.connect()
    parent_port = shared.port()
    stop = threading.Event()

    def churn():  # clients made and dropped: the hook's WeakSet changes meanwhile
        while not stop.is_set():
            RPC(url, timeout=5)

    def caller():  # calls in flight on the shared connection when the process forks
        while not stop.is_set():
            assert shared.ping() == "pong"

    threads = [threading.Thread(target=f) for f in (churn, churn, caller, caller)]
    for t in threads:
        t.start()
    bad = []
    for _ in range(25):
        pid = os.fork()
        if pid == 0:
            try:
                ok = shared.ping() == "pong" and shared.port() != parent_port
                shared.close()
                os._exit(0 if ok else 3)
            except BaseException:
                os._exit(4)
        bad += [os.waitpid(pid, 0)[1]]
    stop.set()
    for t in threads:
        t.join()
    print(sorted(set(bad)), shared.ping(), shared.port() == parent_port, flush=True)
"""


@pytest.mark.timeout(60)
def test_forks_while_threads_call_and_make_clients(running: RunningServer) -> None:
    done = run_script(THREADS_AND_FORKS, running.url, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0]", "pong", "True"], done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
