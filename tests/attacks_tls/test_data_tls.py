"""The data path over TLS: large messages both ways, long streams, pipelining, a slow path
(partial writes), heartbeats on a frozen path, and peers that end TLS or TCP mid-call."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError

from . import kit
from .certs import Certs

pytestmark = pytest.mark.timeout(60)

BIG = 64 << 20


def test_large_messages_streams_and_threads_blocking(certs: Certs, loop: str) -> None:
    """12 MiB each way, a 20 MiB result, a 20,000-item stream, 8 threads sharing the client
    (README: the blocking client runs TLS over memory buffers, shared by threads)."""
    data = os.urandom(12 << 20)
    with (
        kit.serving(certs.server_context(), loop=loop, max_message_size=BIG) as running,
        RPC(
            kit.tls_url(running), ssl=certs.client_context(), max_message_size=BIG, timeout=30
        ) as rpc,
    ):
        assert rpc.echo(data) == data
        assert rpc.size(data) == len(data)
        assert rpc.blob(20 << 20) == b"x" * (20 << 20)
        assert list(rpc.count(20_000)) == list(range(20_000))
        results: dict[int, bool] = {}

        def worker(t: int) -> None:
            payloads = [os.urandom(100_000 + t) for _ in range(10)]
            results[t] = [rpc.echo(p) for p in payloads] == payloads

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert results == {t: True for t in range(8)}


def test_large_messages_streams_and_pipelining_async(certs: Certs, loop: str) -> None:
    data = os.urandom(12 << 20)
    with kit.serving(certs.server_context(), loop=loop, max_message_size=BIG) as running:

        async def main() -> None:
            async with AsyncRPC(
                kit.tls_url(running), ssl=certs.client_context(), max_message_size=BIG, timeout=30
            ) as rpc:
                assert await rpc.echo(data) == data
                assert await rpc.blob(20 << 20) == b"x" * (20 << 20)
                assert [i async for i in await rpc.count(20_000)] == list(range(20_000))
                assert await asyncio.gather(*(rpc.echo(i) for i in range(3000))) == list(
                    range(3000)
                )
                blobs = [os.urandom(200_000) for _ in range(40)]
                assert await asyncio.gather(*(rpc.echo(b) for b in blobs)) == blobs

        kit.run_on(loop, main())


@pytest.mark.parametrize(
    "kind, loop", [("RPC", "asyncio"), ("AsyncRPC", "asyncio"), ("AsyncRPC", "uvloop")]
)
def test_slow_path_partial_tls_writes(certs: Certs, kind: str, loop: str) -> None:
    """A path that moves 4 KiB at a time: TLS writes on both sides are partial and buffers
    fill; 1 MiB messages from several callers at once arrive intact."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        proxy = kit.Proxy(kit.port_of(running))
        proxy.chunk, proxy.delay = 4096, 0.0005
        url = f"tls://127.0.0.1:{proxy.port}"
        try:
            if kind == "RPC":
                with RPC(url, ssl=certs.client_context(), timeout=45) as rpc:
                    ok: dict[int, bool] = {}

                    def worker(t: int) -> None:
                        payload = os.urandom(1 << 20)
                        ok[t] = rpc.echo(payload) == payload

                    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
                    for th in threads:
                        th.start()
                    for th in threads:
                        th.join(45)
                    assert ok == {t: True for t in range(4)}
            else:

                async def main() -> bool:
                    async with AsyncRPC(url, ssl=certs.client_context(), timeout=45) as arpc:
                        payloads = [os.urandom(1 << 20) for _ in range(4)]
                        return await asyncio.gather(*(arpc.echo(p) for p in payloads)) == payloads

                assert kit.run_on(loop, main())
        finally:
            proxy.close()


@pytest.mark.parametrize(
    "kind, loop", [("RPC", "asyncio"), ("AsyncRPC", "asyncio"), ("AsyncRPC", "uvloop")]
)
def test_heartbeat_over_tls_finds_a_frozen_path(certs: Certs, kind: str, loop: str) -> None:
    """heart_beat=0.5 over TLS: idle pings keep the connection (1.1 s idle, then a call),
    and a path that stops moving bytes fails the pending call with ConnectionLostError
    within 2 x 0.5 s (+ slack), not at the call's 30 s."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        proxy = kit.Proxy(kit.port_of(running))
        url = f"tls://127.0.0.1:{proxy.port}"
        try:
            if kind == "RPC":
                with RPC(url, ssl=certs.client_context(), heart_beat=0.5, timeout=30) as rpc:
                    time.sleep(1.1)
                    assert rpc.echo(1) == 1
                    proxy.paused = True
                    start = time.monotonic()
                    with pytest.raises(ConnectionLostError, match="heartbeat"):
                        rpc.slow(20)
                    took = time.monotonic() - start
            else:

                async def main() -> float:
                    async with AsyncRPC(
                        url, ssl=certs.client_context(), heart_beat=0.5, timeout=30
                    ) as arpc:
                        await asyncio.sleep(1.1)
                        assert await arpc.echo(1) == 1
                        proxy.paused = True
                        begun = time.monotonic()
                        with pytest.raises(ConnectionLostError, match="heartbeat"):
                            await arpc.slow(20)
                        return time.monotonic() - begun

                took = kit.run_on(loop, main())
        finally:
            proxy.paused = False
            proxy.close()
    assert took < 4


def _record_cut_then_reset(port: int, ctx: ssl.SSLContext) -> None:
    """Log in over TLS (memory BIOs), send half of a call's encrypted record, then RST."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(1 << 16))
    sock.sendall(outgoing.read())
    tls.write(kit.AUTH)
    sock.sendall(outgoing.read())
    time.sleep(0.1)
    tls.write(kit.call_frame("echo", b"y" * 100_000))
    record = outgoing.read()
    sock.sendall(record[: len(record) // 2])
    time.sleep(0.1)
    kit.reset(sock)


def _connections_back_to(rpc: RPC, n: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        count = int(rpc.system.lenConnections())
        if count == n or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_peers_ending_tls_or_tcp_mid_call(certs: Certs, loop: str) -> None:
    """close_notify while a call runs, FIN or RST mid-call, RST in the middle of a TLS record,
    a half-close (TLS cannot half-close: docs/protocol.md): each connection is gone within a
    second, and nothing is logged at ERROR (no_tracebacks)."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        running.server.register_introspection_functions()
        port = kit.port_of(running)
        with RPC(kit.tls_url(running), ssl=certs.client_context(), timeout=10) as ctl:
            for how in ("close_notify", "fin", "rst", "half_close"):
                tls, raw = kit.tls_peer(port, certs.client_context(), login=True)
                tls.sendall(kit.call_frame("slow", 3.0))
                time.sleep(0.1)
                if how == "close_notify":
                    tls.unwrap()
                elif how == "fin":
                    tls.close()
                    raw.close()
                elif how == "rst":
                    tls.close()
                    kit.reset(raw)
                else:
                    raw.shutdown(socket.SHUT_WR)
                assert _connections_back_to(ctl, 1, 1.0) == 1, how
                tls.close()
                raw.close()
            _record_cut_then_reset(port, certs.client_context())
            assert _connections_back_to(ctl, 1, 1.0) == 1
            assert ctl.echo("fine") == "fine"


def test_many_pipelined_calls_in_one_tls_write(certs: Certs, loop: str) -> None:
    """2,000 MPRPC 0.1 calls in one write from a hand-made TLS peer: 2,000 replies."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        tls, raw = kit.tls_peer(kit.port_of(running), certs.client_context(), login=True)
        try:
            tls.sendall(b"".join(kit.call_frame("echo", i, id=str(i)) for i in range(2000)))
            received = b""
            deadline = time.monotonic() + 30
            while received.count(b"##PRO-END##") < 2000 and time.monotonic() < deadline:
                chunk = tls.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
            assert received.count(b"##PRO-END##") == 2000
        finally:
            raw.close()
            tls.close()


def test_slow_reader_does_not_hold_up_other_clients(certs: Certs, loop: str) -> None:
    """A hand-made TLS peer asks for 8 MiB and reads it slowly; another client's calls are
    answered meanwhile, and the slow one gets every byte."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        tls, raw = kit.tls_peer(kit.port_of(running), certs.client_context(), login=True)
        try:
            tls.sendall(kit.call_frame("blob", 8 << 20))
            time.sleep(0.3)
            with RPC(kit.tls_url(running), ssl=certs.client_context(), timeout=5) as other:
                assert [other.echo(i) for i in range(50)] == list(range(50))
            received = b""
            tls.settimeout(10)
            while not received.endswith(b"##PRO-END##"):
                chunk = tls.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
                time.sleep(0.001)
            assert len(received) > 8 << 20 and received.count(b"x" * 1024) >= 8 * 1024 - 1
        finally:
            raw.close()
            tls.close()
