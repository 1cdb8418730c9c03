"""A blocking client in a process forked while it is connected (gunicorn's `--preload`,
multiprocessing's fork start method, a plain function on the process pool calling a
client made at import): the child connects again on its first call, and the parent's
connection is left as it was.

Before: the child sent on the parent's connection while the parent's reader thread read
the replies, so the child's calls waited for their deadline (or for ever) or failed with
"duplicate in-flight ID", and the child's `close()` shut the connection down for the
parent too. The forking runs in a script of its own, not in the test process (which has
threads).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymprpc import Server, current_call
from pymprpc.testing import RunningServer, serve_in_thread

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pymprpc import RPC

    url, mode = sys.argv[1], sys.argv[2]
    rpc = RPC(url, timeout=10)
    rpc.connect()
    port = rpc.port()
    if mode == "held":
        # As if the reader thread were filing a reply when the process forked.
        rpc._lock.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            got = [rpc.echo(f"child {i}") for i in range(200)]
            ok = got == [f"child {i}" for i in range(200)]
            child_port = rpc.port()
            rpc.close()  # its own connection; the parent's stays open
            os.write(write, f"{ok} {child_port}".encode())
        except BaseException as exc:
            os.write(write, f"error {type(exc).__name__}: {exc}".encode())
        os._exit(0)
    os.close(write)
    if mode == "held":
        rpc._lock.release()
    parent_ok = [rpc.echo(f"parent {i}") for i in range(200)] == [
        f"parent {i}" for i in range(200)
    ]
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    time.sleep(0.2)  # a shutdown by the child would have reached the parent by now
    print(parent_ok, port, child, rpc.echo("after"), rpc.port(), flush=True)
    rpc.close()
    """
)


ASYNC_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, threading, time
    from pymprpc import AsyncRPC

    rpc = AsyncRPC(sys.argv[1], timeout=10)
    loop = asyncio.new_event_loop()  # the parent's loop keeps running, in a thread
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    call(rpc.connect())
    port = call(rpc.port())
    stop, wrong = False, []
    calling = threading.Event()

    def parent_calls():
        i = 0
        while not stop:
            if call(rpc.echo(f"parent {i}")) != f"parent {i}":
                wrong.append(i)
            i += 1
            calling.set()

    caller = threading.Thread(target=parent_calls)
    caller.start()
    assert calling.wait(10)  # the parent is calling when the process forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        async def child():
            got = [await rpc.echo(f"child {i}") for i in range(100)]
            ok = got == [f"child {i}" for i in range(100)]
            child_port = await rpc.port()
            await rpc.close()
            return f"{ok} {child_port}"
        try:
            os.write(write, asyncio.run(child()).encode())
        except BaseException as exc:
            os.write(write, f"error {type(exc).__name__}: {exc}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    time.sleep(0.2)  # the parent keeps calling after the child ended
    stop = True
    caller.join()
    print(not wrong, port, child, call(rpc.echo("after")), call(rpc.port()), flush=True)
    """
)


def _server() -> Server:
    server = Server(("127.0.0.1", 0))

    @server.register_function()
    async def echo(value: str) -> str:
        await asyncio.sleep(0)
        return value

    @server.register_function()
    async def port() -> int:
        peer = current_call().peer
        assert peer is not None
        return int(peer[1])

    return server


@pytest.fixture
def running() -> Iterator[RunningServer]:
    with serve_in_thread(_server()) as running:
        yield running


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["plain", "held"])
def test_a_forked_child_uses_its_own_connection(
    running: RunningServer, tmp_path: Path, mode: str
) -> None:
    script = tmp_path / "fork_client.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), running.url, mode],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    parent_ok, port, child_ok, child_port, after, port_after = done.stdout.split()
    assert parent_ok == "True"
    assert child_ok == "True", done.stdout
    assert child_port != port  # a connection of its own
    assert after == "after"
    assert port_after == port  # the parent kept its connection


@pytest.mark.timeout(60)
def test_a_forked_child_gives_an_async_client_its_own_connection(
    running: RunningServer, tmp_path: Path
) -> None:
    """The parent's loop runs on (in a thread) while a child, forked from it, uses the
    same AsyncRPC in an asyncio.run() of its own. Before, the child's first request went
    out on the parent's socket, then failed with "attached to a different loop"."""
    script = tmp_path / "fork_async_client.py"
    script.write_text(ASYNC_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), running.url],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    parent_ok, port, child_ok, child_port, after, port_after = done.stdout.split()
    assert parent_ok == "True"
    assert child_ok == "True", done.stdout
    assert child_port != port
    assert after == "after"
    assert port_after == port
