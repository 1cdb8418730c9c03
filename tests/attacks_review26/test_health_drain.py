"""What a load balancer's health check sees at each phase of a server's life, with the
bytes `python -m pymprpc.healthcheck` prints (README "Running in production": "every
name answers NOT_SERVING once the server starts shutting down"; docs/protocol.md: while
the server shuts down system.health "is answered (not refused with 503 like other
calls)"), and connections arriving during the drain."""

from __future__ import annotations

import socket
import threading
from typing import Any

import msgpack
import pytest

from pymprpc import RPC
from pymprpc.healthcheck import check_messages
from pymprpc.protocol.constants import SEPARATOR

from .kit import Serving, every_kind, wait_until


def _frames(sock: socket.socket, n: int) -> list[Any]:
    buf = b""
    out: list[Any] = []
    while len(out) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {out}")
        buf += chunk
        while SEPARATOR in buf and len(out) < n:
            frame, _, buf = buf.partition(SEPARATOR)
            out.append(msgpack.unpackb(frame, raw=False))
    return out


def _check(sock: socket.socket, service: str = "") -> str:
    """The HAProxy tcp-check exchange on `sock`: log in, call system.health(service)."""
    auth, call = check_messages(service=service)
    sock.sendall(auth)
    (welcome,) = _frames(sock, 1)
    assert welcome["CODE"] == 100, welcome
    sock.sendall(call)
    (reply,) = _frames(sock, 1)
    return str(reply["MESSAGE"]["RESULT"])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.timeout(60)
def test_health_check_through_every_phase(loop: str) -> None:
    """Serving: a fresh check connection reads SERVING (for the server and a service set
    SERVING). Draining (a call still running): a check connection opened before the drain
    and run during it reads NOT_SERVING for both, a fresh connection is refused, the
    running call is unaffected. Closed: refused, and the pre-drain check connection was
    closed by the server."""
    server = every_kind(grace_period=20)
    server.health.set("billing", "SERVING")
    with Serving(server, loop) as serving:
        port = server.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
            assert _check(fresh) == "SERVING"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
            assert _check(fresh, "billing") == "SERVING"
        early = socket.create_connection(("127.0.0.1", port), timeout=10)
        early2 = socket.create_connection(("127.0.0.1", port), timeout=10)
        with RPC(serving.url) as rpc:
            out: list[Any] = []
            t = threading.Thread(target=lambda: out.append(rpc.sleep_async(1.5)))
            t.start()
            wait_until(lambda: server.running_call_count == 1, 10, "the call")
            closing = serving.submit(server.close())
            wait_until(lambda: server.draining, 10, "the drain")
            assert _check(early) == "NOT_SERVING"
            assert _check(early2, "billing") == "NOT_SERVING"
            assert _refused(port)
            t.join(20)
            closing.result(20)
        serving.join()
    assert out == [1.5]
    assert _refused(port)
    early.settimeout(10)
    assert early.recv(100) == b""
    early.close()
    early2.close()


@pytest.mark.timeout(60)
def test_health_set_after_a_restart_is_serving_again() -> None:
    """The drain's NOT_SERVING is the drain's only: started again, the server answers
    what the application set (SERVING), not NOT_SERVING left over."""
    server = every_kind(grace_period=1)
    server.health.set("billing", "SERVING")
    for _ in range(2):
        with Serving(server) as serving:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                assert _check(s) == "SERVING"
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                assert _check(s, "billing") == "SERVING"
            serving.close()
            serving.join()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["RPC", "AsyncRPC"])
def test_new_client_during_the_drain_fails_fast(kind: str) -> None:
    """A client connecting while the server drains (the listener is closed) gets a
    connection error at once, not a hang until its connect timeout."""
    import asyncio

    from pymprpc import AsyncRPC

    server = every_kind(grace_period=20)
    with Serving(server) as serving, RPC(serving.url) as rpc:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(rpc.sleep_async(1.5)))
        t.start()
        wait_until(lambda: server.running_call_count == 1, 10, "the call")
        closing = serving.submit(server.close())
        wait_until(lambda: server.draining, 10, "the drain")
        with pytest.raises(OSError):
            if kind == "RPC":
                with RPC(serving.url, connect_timeout=30) as late:
                    late.echo(1)
            else:

                async def connect() -> None:
                    async with AsyncRPC(serving.url, connect_timeout=30) as late:
                        await late.echo(1)

                asyncio.run(asyncio.wait_for(connect(), 10))
        t.join(20)
        closing.result(20)
        serving.join()
    assert out == [1.5]
