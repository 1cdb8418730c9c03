"""What a peer can make a TLS server hold before (and just after) the handshake, and what
the server logs for peers that do not speak TLS."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from pymprpc import RPC
from pymprpc.errors import ConnectionLostError, RpcUnavailableException

from . import kit
from .certs import Certs


@pytest.mark.timeout(30)
def test_silent_and_stalled_handshakes_end_within_auth_timeout(certs: Certs, loop: str) -> None:
    """README: `auth_timeout` is the time a client has to authenticate. A peer that never
    sends a ClientHello, or stops after it, has not authenticated either: it must be closed
    within auth_timeout (1 s here) + 2 s. Before: both are held 60 s (asyncio's default
    `ssl_handshake_timeout`; Listener._connection passes none), idle/auth timers never run."""
    with kit.serving(certs.server_context(), loop=loop, auth_timeout=1, idle_timeout=1) as running:
        port = kit.port_of(running)
        peers = [kit.silent(port), kit.silent(port), kit.stalled_hello(port)]
        start = time.monotonic()
        held = [kit.closed_within(p, 3.0 - (time.monotonic() - start)) for p in peers]
        for p in peers:
            p.close()
        assert None not in held, f"closed after (s, None = still open): {held}"


@pytest.mark.timeout(30)
def test_plaintext_server_closes_silent_peer_within_auth_timeout() -> None:
    """The same silent peer on a plaintext port is closed at auth_timeout (the baseline the
    TLS test above is held to)."""
    with kit.serving(None, auth_timeout=1) as running:
        peer = kit.silent(kit.port_of(running))
        took = kit.closed_within(peer, 4.0)
        peer.close()
        assert took is not None and took >= 0.5


def _flood_then_call(
    certs: Certs, tmp: Path, cert: str | None, *, burst: bool = False
) -> tuple[str, str, str]:
    """A server process with a hard RLIMIT_NOFILE of 200 (so its default max_connections
    is 72), 250 silent TCP connections, then a real client: (the server's open descriptors
    and memory held per flooding connection, what the client got, the server's log)."""
    server = kit.ServerProcess(certs.dir, cert, tmp, nofile=200, options={"auth_timeout": 30})
    socks: list[socket.socket] = []
    try:
        time.sleep(0.2)
        rss = server.rss()
        socks = kit.flood(server.port, 250, burst=burst)
        time.sleep(1.0)
        fds = f"fds {server.fds()}/200, {(server.rss() - rss) // 250} bytes held per connection"
        outcome = "connected"
        scheme = "tcp" if cert is None else "tls"
        try:
            ctx = None if cert is None else certs.client_context()
            with RPC(f"{scheme}://127.0.0.1:{server.port}", ssl=ctx, connect_timeout=2) as rpc:
                rpc.echo(1)
        except (ConnectionLostError, RpcUnavailableException) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    return fds, outcome, server.log()


@pytest.mark.timeout(60)
def test_flood_of_silent_tls_connections_gets_503_not_emfile(certs: Certs, tmp_path: Path) -> None:
    """README: the default max_connections stays below the fd limit "so a flood gets 503
    rather than failing accept()". 250 paced TCP connections that never send a ClientHello
    (the plaintext baseline below shows pacing alone causes no EMFILE). Before: every one
    is held (none counts until its handshake ends), the process runs out of descriptors
    (200/200), logs `ERROR ... cannot accept connections: Too many open files`, and a real
    client times out instead of getting an answer."""
    fds, outcome, log = _flood_then_call(certs, tmp_path, "server")
    assert "cannot accept connections" not in log and "within 2s" not in outcome, (
        f"server {fds}; real client: {outcome}; log: "
        + " | ".join(line for line in log.splitlines() if "ERROR" in line)
    )


@pytest.mark.timeout(60)
def test_flood_of_silent_plain_connections_gets_503(certs: Certs, tmp_path: Path) -> None:
    """The plaintext baseline: the same paced flood gets 503 as documented, and the server
    keeps its descriptors below the limit."""
    fds, outcome, log = _flood_then_call(certs, tmp_path, None)
    assert outcome.startswith("RpcUnavailableException"), outcome
    assert int(fds.split()[1].split("/")[0]) < 150, fds
    assert "cannot accept connections" not in log, log[-500:]


@pytest.mark.timeout(60)
def test_burst_of_plain_connections_gets_503_not_emfile(certs: Certs, tmp_path: Path) -> None:
    """Not TLS-specific: the same 250 connections arriving at once (all in the listen
    backlog) make Listener._accept take up to 1024 sockets in one pass before any refused
    one is closed, so a burst larger than the fd reserve (128) fails accept() with EMFILE
    (ERROR logged, accepting paused 1 s) although max_connections was sized to prevent it."""
    with open("/proc/sys/net/core/somaxconn") as f:
        if int(f.read()) < 256:
            pytest.skip("somaxconn below 256: the kernel caps the backlog under the burst")
    fds, outcome, log = _flood_then_call(certs, tmp_path, None, burst=True)
    assert "cannot accept connections" not in log, (
        fds,
        outcome,
        [line for line in log.splitlines() if "ERROR" in line],
    )


@pytest.mark.timeout(40)
@pytest.mark.parametrize("timer, loop", [("auth_timeout", "asyncio"), ("idle_timeout", "uvloop")])
def test_connection_closed_by_timeout_frees_its_slot(certs: Certs, timer: str, loop: str) -> None:
    """A peer completes the handshake (and logs in, for the idle timeout), then goes silent
    and never answers close_notify. The server closes it at its timeout (1 s); 1.5 s later a
    real client must be admitted under max_connections=1. Before: the closed connection
    keeps its slot until asyncio's 30 s ssl_shutdown_timeout, the real client gets 503.
    (Plaintext frees the slot at once.)"""
    options = {
        "max_connections": 1,
        "auth_timeout": 1 if timer == "auth_timeout" else 30,
        "idle_timeout": 1 if timer == "idle_timeout" else 30,
    }
    with kit.serving(certs.server_context(), loop=loop, **options) as running:
        tls, raw = kit.tls_peer(
            kit.port_of(running), certs.client_context(), login=timer == "idle_timeout"
        )
        try:
            time.sleep(2.5)
            with RPC(kit.tls_url(running), ssl=certs.client_context(), connect_timeout=3) as rpc:
                assert rpc.echo(1) == 1
        finally:
            raw.close()
            tls.close()


@pytest.mark.timeout(30)
def test_plaintext_connection_closed_by_timeout_frees_its_slot() -> None:
    """Baseline: over plain TCP the slot is free once the auth timeout closed the peer."""
    with kit.serving(None, max_connections=1, auth_timeout=1) as running:
        peer = kit.silent(kit.port_of(running))
        try:
            time.sleep(2.5)
            with RPC(running.url, connect_timeout=3) as rpc:
                assert rpc.echo(1) == 1
        finally:
            peer.close()


def _http(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    return sock


def _mprpc(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(kit.AUTH)
    return sock


def _garbage(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(bytes(range(256)) * 4)
    return sock


def _reset_after_hello(port: int) -> socket.socket:
    sock = kit.stalled_hello(port)
    time.sleep(0.05)
    kit.reset(sock)
    return socket.socket()  # (already gone)


@pytest.mark.timeout(30)
def test_non_tls_peers_on_tls_port_are_closed_quietly(certs: Certs, loop: str) -> None:
    """Plaintext MPRPC, HTTP and random bytes on the TLS port are closed at once, a port
    scanner's connect-and-close and a reset mid-handshake leave nothing behind, and none of
    it logs an ERROR or a traceback (checked by no_tracebacks) or a WARNING."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        running.server.register_introspection_functions()
        port = kit.port_of(running)
        for make in (_mprpc, _http, _garbage):
            sock = make(port)
            assert kit.closed_within(sock, 3.0) is not None, make.__name__
            sock.close()
        socket.create_connection(("127.0.0.1", port)).close()
        kit.reset(socket.create_connection(("127.0.0.1", port)))
        _reset_after_hello(port)
        with RPC(kit.tls_url(running), ssl=certs.client_context()) as rpc:
            assert rpc.echo("still serving") == "still serving"
            assert rpc.system.lenConnections() == 1


@pytest.mark.timeout(30)
def test_failed_handshake_is_one_info_line_naming_the_peer(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """README, Logging: connections accepted and closed are INFO, protocol errors closing a
    connection are INFO. A plaintext client on the TLS port is such a connection; an
    operator should see one INFO line with its address. Before: only `DEBUG
    pymprpc.server.listener: connection from ? failed before it started: [SSL:
    WRONG_VERSION_NUMBER]`: the socket is closed before Listener._connection reads its
    peer name."""
    caplog.set_level(logging.DEBUG, logger="pymprpc")
    with kit.serving(certs.server_context()) as running:
        sock = _mprpc(kit.port_of(running))
        host, port = sock.getsockname()[:2]
        local = f"{host}:{port}"
        assert kit.closed_within(sock, 3.0) is not None
        sock.close()
        time.sleep(0.2)
    lines = [
        f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name.startswith("pymprpc")
    ]
    naming = [line for line in lines if local in line and line.startswith(("INFO", "WARNING"))]
    assert naming, f"no INFO/WARNING line names {local}: {lines}"
