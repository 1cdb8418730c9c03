"""Running out of file descriptors: a flood gets 503 (default max_connections follows
RLIMIT_NOFILE), and when accept() fails anyway the server logs once and recovers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import RawClient, pack, unpack

V = {"MPRPC": "0.1"}
FD_LIMIT = 256

SERVER = """
import json, logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from pymprpc.server import Server
server = Server(("127.0.0.1", 0), executor="inline", **json.loads(sys.argv[2]))
@server.register_function()
async def add(a, b):
    return a + b
server.bind()
print(server.port, server.config.max_connections, flush=True)
server.run_forever()
"""


class ServerProcess:
    def __init__(self, **options: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(FD_LIMIT), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        port, max_connections = self.proc.stdout.readline().split()
        self.port, self.max_connections = int(port), int(max_connections)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self._reader.join(10)


@pytest.fixture
def server_process() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(10)


def connect(port: int) -> RawClient:
    c = RawClient.__new__(RawClient)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    c.encode, c.decode, c.buffer = pack, unpack, b""
    return c


def test_a_flood_beyond_the_fd_limit_gets_503_by_default(
    server_process: list[ServerProcess],
) -> None:
    server = ServerProcess(login_backoff=0)
    server_process.append(server)
    assert server.max_connections < FD_LIMIT  # derived from RLIMIT_NOFILE, not 10,000
    clients = [connect(server.port) for _ in range(FD_LIMIT + 50)]
    try:
        for c in clients:
            c.send({**V, "AUTH": {"USERNAME": None, "PASSWORD": None}})
        # Every connection is answered: welcomed, or refused with 503. None is left
        # waiting in the backlog because accept() failed for lack of descriptors.
        codes = [c.recv()["CODE"] for c in clients]
    finally:
        for c in clients:
            c.close()
    assert codes.count(100) == server.max_connections
    assert codes.count(503) == len(clients) - server.max_connections
    server.stop()


def test_running_out_of_fds_logs_once_and_recovers(server_process: list[ServerProcess]) -> None:
    server = ServerProcess(max_connections=10_000, login_backoff=0)
    server_process.append(server)
    clients = []
    try:
        for _ in range(FD_LIMIT + 100):  # the backlog takes those the server cannot
            clients.append(connect(server.port))
        end = time.monotonic() + 15
        while not any("cannot accept" in line for line in server.log):
            assert time.monotonic() < end, "".join(server.log[-20:])
            time.sleep(0.02)
    finally:
        for c in clients:
            c.close()
    # Descriptors are free again: the server accepts once its pause is over.
    end = time.monotonic() + 15
    while True:
        try:
            with connect(server.port) as c:
                c.sock.settimeout(2)
                assert c.login(None, None)["CODE"] == 100
                break
        except (TimeoutError, EOFError, ConnectionError):
            assert time.monotonic() < end, "the server did not resume accepting"
    server.stop()
    text = "".join(server.log)
    assert "Traceback" not in text
    assert sum("cannot accept" in line for line in server.log) == 1, text[-3000:]
