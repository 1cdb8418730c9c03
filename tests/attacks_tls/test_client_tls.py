"""Both clients against TLS servers that are wrong, stalled, plaintext or gone: what the user
sees, and how long it takes."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC
from pymprpc.errors import ConnectionLostError, DeadlineExceeded

from . import kit
from .certs import Certs

pytestmark = pytest.mark.timeout(40)


def attempt(kind: str, loop: str, url: str, ctx: ssl.SSLContext | None, **options: Any) -> Any:
    """Connect and call echo(1) with the blocking or the async client: the result, or the
    exception raised (returned, not raised)."""
    try:
        if kind == "RPC":
            with RPC(url, ssl=ctx, **options) as rpc:
                return rpc.echo(1)

        async def main() -> Any:
            async with AsyncRPC(url, ssl=ctx, **options) as rpc:
                return await rpc.echo(1)

        return kit.run_on(loop, main())
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return exc


KINDS = ["RPC", "AsyncRPC"]
# Where no pymprpc server takes part, the loop matters to AsyncRPC only.
CLIENTS = [("RPC", "asyncio"), ("AsyncRPC", "asyncio"), ("AsyncRPC", "uvloop")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "cert, client, words",
    [
        ("server", "default", "unable to get local issuer certificate"),
        ("selfsigned", "ca", "self-signed certificate"),
        ("wronghost", "ca", "not valid for '127.0.0.1'"),
        ("expired", "ca", "certificate has expired"),
    ],
)
def test_bad_server_certificates_are_refused_saying_why(
    certs: Certs, loop: str, kind: str, cert: str, client: str, words: str
) -> None:
    """Verification is on, also for a `tls://` address with the default context (README:
    "a tls:// address uses the default context"): a server certificate from an unknown CA,
    self-signed, for another host or expired is refused at connect with one
    ConnectionLostError whose message says what is wrong, the verification error kept as
    its cause, without waiting for a timeout."""
    ctx = None if client == "default" else certs.client_context()
    with kit.serving(certs.server_context(cert), loop=loop) as running:
        start = time.monotonic()
        outcome = attempt(kind, loop, kit.tls_url(running), ctx, connect_timeout=10)
    assert isinstance(outcome, ConnectionLostError), outcome
    assert "CERTIFICATE_VERIFY_FAILED" in str(outcome) and words in str(outcome), outcome
    assert isinstance(outcome.__cause__, ssl.SSLCertVerificationError)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_good_certificate_by_ip_and_name(certs: Certs, loop: str, kind: str, host: str) -> None:
    with kit.serving(certs.server_context(), loop=loop) as running:
        assert attempt(kind, loop, kit.tls_url(running, host), certs.client_context()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_plaintext_client_on_tls_server_fails_at_once(certs: Certs, loop: str, kind: str) -> None:
    with kit.serving(certs.server_context(), loop=loop) as running:
        start = time.monotonic()
        outcome = attempt(kind, loop, running.url, None, connect_timeout=10)
    assert isinstance(outcome, ConnectionLostError), outcome
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("kind, loop", CLIENTS)
def test_tls_client_on_plaintext_server_fails_within_connect_timeout(
    certs: Certs, kind: str, loop: str
) -> None:
    """The plaintext server sits on the ClientHello (no frame end yet): the client gives up
    at connect_timeout, it does not hang."""
    with kit.serving(None, loop=loop) as running:
        start = time.monotonic()
        outcome = attempt(
            kind, loop, kit.tls_url(running), certs.client_context(), connect_timeout=1
        )
    assert isinstance(outcome, ConnectionLostError), outcome
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("kind, loop", CLIENTS)
def test_handshake_that_never_answers_ends_at_connect_timeout(
    certs: Certs, kind: str, loop: str
) -> None:
    """README: connect_timeout covers "connecting, TLS and logging in"."""
    proxy = kit.Proxy(None)
    try:
        start = time.monotonic()
        outcome = attempt(
            kind, loop, f"tls://127.0.0.1:{proxy.port}", certs.client_context(), connect_timeout=1
        )
        took = time.monotonic() - start
    finally:
        proxy.close()
    assert isinstance(outcome, ConnectionLostError) and "within 1s" in str(outcome), outcome
    assert 0.9 < took < 4


def _closes_after_hello() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_server_closing_during_handshake_fails_at_once(certs: Certs, loop: str) -> None:
    """A server that reads the ClientHello and closes: both clients fail at once with a
    ConnectionLostError."""
    listener, _ = _closes_after_hello()
    try:
        url = f"tls://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        outcomes = [
            attempt(k, loop, url, certs.client_context(), connect_timeout=10) for k in KINDS
        ]
    finally:
        listener.close()
    assert all(isinstance(o, ConnectionLostError) for o in outcomes), outcomes
    assert time.monotonic() - start < 5


def test_server_closing_during_handshake_same_message_from_both_clients(
    certs: Certs, loop: str
) -> None:
    """README: both clients "give the same errors, messages and warnings". Before: RPC says
    "could not connect to tls://127.0.0.1:P: the server closed the connection during TLS",
    AsyncRPC "could not connect to tls://127.0.0.1:P: " (asyncio's ConnectionResetError has
    no text; BaseRPC._connect_failed uses str(exc)). The same empty message is what an
    AsyncRPC user gets from a mutual-TLS server over TLS 1.2 when the client has no
    certificate (the server drops the handshake without sending its alert)."""
    listener, _ = _closes_after_hello()
    try:
        url = f"tls://127.0.0.1:{listener.getsockname()[1]}"
        sync, async_ = (
            str(attempt(k, loop, url, certs.client_context(), connect_timeout=10)) for k in KINDS
        )
    finally:
        listener.close()
    assert sync == async_, (sync, async_)


@pytest.mark.parametrize("kind, loop", CLIENTS)
def test_call_deadline_covers_a_reconnect_whose_handshake_stalls(
    certs: Certs, kind: str, loop: str
) -> None:
    """README: `timeout` covers "a reconnect inside the call". The server goes away between
    calls and the path now swallows the ClientHello: the next call fails at its 1 s
    deadline, not at connect_timeout (8 s)."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        proxy = kit.Proxy(kit.port_of(running))
        url = f"tls://127.0.0.1:{proxy.port}"
        try:
            if kind == "RPC":
                rpc = RPC(url, ssl=certs.client_context(), timeout=1, connect_timeout=8)
                rpc.connect()
                assert rpc.echo(1) == 1
                proxy.backend = None
                proxy.drop()
                time.sleep(0.3)
                start = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    rpc.echo(2)
                took = time.monotonic() - start
                rpc.close()
            else:

                async def main() -> float:
                    arpc = AsyncRPC(url, ssl=certs.client_context(), timeout=1, connect_timeout=8)
                    await arpc.connect()
                    assert await arpc.echo(1) == 1
                    proxy.backend = None
                    proxy.drop()
                    await asyncio.sleep(0.3)
                    begun = time.monotonic()
                    with pytest.raises(DeadlineExceeded):
                        await arpc.echo(2)
                    spent = time.monotonic() - begun
                    await arpc.close()
                    return spent

                took = kit.run_on(loop, main())
        finally:
            proxy.close()
    assert took < 4


def _close_during_handshake(
    kind: str, loop: str, url: str, ctx: ssl.SSLContext
) -> tuple[BaseException | None, float]:
    """Start connect() against a path that swallows the ClientHello (connect_timeout 3 s),
    close() the client 0.3 s later: what connect() raised and how long after close()."""
    if kind == "RPC":
        rpc = RPC(url, ssl=ctx, connect_timeout=3)
        box: dict[str, Any] = {}

        def connect() -> None:
            try:
                rpc.connect()
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                box["exc"] = exc
            box["end"] = time.monotonic()

        thread = threading.Thread(target=connect)
        thread.start()
        time.sleep(0.3)
        closed = time.monotonic()
        rpc.close()
        thread.join(10)
        return box.get("exc"), box["end"] - closed

    async def main() -> tuple[BaseException | None, float]:
        arpc = AsyncRPC(url, ssl=ctx, connect_timeout=3)
        task = asyncio.ensure_future(arpc.connect())
        await asyncio.sleep(0.3)
        closed = time.monotonic()
        await arpc.close()
        try:
            await asyncio.wait_for(task, 10)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc, time.monotonic() - closed
        return None, time.monotonic() - closed

    result: tuple[BaseException | None, float] = kit.run_on(loop, main())
    return result


@pytest.mark.parametrize("kind, loop", CLIENTS)
def test_close_during_plain_connect_ends_it_at_once(kind: str, loop: str) -> None:
    """Baseline, README (Threads): close() "ends a connect() still waiting for the welcome
    reply" with ConnectionLostError. Over TCP it does, at once."""
    proxy = kit.Proxy(None)
    try:
        exc, took = _close_during_handshake(kind, loop, f"tcp://127.0.0.1:{proxy.port}", None)  # type: ignore[arg-type]
    finally:
        proxy.close()
    assert isinstance(exc, ConnectionLostError) and took < 2, (exc, took)


@pytest.mark.parametrize("kind, loop", CLIENTS)
def test_close_during_tls_handshake_ends_connect_at_once(
    certs: Certs, kind: str, loop: str
) -> None:
    """The same over TLS, the server not answering the ClientHello. Before: connect() goes
    on until connect_timeout (3 s) and then reports "could not connect ... within 3s", as if
    nobody had closed the client (RPC._connect registers the socket for close() only after
    SocketIO.open's handshake; AsyncRPC.close does not cancel loop.create_connection)."""
    proxy = kit.Proxy(None)
    try:
        exc, took = _close_during_handshake(
            kind, loop, f"tls://127.0.0.1:{proxy.port}", certs.client_context()
        )
    finally:
        proxy.close()
    assert isinstance(exc, ConnectionLostError) and took < 2, (exc, took)


def test_blocking_client_reconnects_over_tls_after_restart(certs: Certs, loop: str) -> None:
    """README: when the server closes between calls (a restart), the next call connects
    again, transparently: over TLS, to a new server (new certificate session) behind the
    same address."""
    proxy = kit.Proxy(None)
    try:
        with kit.serving(certs.server_context(), loop=loop) as first:
            proxy.backend = kit.port_of(first)
            rpc = RPC(f"tls://127.0.0.1:{proxy.port}", ssl=certs.client_context(), timeout=10)
            rpc.connect()
            assert rpc.echo(1) == 1
        proxy.drop()
        with kit.serving(certs.server_context(), loop=loop) as second:
            proxy.backend = kit.port_of(second)
            time.sleep(0.2)
            assert rpc.echo(2) == 2
            rpc.close()
    finally:
        proxy.close()


def test_async_client_over_tls_on_a_second_loop(certs: Certs, loop: str) -> None:
    """README: an AsyncRPC used by one loop after another connects again on the new one."""
    with kit.serving(certs.server_context(), loop=loop) as running:
        arpc = AsyncRPC(kit.tls_url(running), ssl=certs.client_context(), timeout=10)

        async def first() -> Any:
            await arpc.connect()
            return await arpc.echo(1)

        async def second() -> Any:
            value = await arpc.echo(2)
            await arpc.close()
            return value

        assert kit.run_on(loop, first()) == 1
        assert kit.run_on(loop, second()) == 2


def test_idle_close_over_tls_then_transparent_reconnect(certs: Certs) -> None:
    """README: a connection the server closes between calls (idle timeout) is connected
    again by the next call. Over TLS, both clients answer the server's close_notify, so the
    closed connections leave the server at once (lenConnections counts only the asker)."""
    loop = "uvloop"  # (the server runs on asyncio)
    with kit.serving(certs.server_context(), idle_timeout=1) as running:
        running.server.register_introspection_functions()
        url = kit.tls_url(running)
        rpc = RPC(url, ssl=certs.client_context(), timeout=10)
        rpc.connect()

        async def main() -> tuple[int, Any]:
            arpc = AsyncRPC(url, ssl=certs.client_context(), timeout=10)
            await arpc.connect()
            await asyncio.sleep(1.4)
            with RPC(url, ssl=certs.client_context()) as asker:
                count = int(asker.system.lenConnections())
            value = await arpc.echo(2)
            await arpc.close()
            return count, value

        try:
            assert kit.run_on(loop, main()) == (1, 2)
            assert rpc.echo(1) == 1
        finally:
            rpc.close()
