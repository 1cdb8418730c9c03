"""Every code block of README.md runs as written, on an ephemeral port, so none can rot.

A block is run according to the HTML comment on the line before it:

- none, on a ```python block: a script run to completion (exit 0) against the server
  started last; every other unmarked block is an error, so nothing is skipped silently;
- `<!-- example: server -->`: a python script started in the background; it must serve
  the blocks after it and exit 0 on SIGINT (the server's graceful shutdown);
- `<!-- example: shell -->`: run with bash (the venv's `mprpcgen` on PATH);
- `<!-- example: file PATH -->`: written to PATH, for the blocks after it to use;
- `<!-- example: idl PATH -->`: written to PATH and compiled with mprpcgen (exit 0);
- `<!-- example: fragment (why) -->`: shown only (commands, output, layout).

Blocks run in order in one scratch directory holding a copy of idl/. The README's port,
5000, is replaced by a free port for each server and the blocks after it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_PORT = 5000

_BLOCK = re.compile(
    r"(?:^<!--\s*example:\s*(?P<marker>.*?)\s*-->\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_KINDS = ("server", "shell", "file", "idl", "fragment")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    kind: str  # "script", or one of _KINDS
    arg: str  # the file path of a "file"/"idl" block, the reason of a "fragment"
    body: str

    def where(self) -> str:
        return f"README.md:{self.line}"


def parse(text: str) -> list[Block]:
    """The fenced blocks of `text`, each with what the README says to do with it."""
    blocks = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        marker, lang = (m["marker"] or "").strip(), m["lang"]
        kind, _, arg = marker.partition(" ")
        if not marker:
            if lang != "python":
                raise AssertionError(
                    f"README.md:{line}: a ```{lang} block without a marker: put "
                    "'<!-- example: fragment (why) -->' (or shell/file PATH/server) before it"
                )
            kind = "script"
        elif kind not in _KINDS:
            raise AssertionError(f"README.md:{line}: unknown example marker {marker!r}")
        if kind == "server" and lang != "python":
            raise AssertionError(f"README.md:{line}: a server block must be ```python")
        if kind in ("file", "idl") and not arg:
            raise AssertionError(f"README.md:{line}: 'example: {kind}' needs a path")
        blocks.append(Block(line, lang, kind, arg.strip(), m["body"]))
    return blocks


def test_parse_classifies_blocks() -> None:
    text = (
        "```python\nprint(1)\n```\n"
        "<!-- example: fragment (output) -->\n```\nerror: x\n```\n"
        "<!-- example: file idl/a.idl -->\n```\nservice A {}\n```\n"
    )
    blocks = parse(text)
    assert [(b.kind, b.arg, b.line) for b in blocks] == [
        ("script", "", 1),
        ("fragment", "(output)", 5),
        ("file", "idl/a.idl", 9),
    ]
    with pytest.raises(AssertionError, match=r"README.md:1: a ```sh block without a marker"):
        parse("```sh\nmake\n```\n")


def test_readme_python_blocks_are_run() -> None:
    blocks = parse(README.read_text(encoding="utf-8"))
    run = [b for b in blocks if b.lang == "python"]
    assert run, "README.md has no python example"
    assert all(b.kind in ("script", "server") for b in run), [b.where() for b in run]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free port outside the kernel's ephemeral range.

    The server binds it later, in another process: a port from the ephemeral range could
    meanwhile be handed to another test's `bind(port 0)` (tests run in parallel), and the
    README's client would then talk to that test's server.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, max(10_001, low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def _wait_listening(proc: subprocess.Popen[str], port: int, block: Block) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"{block.where()}: the server exited early:\n{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            # Not listening yet: poll the port (bounded by the deadline above).
            time.sleep(0.05)
    raise AssertionError(f"{block.where()}: the server did not listen on {port} within 30 s")


def _stop(proc: subprocess.Popen[str], block: Block) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{block.where()}: the server did not stop on SIGINT") from None
    assert proc.returncode == 0, f"{block.where()}: the server exited {proc.returncode}:\n{err}"


@pytest.mark.timeout(240)
def test_readme_examples_run(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "idl", tmp_path / "idl")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    server: tuple[subprocess.Popen[str], Block] | None = None
    port = README_PORT
    ran = 0
    try:
        for block in parse(README.read_text(encoding="utf-8")):
            body = re.sub(rf"\b{README_PORT}\b", str(port), block.body)
            if block.kind == "fragment":
                continue
            if block.kind in ("file", "idl"):
                target = tmp_path / block.arg
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.body, encoding="utf-8")
                if block.kind == "file":
                    continue
            if block.kind in ("shell", "idl"):
                out = tmp_path / f"idl_check_{block.line}"
                command = block.body if block.kind == "shell" else f"mprpcgen {block.arg} -o {out}"
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", command],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, f"{block.where()}: {done.stdout}{done.stderr}"
                ran += 1
                continue
            if block.kind == "server":
                if server is not None:
                    _stop(*server)
                port = _free_port()
                body = re.sub(rf"\b{README_PORT}\b", str(port), block.body)
            script = tmp_path / f"readme_{block.line}.py"
            script.write_text(body, encoding="utf-8")
            if block.kind == "server":
                proc = subprocess.Popen(
                    [sys.executable, str(script)],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                server = (proc, block)
                _wait_listening(proc, port, block)
            else:
                done = subprocess.run(
                    [sys.executable, str(script)],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, f"{block.where()}:\n{done.stdout}{done.stderr}"
            ran += 1
        if server is not None:
            _stop(*server)
            server = None
    finally:
        if server is not None and server[0].poll() is None:
            server[0].kill()
            server[0].communicate()
    assert ran >= 5, f"only {ran} README blocks ran"


def _section(text: str, heading: str) -> tuple[int, int]:
    """The first and last line numbers of the README section under `heading`."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    return start + 1, end


@pytest.mark.timeout(240)
def test_typed_walkthrough_passes_mypy_strict_and_ruff(tmp_path: Path) -> None:
    """The README says the editor and mypy check the servicer and the client: the
    walkthrough's Python blocks, with the package its IDL becomes, pass `mypy --strict`
    and ruff's pyflakes rules as written (a copy-pasted example must not start with
    errors; import order is left to the project that pastes it)."""
    text = README.read_text(encoding="utf-8")
    first, last = _section(text, "## Typed services with mprpcgen")
    blocks = [b for b in parse(text) if first <= b.line <= last]
    idl = next(b for b in blocks if b.kind == "file" and b.arg.endswith(".idl"))
    (tmp_path / idl.arg).write_text(idl.body, encoding="utf-8")
    scripts = []
    # The walkthrough: the blocks from the IDL file up to the next IDL example.
    for block in blocks[blocks.index(idl) + 1 :]:
        if block.kind == "idl":
            break
        if block.lang == "python" and block.kind in ("script", "server"):
            script = tmp_path / f"readme_{block.line}.py"
            script.write_text(block.body, encoding="utf-8")
            scripts.append(script.name)
    assert len(scripts) >= 2, "the walkthrough's servicer and client blocks were not found"
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "mprpcgen"), idl.arg, "-o", "."], cwd=tmp_path, check=True, timeout=60
    )
    for tool in (
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *scripts],
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--isolated",
            "--select",
            "F",
            *scripts,
        ],
    ):
        done = subprocess.run(tool, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(tool[2:4])}: {done.stdout}{done.stderr}"
