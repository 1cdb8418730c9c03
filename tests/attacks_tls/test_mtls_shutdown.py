"""Mutual TLS (the peer's certificate in the call context, on every executor) and the
server's graceful shutdown with TLS connections open."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.errors import CancelledError, ConnectionLostError
from pymprpc.testing import RunningServer

from . import kit
from .certs import Certs


def cert_in_process() -> str | None:
    """Module level: the process pool may have to import it (README, case 3)."""
    return kit.subject_cn(current_call().peer_certificate)


def _mtls_server(certs: Certs, *, require: bool) -> Server:
    ctx = certs.server_context(require_client=require, client_ca=not require)
    server = Server(("127.0.0.1", 0), ssl=ctx, grace_period=1.0, max_workers=1)

    @server.register_function()
    async def co() -> str | None:
        return kit.subject_cn(current_call().peer_certificate)

    @server.register_function(executor="thread")
    def th() -> str | None:
        return kit.subject_cn(current_call().peer_certificate)

    @server.register_function(executor="inline")
    def inline() -> str | None:
        return kit.subject_cn(current_call().peer_certificate)

    @server.register_function()
    async def stream() -> AsyncIterator[str | None]:
        yield kit.subject_cn(current_call().peer_certificate)

    server.register_function("pr", executor="process")(cert_in_process)
    return server


@pytest.mark.timeout(60)
def test_peer_certificate_reaches_every_executor(certs: Certs) -> None:
    """README (Call context): a handler sees the TLS peer certificate, in coroutines,
    streams, and plain functions on the server's executors, worker processes included."""
    running = RunningServer(_mtls_server(certs, require=True))
    running.start()
    try:
        url = f"tls://127.0.0.1:{running.server.address[1]}"
        with RPC(url, ssl=certs.client_context(cert=True), timeout=30) as rpc:
            seen = [rpc.co(), rpc.th(), rpc.inline(), next(iter(rpc.stream())), rpc.pr()]

        async def main() -> list[Any]:
            async with AsyncRPC(url, ssl=certs.client_context(cert=True), timeout=30) as arpc:
                return [await arpc.co(), await arpc.th(), await arpc.pr()]

        seen += asyncio.run(main())
    finally:
        running.stop()
    assert seen == ["alice-client"] * 8


@pytest.mark.timeout(30)
def test_optional_client_certificate(certs: Certs, loop: str) -> None:
    """CERT_OPTIONAL: a client with a certificate is named, one without is served with
    peer_certificate None; a plaintext connection has None too."""
    with kit.serving(certs.server_context(client_ca=True), loop=loop) as running:
        with RPC(kit.tls_url(running), ssl=certs.client_context(cert=True)) as rpc:
            assert rpc.cert() == "alice-client"
        with RPC(kit.tls_url(running), ssl=certs.client_context()) as rpc:
            assert rpc.cert() is None
    with kit.serving(None, loop=loop) as running, RPC(running.url) as rpc:
        assert rpc.cert() is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["RPC", "AsyncRPC"])
def test_client_without_required_certificate_is_refused(certs: Certs, loop: str, kind: str) -> None:
    """CERT_REQUIRED and a client with no certificate: refused at connect with a
    ConnectionLostError, at once; nothing logged at ERROR on either side (no_tracebacks)."""
    with kit.serving(certs.server_context(require_client=True), loop=loop) as running:
        start = time.monotonic()
        with pytest.raises(ConnectionLostError):
            if kind == "RPC":
                with RPC(
                    kit.tls_url(running), ssl=certs.client_context(), connect_timeout=10
                ) as rpc:
                    rpc.cert()
            else:

                async def main() -> None:
                    async with AsyncRPC(
                        kit.tls_url(running), ssl=certs.client_context(), connect_timeout=10
                    ) as arpc:
                        await arpc.cert()

                kit.run_on(loop, main())
        assert time.monotonic() - start < 5
        with RPC(kit.tls_url(running), ssl=certs.client_context(cert=True)) as rpc:
            assert rpc.cert() == "alice-client"


# -- shutdown ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["RPC", "AsyncRPC"])
def test_call_running_at_shutdown_is_answered_within_grace(
    certs: Certs, loop: str, kind: str
) -> None:
    """README: shutdown lets running calls finish within the grace period (1 s), then
    cancels them and answers 407 (cancel negotiated). Over TLS, within grace + 3 s."""
    with kit.serving(certs.server_context(), loop=loop, grace_period=1.0) as running:
        url = kit.tls_url(running)
        box: dict[str, Any] = {}

        def stop_soon() -> None:
            time.sleep(0.3)
            box["stopped"] = time.monotonic()
            running.server.stop()

        stopper = threading.Thread(target=stop_soon)
        stopper.start()
        try:
            if kind == "RPC":
                with (
                    RPC(url, ssl=certs.client_context(), timeout=20) as rpc,
                    pytest.raises(CancelledError),
                ):
                    rpc.slow(15)
            else:

                async def main() -> None:
                    async with AsyncRPC(url, ssl=certs.client_context(), timeout=20) as arpc:
                        with pytest.raises(CancelledError):
                            await arpc.slow(15)

                kit.run_on(loop, main())
            answered = time.monotonic() - box["stopped"]
        finally:
            stopper.join(10)
    assert answered < 4


def _close_with_silent_peer(certs: Certs, loop: str) -> tuple[float | None, float]:
    """`await server.close()` on a loop that runs on, with a logged-in TLS peer that never
    reads again (so never answers close_notify): (seconds until the peer's TCP connection
    ended, None if not within grace 1 s + 2 s; how long close() took)."""

    async def main() -> tuple[float | None, float]:
        server = kit.make_server(certs.server_context(), grace_period=1.0)
        await server.start()
        port = server.address[1]
        tls, raw = await asyncio.to_thread(kit.tls_peer, port, certs.client_context(), True)
        start = time.monotonic()
        await server.close()
        took = time.monotonic() - start
        ended = await asyncio.to_thread(kit.closed_within, raw, 3.0)
        raw.close()
        tls.close()
        return ended, took

    result: tuple[float | None, float] = kit.run_on(loop, main())
    return result


@pytest.mark.timeout(30)
def test_close_ends_tls_connections_of_silent_peers(certs: Certs, loop: str) -> None:
    """README: shutdown "then cancels what is left and closes every connection". A TLS peer
    that does not answer close_notify (gone, or not reading) keeps its TCP connection (and
    the server's descriptor) for asyncio's 30 s ssl_shutdown_timeout after close() returned;
    the handler then logs "closed: SSL shutdown timed out". Plaintext closes at once."""
    ended, took = _close_with_silent_peer(certs, loop)
    assert took < 4
    assert ended is not None, "the peer's connection was still open 3 s after close()"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "server_loop",
    [
        "asyncio",
        "uvloop",
    ],
)
def test_stopped_server_leaves_no_tls_connection_open(certs: Certs, server_loop: str) -> None:
    """`run_forever()`/RunningServer.stop(): the loop ends after close(). On asyncio the TLS
    transports still waiting for close_notify are left as they are: the peer's connection
    stays open (the server's socket is not closed while the Server object lives). uvloop
    closes them with the loop."""
    with kit.serving(certs.server_context(), loop=server_loop) as running:
        tls, raw = kit.tls_peer(kit.port_of(running), certs.client_context(), login=True)
    try:
        assert kit.closed_within(raw, 3.0) is not None
    finally:
        raw.close()
        tls.close()


@pytest.mark.timeout(30)
def test_close_ends_plain_connections_of_silent_peers(loop: str) -> None:
    """Baseline for the two tests above: over TCP the silent peer's connection ends with
    close()."""

    async def main() -> float | None:
        server = kit.make_server(None, grace_period=1.0)
        await server.start()
        raw = await asyncio.to_thread(kit.silent, server.address[1])
        await asyncio.to_thread(raw.sendall, kit.AUTH)
        await asyncio.sleep(0.2)
        await server.close()
        ended = await asyncio.to_thread(kit.closed_within, raw, 4.0)
        raw.close()
        return ended

    assert kit.run_on(loop, main()) is not None
