"""Interop with the REAL pymprpc 0.0.3 (from the package registry), both directions.

The old code runs in venvs of its own, built once and cached on disk (keyed by the
interpreter's version): `PYMPRPC_INTEROP_CACHE`, default /tmp/pymprpc-interop-003.

- "modern": Python 3.11 or 3.12 (0.0.3's blocking client imports `telnetlib`, gone in
  3.13). Its asyncio client and server do not run there (they pass `loop=` to asyncio
  APIs that dropped it in 3.10, and subclass a `StreamReaderProtocol` whose
  `_stream_reader` became a read-only property in 3.8): tests pin that.
- "legacy": Python 3.6 (the 2018 interpreter) or else 3.7 (pyenv or PATH), where 0.0.3's asyncio
  client and server run unmodified. Tests that need it skip, saying so, without one.

Both get `pymprpc==0.0.3` and `msgpack<1` (0.0.3 calls `unpackb(encoding=...)`, which
msgpack 1.0 removed) with pip. Nothing of the old code is patched.
"""

from __future__ import annotations

import asyncio
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from review_fixtures import loop, no_tracebacks, pytest_configure  # noqa: F401

from interop_003 import handlers
from pymprpc.server import Server
from pymprpc.testing import RunningServer

HERE = Path(__file__).parent

CACHE = Path(os.environ.get("PYMPRPC_INTEROP_CACHE", "/tmp/pymprpc-interop-003"))
REQUIREMENTS = ["pymprpc==0.0.3", "msgpack<1"]
# What pip says when it cannot reach the registry (then the tests skip, saying so).
OFFLINE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)
DRIVER = HERE / "old_client_driver.py"
SERVER_DRIVER = HERE / "old_server_driver.py"


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-I", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _find_python(wanted: list[tuple[int, int]]) -> str | None:
    """The first interpreter found of the wanted versions, in their order."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    for major, minor in wanted:
        if sys.version_info[:2] == (major, minor):
            return sys.executable
        candidates = []
        for root in filter(None, roots):
            found = glob.glob(f"{root}/versions/{major}.{minor}.*/bin/python{major}.{minor}")
            candidates += sorted(
                found,
                key=lambda p: [int(x) for x in p.split("/")[-3].split(".") if x.isdigit()],
                reverse=True,
            )
        which = shutil.which(f"python{major}.{minor}")
        if which:
            candidates.append(which)
        for candidate in candidates:
            if _version(candidate) == (major, minor):
                return candidate
    return None


class OldVenv:
    """A venv holding the real pymprpc 0.0.3."""

    def __init__(self, python: Path) -> None:
        self.python = str(python)
        info = json.loads(
            subprocess.run(
                [
                    self.python,
                    "-I",
                    "-c",
                    "import json, sys, msgpack; print(json.dumps("
                    "['%d.%d' % sys.version_info[:2], '.'.join(map(str, msgpack.version))]))",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        )
        self.version, self.msgpack = info
        self.prefix = str(Path(self.python).parent.parent)

    def run_server_driver(self, options: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """Run old_server_driver.py to its end (for "probe_protocol")."""
        return subprocess.run(
            [self.python, "-I", "-W", "ignore", str(SERVER_DRIVER), json.dumps(options)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def client(self, scenario: str, timeout: float = 60, **params: Any) -> Result:
        """Run a scenario of old_client_driver.py (isolated mode: no PYTHONPATH, so the
        venv's pymprpc 0.0.3 is imported, never this repository's); its result."""
        proc = subprocess.run(
            [
                self.python,
                "-I",
                "-W",
                "ignore::DeprecationWarning",
                str(DRIVER),
                scenario,
                json.dumps(params),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if not proc.stdout.strip():
            raise AssertionError(
                f"driver printed nothing (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        result = Result(json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr)
        assert result.data["pymprpc"].startswith(self.prefix), result.data["pymprpc"]
        return result


class Result:
    """What old_client_driver.py printed: steps by name."""

    def __init__(self, data: dict[str, Any], stderr: str) -> None:
        self.data = data
        self.stderr = stderr
        self.steps = dict(data["steps"])
        self.hung = data["hung"]

    def __repr__(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, indent=1)[:6000]

    def value(self, step: str) -> Any:
        """The step's value; fails the test, showing the step, if it raised or hung."""
        outcome = self.steps.get(step)
        assert outcome is not None and "value" in outcome, f"step {step!r}: {outcome}\n{self!r}"
        return outcome["value"]

    def raised(self, step: str) -> dict[str, Any]:
        """The step's exception: {"raised": class name, "message", "code", ...}."""
        outcome = self.steps.get(step)
        assert outcome is not None and "raised" in outcome, f"step {step!r}: {outcome}\n{self!r}"
        return outcome

    def warnings(self, step: str) -> list[str]:
        return list(self.steps[step].get("warnings", []))


def _build(python: str, name: str) -> OldVenv:
    """The venv `name` for `python`, built once (a marker file says it is complete)."""
    where = CACHE / name
    marker = where / ".complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(where, ignore_errors=True)
            subprocess.run(
                [python, "-m", "venv", str(where)], check=True, timeout=300, capture_output=True
            )
            pip = subprocess.run(
                [
                    str(where / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    *REQUIREMENTS,
                ],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PIP_NO_INPUT": "1"},
            )
            if pip.returncode != 0:
                shutil.rmtree(where, ignore_errors=True)
                said = pip.stderr.strip()[-800:]
                if any(word in pip.stderr for word in OFFLINE):
                    pytest.skip(
                        f"cannot reach the package registry to install "
                        f"{' '.join(REQUIREMENTS)} for Python at {python}: {said}"
                    )
                pytest.fail(f"pip could not install {' '.join(REQUIREMENTS)}: {said}")
            marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return OldVenv(where / "bin" / "python")


@pytest.fixture(scope="session")
def modern() -> OldVenv:
    """0.0.3 on Python 3.11/3.12 (its blocking client runs there)."""
    python = _find_python([(3, 11), (3, 12)])
    if python is None:
        pytest.skip(
            "no Python 3.11 or 3.12 found (pyenv or PATH): 0.0.3's blocking client "
            "needs telnetlib, removed in 3.13"
        )
    version = _version(python)
    return _build(python, "py{}.{}-pymprpc0.0.3-msgpack-lt1".format(*version))


@pytest.fixture(scope="session")
def legacy() -> OldVenv:
    """0.0.3 on Python 3.6 (its era) or 3.7, where its asyncio client and server run as written."""
    python = _find_python([(3, 6), (3, 7)])
    if python is None:
        pytest.skip(
            "no Python 3.6 or 3.7 found (pyenv or PATH): 0.0.3's asyncio client "
            "(loop= to open_connection, removed in 3.10) and server (sets "
            "StreamReaderProtocol._stream_reader, read-only since 3.8) need one"
        )
    version = _version(python)
    return _build(python, "py{}.{}-pymprpc0.0.3-msgpack-lt1".format(*version))


# ------------------------------ the new server ------------------------------------------


def build_new_server(**options: Any) -> Server:
    options.setdefault("auth", [("admin", "admin")])  # 0.0.3's default account
    options.setdefault("executor", "thread")  # the wire is the same; no process pool to fork
    options.setdefault("version", "0.0.3-interop")
    server = Server(("127.0.0.1", 0), **options)
    handlers.register(server)

    @server.register_function(deprecated=True)
    def old_add(a: int, b: int) -> int:
        return a + b

    @server.register_function(deprecated=True)
    async def old_count(n: int) -> Any:
        for i in range(n):
            yield i

    return server


class NewServer(RunningServer):
    def url(self, user: str | None = "admin", password: str | None = "admin") -> str:  # type: ignore[override]
        host, port = self.server.address
        auth = "" if user is None else f"{user}:{password}@"
        return f"tcp://{auth}{host}:{port}"

    def connections(self) -> int:
        return int(self.call_in_loop(lambda: self.server.connection_count))

    def running_calls(self) -> int:
        return int(self.call_in_loop(lambda: len(self.server._core.tasks)))

    def wait_for_a_running_call(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.running_calls() == 0:
            assert time.monotonic() < deadline, "no call started"
            time.sleep(0.02)


@pytest.fixture
def new_server() -> Iterator[Callable[..., NewServer]]:
    """new_server(**Server options) -> a started NewServer (stopped after the test)."""
    started: list[NewServer] = []

    def start(**options: Any) -> NewServer:
        running = NewServer(build_new_server(**options))
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


# ------------------------------ the old server ------------------------------------------


class OldServer:
    """The real 0.0.3 server (old_server_driver.py) in a subprocess; its log in a file."""

    def __init__(self, venv: OldVenv, **options: Any) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the server writes it till stop()
        self.proc = subprocess.Popen(
            [venv.python, "-I", "-W", "ignore", str(SERVER_DRIVER), json.dumps(options)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.stop()
            raise AssertionError(f"0.0.3 server did not start: {line!r} {self.stderr()}")
        self.port = int(line.split()[1])

    def url(self, user: str | None = "admin", password: str | None = "admin") -> str:
        auth = "" if user is None else f"{user}:{password}@"
        return f"tcp://{auth}127.0.0.1:{self.port}"

    def stderr(self) -> str:
        """What it logged so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def old_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., OldServer]]:
    """old_server(venv=None, **0.0.3 server options) -> the real 0.0.3 server in a
    subprocess, on the legacy venv unless `venv` is given; killed after the test."""
    started: list[OldServer] = []

    def start(venv: OldVenv | None = None, **options: Any) -> OldServer:
        server = OldServer(venv or request.getfixturevalue("legacy"), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run_async(coro: Any, timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))
