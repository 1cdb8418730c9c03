"""system.health and the HAProxy tcp-check lines of `python -m pymprpc.healthcheck`."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import msgpack
import pytest

from attacks_review9.kit import SEP, Raw, new_server, serving
from pymprpc import RPC, Server
from pymprpc.healthcheck import haproxy_config

pytestmark = pytest.mark.timeout(30)


def build(**options: Any) -> Server:
    server = new_server(**options)

    @server.register_function()
    async def slow() -> str:
        await asyncio.sleep(1.0)
        return "done"

    @server.register_function("billing.charge")
    async def charge() -> str:
        return "charged"

    return server


def parse(config: str) -> list[tuple[str, Any]]:
    """The tcp-check steps: ("send", bytes), ("expect", bytes), ("expect-min1", bytes)."""
    steps: list[tuple[str, Any]] = []
    for line in config.splitlines():
        if m := re.fullmatch(r"tcp-check send-binary ([0-9a-f]+)", line):
            steps.append(("send", bytes.fromhex(m[1])))
        elif m := re.fullmatch(r"tcp-check expect binary ([0-9a-f]+)", line):
            steps.append(("expect", bytes.fromhex(m[1])))
        elif m := re.fullmatch(r"tcp-check expect min-recv 1 binary ([0-9a-f]+)", line):
            steps.append(("expect-min1", bytes.fromhex(m[1])))
        else:
            assert line in ("option tcp-check", "tcp-check connect"), line
    return steps


def run_check(port: int, config: str) -> bool:
    """HAProxy's tcp-check, as src/tcpcheck.c runs it: each send empties the input
    buffer; `expect binary` waits until the buffer holds the bytes; `min-recv 1` does
    not wait for more once it holds one byte. A reset connection fails the check."""
    try:
        return _run_check(port, config)
    except ConnectionError:
        return False


def _run_check(port: int, config: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        buffer = b""
        for kind, data in parse(config):
            if kind == "send":
                buffer = b""
                sock.sendall(data)
            elif kind == "expect":
                while data not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    buffer += chunk
            else:
                while not buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    buffer += chunk
                if data not in buffer:
                    return False
    return True


def test_cli_output_decodes_to_the_documented_messages() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pymprpc.healthcheck",
            "--user",
            "bob",
            "--password",
            "b-pw",
            "--service",
            "billing",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    sends = [data for kind, data in parse(out) if kind == "send"]
    assert len(sends) == 2 and all(s.endswith(SEP) for s in sends)
    auth, call = (msgpack.unpackb(s[: -len(SEP)]) for s in sends)
    assert auth == {"MPRPC": "0.1", "AUTH": {"USERNAME": "bob", "PASSWORD": "b-pw"}}
    assert call == {"MPRPC": "0.1", "ID": "health", "METHOD": "system.health", "ARGS": ["billing"]}
    assert parse(out)[-1] == ("expect-min1", msgpack.packb("SERVING"))


def test_tcp_check_against_a_real_server() -> None:
    server = build(auth=[("bob", "b-pw")])
    server.register_service("Billing", ["charge"], prefix="billing.")
    with serving(server) as running:
        port = running.server.port
        assert run_check(port, haproxy_config("bob", "b-pw"))
        assert not run_check(port, haproxy_config("bob", "b-pw", "Billing"))  # UNKNOWN
        server.health.set("Billing", "SERVING")
        assert run_check(port, haproxy_config("bob", "b-pw", "Billing"))
        server.health.set("Billing", "NOT_SERVING")
        assert not run_check(port, haproxy_config("bob", "b-pw", "Billing"))
        assert not run_check(port, haproxy_config("bob", "wrong", ""))
        assert not run_check(port, haproxy_config(None, None, ""))  # anonymous refused
        assert not run_check(port, haproxy_config("bob", "b-pw", "SERVING"))


@pytest.mark.parametrize("status", ["serving", "DEGRADED", "", None, 1, b"SERVING"])
def test_unknown_statuses_refused(status: Any) -> None:
    server = build()
    with pytest.raises((ValueError, TypeError)):
        server.health.set("x", status)
    with serving(server) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.system.health("x") == "UNKNOWN"


def test_everything_not_serving_while_draining() -> None:
    server = build()
    server.health.set("billing", "SERVING")
    got: dict[str, Any] = {}
    with serving(server) as running, RPC(running.url, timeout=5) as rpc:
        assert rpc.system.health() == "SERVING"
        slow = threading.Thread(target=lambda: got.setdefault("slow", rpc.slow()))
        slow.start()
        time.sleep(0.2)
        stopper = threading.Thread(target=running.server.stop)
        stopper.start()
        time.sleep(0.2)
        got["overall"] = rpc.system.health()
        got["billing"] = rpc.system.health("billing")
        server.health.set("billing", "SERVING")  # set during shutdown: still NOT_SERVING
        got["after-set"] = rpc.system.health("billing")
        slow.join(5)
        stopper.join(5)
    assert got == {
        "slow": "done",
        "overall": "NOT_SERVING",
        "billing": "NOT_SERVING",
        "after-set": "NOT_SERVING",
    }


@pytest.mark.parametrize("service", [123, None, [1], {"a": 1}, b"x"])
def test_health_with_bad_argument_from_raw_peer(
    service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login()
        raw.call("h", "system.health", service)
        assert raw.recv()["CODE"] == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
