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
