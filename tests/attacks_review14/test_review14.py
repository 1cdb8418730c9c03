"""Review 14: process-pool fast paths, RETURN: true without negotiation, TLS/listener
changes (max_connections accounting of closed connections, close() during a handshake)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import OldServer, pack, send, tls_contexts, unpack
from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import ConnectionLostError
from pymprpc.protocol import SEPARATOR
from pymprpc.server.tls import check_server_context
from pymprpc.testing import RunningServer, serve_in_thread


def _server(**options: Any) -> Server:
    options.setdefault("grace_period", 1.0)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def echo(value: Any) -> Any:
        return value

    @server.register_function()
    async def blob(n: int) -> bytes:
        return b"x" * n

    @server.register_function()
    async def count(n: int) -> Any:
        for i in range(n):
            yield i

    return server


def _server_sockets(port: int) -> int:
    """Open descriptors of this process that are TCP sockets whose local port is
    `port`, the listener aside (the server runs in this process)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] != "0A":  # 0A: LISTEN
                inodes.add(f[9])
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            n += 1
    return n


# -- max_connections and closed connections ------------------------------------------


@pytest.mark.timeout(40)
def test_closed_but_undrained_connections_stay_under_max_connections() -> None:
    """A peer asks for a large reply, never reads, then sends garbage: the server closes
    the connection (`_close_transport` -> `closing()`, out of the count) but a plain
    transport never closes before its buffer drains. Repeated, the server holds as many
    sockets (and multi-MB buffers) as the peer likes, past max_connections=2."""
    server = _server(max_connections=2)
    socks: list[socket.socket] = []
    with serve_in_thread(server) as running:
        port = server.port
        try:
            for _ in range(5):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                try:
                    s.connect(("127.0.0.1", port))
                    s.sendall(
                        pack({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}})
                        + SEPARATOR
                    )
                    time.sleep(0.05)
                    s.recv(300)  # the welcome (or the 503)
                    s.sendall(
                        pack({"MPRPC": "0.1", "ID": "1", "METHOD": "blob", "ARGS": [6_000_000]})
                        + SEPARATOR
                    )
                    time.sleep(0.2)
                    s.sendall(b"\xc1 not msgpack" + SEPARATOR)
                    time.sleep(0.2)
                except OSError:
                    pass  # refused: what max_connections should do
                socks.append(s)
            held = _server_sockets(port)
            counted = running.call_in_loop(lambda: len(server._core.connections))
            assert held <= 2, f"server holds {held} sockets (counted {counted}), max_connections=2"
        finally:
            for s in socks:
                s.close()


@pytest.mark.timeout(30)
def test_503_at_accept_for_a_client_over_the_limit(loop: str) -> None:
    from pymprpc.errors import RpcUnavailableException

    server = _server(max_connections=1)
    with serve_in_thread(server) as running:
        hold = RPC(running.url, timeout=5)
        hold.connect()
        try:
            for _ in range(5):
                rpc = RPC(running.url, timeout=5)
                with pytest.raises(RpcUnavailableException):
                    rpc.connect()
                rpc.close()

            async def main() -> None:
                for _ in range(5):
                    rpc = AsyncRPC(running.url, timeout=5)
                    with pytest.raises(RpcUnavailableException):
                        await rpc.connect()
                    await rpc.close()

            if loop == "uvloop":
                import uvloop

                uvloop.run(main())
            else:
                asyncio.run(main())
            assert hold.echo(3) == 3
        finally:
            hold.close()


@pytest.mark.timeout(30)
def test_server_close_with_idle_clients_is_not_slowed(tmp_path: Path) -> None:
    """close() waits up to 2 s for closed connections: not for clients that are there."""
    sctx, cctx = tls_contexts(tmp_path)
    for ctx in (None, sctx):
        server = _server(ssl=ctx)
        running = RunningServer(server)
        running.start()
        clients = [RPC(running.url, ssl=cctx if ctx else None, timeout=5) for _ in range(3)]
        for c in clients:
            c.connect()
            assert c.echo(1) == 1
        t = time.monotonic()
        running.stop()
        took = time.monotonic() - t
        for c in clients:
            c.close()
        assert took < 1.5, f"stop took {took:.2f}s (tls={ctx is not None})"


# -- TLS context check ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_check_server_context_accepts_usable_contexts(tmp_path: Path) -> None:
    sctx, _ = tls_contexts(tmp_path)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    mutual = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    mutual.load_cert_chain(cert, key)
    mutual.verify_mode = ssl.CERT_REQUIRED
    mutual.load_verify_locations(cert)
    check_server_context(sctx)
    check_server_context(mutual)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        only = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        only.load_cert_chain(cert, key)
        only.minimum_version = only.maximum_version = version
        check_server_context(only)
    with pytest.raises(ValueError, match="load_cert_chain"):
        Server(("127.0.0.1", 0), ssl=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    with pytest.raises(ValueError, match="server-side"):
        Server(("127.0.0.1", 0), ssl=ssl.create_default_context())


@pytest.mark.timeout(60)
def test_check_server_context_does_not_call_the_sni_callback(tmp_path: Path) -> None:
    sctx, _ = tls_contexts(tmp_path)
    seen: list[Any] = []
    sctx.sni_callback = lambda sock, name, ctx: seen.append(name)  # type: ignore[assignment,misc]
    Server(("127.0.0.1", 0), ssl=sctx)
    assert seen == []


# -- close() during a TLS handshake ----------------------------------------------------


class _SilentTLSPeer:
    """Accepts TCP connections and never answers (a TLS handshake that never ends)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for c in self.accepted:
            c.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(30)
def test_sync_close_ends_a_tls_handshake_and_leaks_nothing(tmp_path: Path) -> None:
    _, cctx = tls_contexts(tmp_path)
    peer = _SilentTLSPeer()
    try:
        before = _fds()
        for _ in range(3):
            rpc = RPC(f"tcp://127.0.0.1:{peer.port}", ssl=cctx, timeout=10)
            outcome: list[BaseException] = []

            def run(rpc: RPC = rpc, outcome: list[BaseException] = outcome) -> None:
                try:
                    rpc.connect()
                except BaseException as exc:  # noqa: BLE001
                    outcome.append(exc)

            t = threading.Thread(target=run)
            t.start()
            time.sleep(0.3)
            started = time.monotonic()
            rpc.close()
            t.join(5)
            assert not t.is_alive()
            assert time.monotonic() - started < 3
            assert outcome and isinstance(outcome[0], ConnectionLostError), outcome
        time.sleep(0.1)
        assert _fds() <= before + 3 + 1  # the peer's accepted ends (3), slack 1
    finally:
        peer.close()


@pytest.mark.timeout(30)
def test_async_close_ends_a_tls_handshake(tmp_path: Path, loop: str) -> None:
    _, cctx = tls_contexts(tmp_path)
    peer = _SilentTLSPeer()

    async def main() -> None:
        rpc = AsyncRPC(f"tcp://127.0.0.1:{peer.port}", ssl=cctx, timeout=10)
        task = asyncio.ensure_future(rpc.connect())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await rpc.close()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 3
        assert not rpc.connected

    try:
        if loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
    finally:
        peer.close()


@pytest.mark.timeout(20)
def test_async_close_right_after_connect_started_stays_closed() -> None:
    server = _server()
    with serve_in_thread(server) as running:

        async def main() -> None:
            rpc = AsyncRPC(running.url, timeout=5)
            task = asyncio.create_task(rpc.connect())
            await asyncio.sleep(0)  # connect() has begun: its _connect task is created
            await rpc.close()
            with contextlib.suppress(ConnectionLostError):
                await task
            connected = rpc.connected
            await rpc.close()
            assert not connected, "close() during connect() left the client connected"

        asyncio.run(main())


# -- RETURN: true without negotiation -------------------------------------------------


@pytest.mark.timeout(30)
def test_unnegotiated_client_calls_a_current_server_every_way(loop: str) -> None:
    server = _server()
    server.register_introspection_functions()
    with serve_in_thread(server) as running:
        for opts in (
            {"features": ()},
            {"features": (), "debug": True},
            {"features": (), "compression": "zlib"},
        ):
            rpc = RPC(running.url, timeout=5, **opts)
            rpc.connect()
            try:
                assert rpc.echo("a") == "a"
                assert rpc.call("echo", value=2) == 2
                assert list(rpc.count(3)) == [0, 1, 2]
                ident = rpc.delay("echo", 7)
                assert rpc.call("system.getresult", ident) == 7
            finally:
                rpc.close()

        async def main() -> None:
            rpc = AsyncRPC(running.url, timeout=5, features=())
            await rpc.connect()
            try:
                assert await rpc.echo("b") == "b"
                assert [i async for i in await rpc.count(2)] == [0, 1]
            finally:
                await rpc.close()

        if loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())


@pytest.mark.timeout(20)
def test_unnegotiated_messages_carry_return_true_and_false_as_meant() -> None:
    def on_call(conn: socket.socket, msg: dict[str, Any]) -> None:
        if msg.get("RETURN", True):
            send(
                conn,
                {
                    "MPRPC": "0.1",
                    "CODE": 200,
                    "MESSAGE": {"ID": msg["ID"], "RESULT": msg.get("ARGS")},
                },
            )

    old = OldServer(on_call)
    try:
        rpc = RPC(old.url, timeout=5)
        rpc.connect()
        assert rpc.echo(1) == [1]
        rpc.delay("echo", 2)
        rpc.notify("echo", 3) if hasattr(rpc, "notify") else rpc.delay("echo", 3)
        assert rpc.echo(4) == [4]
        rpc.close()
        calls = [m for m in old.seen if "METHOD" in m]
        assert [m.get("RETURN") for m in calls] == [True, False, False, True], calls
        assert all("ONEWAY" not in m for m in calls)
    finally:
        old.close()


@pytest.mark.timeout(20)
def test_server_lane_with_return_values() -> None:
    """RETURN true is answered, false kept, a non-bool refused, none logged as ERROR."""
    server = _server()
    with serve_in_thread(server) as running:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        buf = b""

        def recv() -> Any:
            nonlocal buf
            while SEPARATOR not in buf:
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk
            frame, _, buf = buf.partition(SEPARATOR)
            return unpack(frame)

        s.sendall(pack({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}) + SEPARATOR)
        assert recv()["CODE"] == 100
        s.sendall(
            pack({"MPRPC": "0.1", "ID": "a", "METHOD": "echo", "ARGS": [1], "RETURN": True})
            + SEPARATOR
        )
        assert recv()["MESSAGE"]["RESULT"] == 1
        s.sendall(
            pack({"MPRPC": "0.1", "ID": "b", "METHOD": "echo", "ARGS": [2], "RETURN": False})
            + SEPARATOR
        )
        s.sendall(
            pack({"MPRPC": "0.1", "ID": "c", "METHOD": "echo", "ARGS": [3], "RETURN": 1})
            + SEPARATOR
        )
        reply = recv()
        assert reply["CODE"] >= 400 or reply["MESSAGE"].get("RESULT") == 3, reply
        s.close()
        del running


# -- process pool ----------------------------------------------------------------------


def _size_echo(value: bytes) -> bytes:
    return value


def _len(value: bytes) -> int:
    return len(value)


@pytest.mark.timeout(90)
def test_pool_values_around_the_frame_limits() -> None:
    server = Server(("127.0.0.1", 0), grace_period=1.0, executor="process")
    server.register_function("size_echo")(_size_echo)
    server.register_function("length")(_len)
    big = 64 * 1024
    # Payloads around the worker frame sizes: a pickled bytes of n carries ~40 bytes of
    # framing, so these straddle "exactly one small frame", _BIG and the area size.
    sizes = sorted({n for base in (big, 256 * 1024) for d in range(-80, 40, 3) for n in [base + d]})
    with serve_in_thread(server) as running:
        rpc = RPC(running.url, timeout=30)
        rpc.connect()
        try:
            for n in sizes:
                value = bytes([n % 251]) * n
                assert rpc.size_echo(value) == value, n
                assert rpc.length(value) == n
            value = os.urandom(8 * 1024 * 1024)
            assert rpc.size_echo(value) == value
            assert rpc.size_echo(b"x") == b"x"  # the reader after a large frame
        finally:
            rpc.close()


@pytest.mark.timeout(60)
def test_pool_many_calls_in_flight_from_threads() -> None:
    server = Server(("127.0.0.1", 0), grace_period=1.0, executor="process")
    server.register_function("length")(_len)
    with serve_in_thread(server) as running:
        rpc = RPC(running.url, timeout=30)
        rpc.connect()
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for i in range(60):
                    n = (k * 7919 + i * 131) % 200_000
                    assert rpc.length(b"a" * n) == n
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        rpc.close()
        assert not errors, errors[:3]


def _ctx_len(value: bytes) -> tuple[int, bool]:
    from pymprpc import current_call

    return len(value), current_call() is not None


def _die() -> None:
    os._exit(3)


def _later() -> int:
    return 42


@pytest.mark.timeout(90)
def test_pool_mixed_load_with_context_asks_draining_and_a_death(loop: str) -> None:
    from pymprpc.errors import RPCRuntimeError

    server = Server(("127.0.0.1", 0), grace_period=1.0, executor="process")
    server.register_function("length")(_len)
    server.register_function("ctx_len")(_ctx_len)
    server.register_function("die")(_die)
    with serve_in_thread(server) as running:

        async def main() -> None:
            rpc = AsyncRPC(running.url, timeout=30)
            await rpc.connect()
            try:
                sizes = [(i * 4099) % 70_000 for i in range(150)]
                jobs = [
                    rpc.ctx_len(b"q" * n) if i % 3 else rpc.length(b"q" * n)
                    for i, n in enumerate(sizes)
                ]
                dying = asyncio.ensure_future(rpc.die())
                # A registration mid-load: the old workers drain, new ones take calls.
                running.call_in_loop(lambda: server.register_function("later")(_later))
                results = await asyncio.gather(*jobs)
                for i, (n, got) in enumerate(zip(sizes, results, strict=True)):
                    assert (got if i % 3 == 0 else tuple(got)) == (n if i % 3 == 0 else (n, True))
                with pytest.raises(RPCRuntimeError):
                    await dying
                assert await rpc.later() == 42
                assert await rpc.length(b"z" * 10) == 10
            finally:
                await rpc.close()

        if loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())


@pytest.mark.timeout(20)
def test_list_services_maps_0_0_3s_401() -> None:
    from pymprpc.errors import UnsupportSysMethodError
    from pymprpc.services import list_services

    def on_call(conn: socket.socket, msg: dict[str, Any]) -> None:
        send(
            conn,
            {"MPRPC": "0.1", "CODE": 401, "MESSAGE": {"ID": msg["ID"], "MESSAGE": "not found"}},
        )

    old = OldServer(on_call)
    try:
        rpc = RPC(old.url, timeout=5)
        rpc.connect()
        with pytest.raises(UnsupportSysMethodError, match="401"):
            list_services(rpc)
        rpc.close()
    finally:
        old.close()


@pytest.mark.timeout(40)
def test_tls_closed_undrained_connections_end_within_the_shutdown_timeout(tmp_path: Path) -> None:
    sctx, _ = tls_contexts(tmp_path)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    server = _server(max_connections=2, ssl=sctx)
    socks: list[ssl.SSLSocket] = []
    with serve_in_thread(server):
        port = server.port
        try:
            for _ in range(3):
                raw = socket.socket()
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                raw.settimeout(5)
                raw.connect(("127.0.0.1", port))
                s = probe.wrap_socket(raw)
                s.sendall(
                    pack({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}) + SEPARATOR
                )
                time.sleep(0.05)
                s.recv(300)
                s.sendall(
                    pack({"MPRPC": "0.1", "ID": "1", "METHOD": "blob", "ARGS": [6_000_000]})
                    + SEPARATOR
                )
                time.sleep(0.2)
                s.sendall(b"\xc1 not msgpack" + SEPARATOR)
                socks.append(s)
            end = time.monotonic() + 6
            while _server_sockets(port) and time.monotonic() < end:
                time.sleep(0.1)
            assert _server_sockets(port) == 0
        finally:
            for s in socks:
                s.close()
