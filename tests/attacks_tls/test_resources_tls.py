"""Input back-pressure over TLS, and a server given an SSL context that cannot serve."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from pymprpc import RPC
from pymprpc.errors import ConnectionLostError

from . import kit
from .certs import Certs


@pytest.mark.timeout(60)
def test_max_buffered_input_bounds_partial_frames_over_tls(certs: Certs, tmp_path: Path) -> None:
    """README: max_buffered_input bounds the bytes of partial frames all connections
    together buffer; past it they pause reading (one reads on). Four logged-in TLS peers
    each push 24 MiB of a frame that never ends, max_buffered_input 4 MiB: the server
    process grows by well under the 96 MiB pushed (one reader's 24 MiB, the bound, kernel
    and TLS buffers). Measured here: +30-33 MiB (asyncio and uvloop), as over plaintext."""
    server = kit.ServerProcess(
        certs.dir,
        "server",
        tmp_path,
        loop="asyncio",
        options={
            "max_buffered_input": 4 << 20,
            "max_message_size": 64 << 20,
            "auth_timeout": 60,
            "idle_timeout": 60,
        },
    )
    peers: list[socket.socket] = []
    try:
        time.sleep(0.3)
        before = server.rss()

        def push() -> None:
            tls, raw = kit.tls_peer(server.port, certs.client_context(), login=True)
            peers.extend((tls, raw))
            tls.settimeout(1.5)
            chunk = b"\xa0" * (1 << 16)  # MessagePack bytes, never the frame's end
            with contextlib.suppress(OSError):
                for _ in range(24 * 16):
                    tls.sendall(chunk)

        threads = [threading.Thread(target=push) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        time.sleep(0.5)
        grown = server.rss() - before
    finally:
        for sock in peers:
            sock.close()
        server.stop()
    assert grown < 60 << 20, f"server grew by {grown / 2**20:.1f} MiB"


@pytest.mark.timeout(30)
@pytest.mark.logs_errors  # a fix may well report it at ERROR
@pytest.mark.parametrize("which", ["client-side context", "no certificate loaded"])
def test_unusable_server_context_is_reported(
    certs: Certs, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    """A deployment mistake: `Server(ssl=ssl.create_default_context())` (a client-side
    context: every accepted socket fails with "Cannot create a server socket with a
    PROTOCOL_TLS_CLIENT context") or a server context with no certificate (every handshake:
    "no shared cipher"). Expected: refused when the server is made or started, or a
    WARNING/ERROR naming the cause. Before: the server serves "normally", every client
    fails with "the server closed the connection during TLS", and the cause is logged at
    DEBUG only (Listener._connection)."""
    caplog.set_level(logging.DEBUG, logger="pymprpc")
    ctx = (
        ssl.create_default_context()
        if which == "client-side context"
        else ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    )
    try:
        with (
            kit.serving(ctx) as running,
            pytest.raises(ConnectionLostError),
            RPC(kit.tls_url(running), ssl=certs.client_context(), connect_timeout=3) as rpc,
        ):
            rpc.echo(1)
    except (ValueError, ssl.SSLError):
        return  # refused up front: fine
    reported = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("pymprpc") and r.levelno >= logging.WARNING
    ]
    assert reported, "no WARNING/ERROR said why every TLS handshake fails"
