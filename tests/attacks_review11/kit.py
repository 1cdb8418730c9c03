"""Review11 kit: a real server on 127.0.0.1 (ephemeral port) in the test process, scripts
that fork or change event loops run in a subprocess of their own (the test process is never
forked), and a TCP proxy that holds back the server's first reply (a slow welcome)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pymprpc import Server, current_call
from pymprpc.testing import RunningServer, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]


def make_server(**options: Any) -> Server:
    """echo, slow_echo, port (the caller's own TCP port, naming its connection), count."""
    options.setdefault("grace_period", 1.0)
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def echo(value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    @server.register_function()
    async def slow_echo(value: Any, seconds: float) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.register_function()
    async def port() -> int:
        peer = current_call().peer
        assert peer is not None
        return int(peer[1])

    @server.register_function()
    async def count(n: int, pause: float = 0.0) -> AsyncIterator[int]:
        for i in range(n):
            if pause:
                await asyncio.sleep(pause)
            yield i

    return server


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[RunningServer]:
    with serve_in_thread(make_server(**options)) as running:
        yield running


# Put at the top of every script: imports, and `report(obj)` printing one JSON line.
PRELUDE = textwrap.dedent(
    """
    import asyncio, gc, json, os, sys, threading, time, warnings
    warnings.simplefilter("ignore", ResourceWarning)
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
    from pymprpc import RPC, AsyncRPC
    from pymprpc.errors import ConnectionLostError

    def report(obj):
        print("RESULT " + json.dumps(obj), flush=True)

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def outcome(fn):
        try:
            return ["ok", fn()]
        except Exception as exc:
            return ["error", type(exc).__name__, str(exc)[:200]]

    def in_child(fn, exit_with="sys"):
        \"\"\"Run fn in a forked child; its JSON result comes back through a pipe. The
        child ends by sys.exit (interpreter shutdown, atexit) or os._exit.\"\"\"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                out = fn()
            except Exception as exc:
                out = ["child raised", type(exc).__name__, str(exc)[:200]]
            os.write(w, json.dumps(out).encode())
            os.close(w)
            if exit_with == "os":
                os._exit(0)
            sys.exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if not data:
            return ["no result", os.waitstatus_to_exitcode(status)]
        return json.loads(data)
    """
)


def run_script(
    tmp_path: Path,
    body: str,
    *args: str,
    timeout: float = 40,
    python: str = sys.executable,
    extra_path: list[Path] = (),  # type: ignore[assignment]
) -> list[Any]:
    """Run PRELUDE + body as a script; the RESULT lines it printed, decoded."""
    script = tmp_path / f"script_{abs(hash(body)) % 10**8}.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    path = [str(p) for p in extra_path] + [str(ROOT / "runtime"), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [python, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    results = [
        json.loads(line.removeprefix("RESULT "))
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    assert done.returncode == 0 or results, (done.returncode, done.stdout, done.stderr[-3000:])
    return results


class SlowWelcome:
    """A TCP proxy to `port` that holds back each connection's first bytes from the server
    (its welcome reply) for `delay` seconds: a client stays "logging in" meanwhile."""

    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.socks: list[socket.socket] = [self.listener]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            self.socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(server, client, self.delay), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        first = True
        try:
            while data := src.recv(65536):
                if first and delay:
                    self.stopped.wait(delay)
                first = False
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped.set()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@contextlib.contextmanager
def slow_welcome(running: RunningServer, delay: float) -> Iterator[SlowWelcome]:
    proxy = SlowWelcome(running.server.address[1], delay)
    try:
        yield proxy
    finally:
        proxy.close()


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
