"""What one idle authenticated connection costs the server that holds it.

A server may hold 10,000 of them (`max_connections`). Each one's bytes are paid 10,000
times over, and each object the garbage collector tracks is walked by every full
collection, a pause of every connection's calls at once (bench/README.md, fan-in:
idle connections). Measured over a few hundred real connections on 127.0.0.1, logged in
as a current client does (features negotiated, length framing) and called once, then
left idle: the Python allocations (tracemalloc) and the objects the collector tracks,
per connection, less the test's own sockets. The bounds leave room (held: 3.4 to 4.4 KB
and 21 to 24 objects on Python 3.11 to 3.13, since each connection's calls context also
names its server) and are below what a connection held before (7.5 KB and 29 objects
on 3.11).
"""

from __future__ import annotations

import gc
import logging
import socket
import struct
import sys
import tracemalloc
from collections.abc import Iterator

import pytest

from helpers import ServerThread, pack, unpack, wait_for
from pymprpc.protocol import SEPARATOR
from pymprpc.server import Server

CONNECTIONS = 300
MAX_BYTES_PER_CONNECTION = 6 * 1024
MAX_TRACKED_OBJECTS_PER_CONNECTION = 25
V = {"MPRPC": "0.1"}


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def _connect(port: int) -> socket.socket:
    """A connection logged in like `AsyncRPC`'s, with one call answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    features = ["cancel", "deadline", "length-framing", "metadata", "oneway"]
    auth = {**V, "AUTH": {"USERNAME": "admin", "PASSWORD": "s3cret"}, "FEATURES": features}
    sock.sendall(pack(auth) + SEPARATOR)
    buffer = b""
    while SEPARATOR not in buffer:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection during the login"
        buffer += chunk
    welcome = unpack(buffer.partition(SEPARATOR)[0])
    assert welcome["CODE"] == 100 and "length-framing" in welcome["FEATURES"], welcome
    call = pack({**V, "ID": "c1", "METHOD": "add", "ARGS": [1, 2]})
    sock.sendall(struct.pack(">I", len(call)) + call)
    (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
    assert unpack(_recv_exactly(sock, size))["MESSAGE"]["RESULT"] == 3
    return sock


@pytest.fixture
def server() -> Iterator[ServerThread]:
    srv = Server(("127.0.0.1", 0), auth=[("admin", "s3cret")])  # default idle timeout

    @srv.register_function()
    async def add(a: int, b: int) -> int:
        return a + b

    with ServerThread(srv) as thread:
        yield thread


def _held(server: ServerThread) -> int:
    return server.call_in_loop(lambda: len(server.server._core.connections))


def test_an_idle_authenticated_connection_holds_few_bytes_and_objects(
    server: ServerThread,
) -> None:
    warm = _connect(server.port)  # one-off allocations (read buffer, shared codec)
    # The server logs each accepted connection at INFO. Whether pytest keeps those records
    # depends on the levels earlier tests left, and they are not the server's to hold
    # (about 1 KB and 1 object each); below WARNING, nothing is logged while measuring.
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)
    tracemalloc.start()
    socks: list[socket.socket] = []
    try:
        gc.collect()
        bytes_before, objects_before = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
        socks = [_connect(server.port) for _ in range(CONNECTIONS)]
        wait_for(lambda: _held(server) == CONNECTIONS + 1)
        gc.collect()
        bytes_after, objects_after = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    finally:
        tracemalloc.stop()
        logging.disable(disabled)
        for sock in socks:
            sock.close()
        warm.close()
    # The server is idle meanwhile, and this thread holds only its sockets and their list.
    ours = sum(sys.getsizeof(s) for s in socks) + sys.getsizeof(socks)
    per_connection = (bytes_after - bytes_before - ours) / CONNECTIONS
    tracked = (objects_after - objects_before - len(socks) - 1) / CONNECTIONS
    print(f"{per_connection:.0f} bytes and {tracked:.1f} tracked objects per connection")
    assert per_connection < MAX_BYTES_PER_CONNECTION, per_connection
    assert tracked < MAX_TRACKED_OBJECTS_PER_CONNECTION, tracked
