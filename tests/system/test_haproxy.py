"""The health check as a real HAProxy runs it, and calls through HAProxy.

`python -m pymprpc.healthcheck` prints `tcp-check` lines; only HAProxy itself can say
whether they pass on a SERVING server and fail on anything else (its `expect` rules read a
buffer that fills as the reply arrives, which a Python rendition of them would guess at).
Each test starts HAProxy (Debian's package; `make test` installs it as root) in the
foreground on 127.0.0.1, reads the servers' states from its stats socket, and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ServerThread
from pymprpc import RPC, AsyncRPC, Server
from pymprpc.context import current_call
from pymprpc.errors import ConnectionLostError
from pymprpc.healthcheck import haproxy_config

HAPROXY = shutil.which("haproxy")
if HAPROXY is None:
    why = (
        "HAProxy is not installed: `make test` installs it with apt-get when run as root "
        "(else: apt-get install haproxy)"
    )
    if os.environ.get("CI"):
        # CI must run these: a missing install step is a failure, not a skip.
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)

pytestmark = pytest.mark.timeout(60)

CHECK_EVERY_MS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HAProxy:
    """One HAProxy process: a TCP frontend balancing over the servers (name -> (port,
    check lines)) that share the first one's check lines; each other server gets a
    backend of its own (checked, never sent traffic). Every server is checked every
    100 ms, and one check decides its state (`fall 1 rise 1`)."""

    def __init__(
        self, directory: Path, servers: dict[str, tuple[int, str]], idle_timeout: str = "30s"
    ) -> None:
        directory.mkdir()
        self.stats = directory / "stats.sock"
        self.port = free_port()
        lines = [
            "global",
            f"    stats socket {self.stats} mode 600 level admin",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            f"    timeout client {idle_timeout}",
            f"    timeout server {idle_timeout}",
            "    timeout check 2s",
            "frontend rpc",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend pool",
            "backend pool",
            "    balance roundrobin",
        ]
        # A backend's servers share its check lines.
        first = next(iter(servers.values()))[1]
        lines += ["    " + line for line in first.splitlines()]
        for name, (port, check) in servers.items():
            if check == first:
                lines.append(
                    f"    server {name} 127.0.0.1:{port} check inter {CHECK_EVERY_MS}ms "
                    "fall 1 rise 1"
                )
        for name, (port, check) in servers.items():
            if check != first:
                lines += [f"backend only_{name}"] + ["    " + line for line in check.splitlines()]
                lines.append(
                    f"    server {name} 127.0.0.1:{port} check inter {CHECK_EVERY_MS}ms "
                    "fall 1 rise 1"
                )
        self.config = directory / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        check = subprocess.run(
            [str(HAPROXY), "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        assert check.returncode == 0, f"HAProxy refused the config:\n{check.stdout}{check.stderr}"
        self.process = subprocess.Popen(
            [str(HAPROXY), "-db", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not self.stats.exists():
            assert self.process.poll() is None, self.process.communicate()[1]
            assert time.monotonic() < deadline, "HAProxy did not start within 10 s"
            time.sleep(0.02)

    def states(self) -> dict[str, str]:
        """Each server's status ("UP", "DOWN", ...) as HAProxy's stats socket shows it."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, expected: dict[str, str], timeout: float = 10) -> None:
        """Wait until every named server is in its expected state (several checks in a
        row: `fall 1 rise 1` makes one check decide)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(name, "").split(" ")[0] == want for name, want in expected.items()):
                return
            assert time.monotonic() < deadline, f"expected {expected}, HAProxy shows {states}"
            time.sleep(CHECK_EVERY_MS / 1000 / 2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


Start = Callable[..., HAProxy]


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Start]:
    started: list[HAProxy] = []

    def start(servers: dict[str, tuple[int, str]], **options: str) -> HAProxy:
        proxy = HAProxy(tmp_path / str(len(started)), servers, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@contextlib.contextmanager
def serving(name: str, **options: object) -> Iterator[ServerThread]:
    server = Server(("127.0.0.1", 0), auth=[("lb", "lb-pw"), ("app", "app-pw")], **options)

    @server.register_function("whoami")
    async def whoami() -> str:
        return name

    @server.register_function("sleep")
    async def sleep(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    @server.register_function("peer_port")
    async def peer_port() -> int:
        peer = current_call().peer  # the proxy's end of this connection
        assert peer is not None
        return peer[1]

    with ServerThread(server) as thread:
        yield thread


def test_the_printed_check_passes_only_while_the_server_is_serving(haproxy: Start) -> None:
    check = haproxy_config("lb", "lb-pw")
    with serving("a") as a, serving("b") as b:
        proxy = haproxy({"a": (a.port, check), "b": (b.port, check)})
        proxy.wait_for({"a": "UP", "b": "UP"})

        b.server.health.set("", "NOT_SERVING")
        proxy.wait_for({"a": "UP", "b": "DOWN"})
        # Calls through HAProxy now reach only the server that is serving.
        with RPC(f"tcp://app:app-pw@127.0.0.1:{proxy.port}") as rpc:
            assert {rpc.whoami() for _ in range(10)} == {"a"}
        for _ in range(10):  # and new connections too (round robin over UP servers only)
            with RPC(f"tcp://app:app-pw@127.0.0.1:{proxy.port}") as rpc:
                assert rpc.whoami() == "a"

        b.server.health.set("", "SERVING")
        proxy.wait_for({"a": "UP", "b": "UP"})
        seen = set()
        for _ in range(10):
            with RPC(f"tcp://app:app-pw@127.0.0.1:{proxy.port}") as rpc:
                seen.add(rpc.whoami())
        assert seen == {"a", "b"}


def test_a_service_check_follows_that_service(haproxy: Start) -> None:
    with serving("a") as a:
        a.server.health.set("billing", "SERVING")
        proxy = haproxy(
            {
                "billing": (a.port, haproxy_config("lb", "lb-pw", "billing")),
                "unset": (a.port, haproxy_config("lb", "lb-pw", "nobody-set-this")),
            }
        )
        proxy.wait_for({"billing": "UP", "unset": "DOWN"})  # UNKNOWN is not SERVING
        a.server.health.set("billing", "NOT_SERVING")
        proxy.wait_for({"billing": "DOWN"})


def test_a_check_that_cannot_log_in_fails(haproxy: Start) -> None:
    with serving("a") as a:
        proxy = haproxy(
            {
                "right": (a.port, haproxy_config("lb", "lb-pw")),
                "wrong": (a.port, haproxy_config("lb", "not-the-password")),
                "anonymous": (a.port, haproxy_config()),
            }
        )
        proxy.wait_for({"right": "UP", "wrong": "DOWN", "anonymous": "DOWN"})


def test_a_server_marked_down_while_it_drains_at_shutdown(haproxy: Start) -> None:
    # close() drains: calls running finish while new ones get 503, and the health check
    # says NOT_SERVING meanwhile, so HAProxy stops sending it connections before it goes.
    release = asyncio.Event()
    started = threading.Event()
    with serving("a") as a, serving("b", grace_period=30) as b:
        assert b.loop is not None

        @b.server.register_function("hold")
        async def hold() -> str:
            started.set()
            await release.wait()
            return "held"

        check = haproxy_config("lb", "lb-pw")
        proxy = haproxy({"a": (a.port, check), "b": (b.port, check)})
        proxy.wait_for({"a": "UP", "b": "UP"})

        async def call_hold() -> str:
            async with AsyncRPC(f"tcp://app:app-pw@127.0.0.1:{b.port}") as rpc:
                return str(await rpc.hold())

        held = asyncio.run_coroutine_threadsafe(call_hold(), b.loop)
        assert started.wait(10)
        closing = asyncio.run_coroutine_threadsafe(b.server.close(), b.loop)
        proxy.wait_for({"a": "UP", "b": "DOWN"})
        with RPC(f"tcp://app:app-pw@127.0.0.1:{proxy.port}") as rpc:
            assert rpc.whoami() == "a"
        b.loop.call_soon_threadsafe(release.set)
        assert held.result(10) == "held"
        closing.result(10)


def test_clients_connect_again_after_the_proxy_closes_an_idle_connection(
    haproxy: Start,
) -> None:
    # A load balancer closes connections idle past its timeout without a word from the
    # server: to the client that is the server closing between calls, so the next call
    # connects again, transparently (README, "Connections that end").
    with serving("a") as a:
        proxy = haproxy({"a": (a.port, haproxy_config("lb", "lb-pw"))}, idle_timeout="300ms")
        proxy.wait_for({"a": "UP"})
        address = f"tcp://app:app-pw@127.0.0.1:{proxy.port}"
        with RPC(address) as rpc:
            ports = set()
            for _ in range(3):
                ports.add(rpc.peer_port())
                time.sleep(0.8)  # the proxy closes the idle connection meanwhile
            assert len(ports) == 3  # each call came on a new connection

        async def async_calls() -> set[int]:
            async with AsyncRPC(address) as rpc:
                ports = set()
                for _ in range(3):
                    ports.add(await rpc.peer_port())
                    await asyncio.sleep(0.8)
                return ports

        assert len(asyncio.run(async_calls())) == 3


def test_heartbeats_keep_a_long_call_alive_through_the_proxy(haproxy: Start) -> None:
    # A call that runs longer than the proxy's idle timeout: with heart_beat shorter than
    # that timeout the pings and pongs keep the connection active, and the call finishes.
    with serving("a") as a:
        proxy = haproxy({"a": (a.port, haproxy_config("lb", "lb-pw"))}, idle_timeout="1s")
        proxy.wait_for({"a": "UP"})
        address = f"tcp://app:app-pw@127.0.0.1:{proxy.port}"
        with RPC(address, heart_beat=0.3) as rpc:
            assert rpc.sleep(2.0) == "slept"

        async def async_call() -> str:
            async with AsyncRPC(address, heart_beat=0.3) as rpc:
                return str(await rpc.sleep(2.0))

        assert asyncio.run(async_call()) == "slept"
        # Without heartbeats the proxy cuts it: the call fails, it does not hang.
        with RPC(address) as rpc, pytest.raises(ConnectionLostError):
            rpc.sleep(2.0)
