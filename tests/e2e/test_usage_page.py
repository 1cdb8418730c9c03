"""The usage page's server and both client examples (seed/index.rst) run against each other.

The three scripts in tests/usage_page/ are the page's code as written, with only import
lines added. The page listens on port 5000; the test runs them on a free ephemeral port
instead, by rewriting that number, so parallel runs and busy machines do not collide.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "usage_page"

METHODS = [
    "system.getresult",
    "system.health",
    "system.lenConnections",
    "system.lenUndoneTasks",
    "system.listMethods",
    "system.listServices",
    "system.methodHelp",
    "system.methodSignature",
    "testclasscoro",
    "testclasscorogen",
    "testclassmethod",
    "testcoro",
    "testcorogen",
    "testfunc",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def script(name: str, port: int, tmp: Path) -> Path:
    target = tmp / name
    target.write_text((PAGE / name).read_text().replace("5000", str(port)))
    return target


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("usage page server did not start")


@pytest.fixture(params=[signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def page_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PAGE)}
    proc = subprocess.Popen(
        [sys.executable, str(script("server.py", port, tmp_path))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, proc)
        yield port, tmp_path
    finally:
        proc.send_signal(request.param)
        _, err = proc.communicate(timeout=30)
        # Ctrl-C or SIGTERM stops it cleanly: exit status 0 and no traceback.
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err


def run_client(name: str, port: int, tmp: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(script(name, port, tmp))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", ["sync_client.py", "async_client.py"])
def test_usage_page_examples(page_server: tuple[int, Path], client: str) -> None:
    port, tmp = page_server
    lines = run_client(client, port, tmp)
    assert ast.literal_eval(lines[0]) == METHODS
    assert lines[1] == "testclassmethod(a, b)"
    assert lines[2] == "有help"  # methodHelp("testfunc"): its docstring
    assert lines[3] == "1"  # lenConnections: this client
    assert lines[4] == "1"  # lenUndoneTasks: the lenUndoneTasks call itself
    assert lines[5:9] == ["3", "5", "11", "9"]
    assert lines[9:] == [str(i + 3) for i in range(10)]
