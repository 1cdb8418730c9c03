"""`Server.bind()` refusing while multiprocessing imports the main module for a child
(`importing_main_for_a_child`): no false positive for a spawn or forkserver child whose
target (not the main module) starts a server, on this Python and on 3.13."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attacks_review10.kit import ROOT

PY313 = Path("/work/main/.venv313/bin/python")

SCRIPT = """
    import multiprocessing as mp
    import sys

    def serve_once(q):
        from pymprpc import RPC, Server
        from pymprpc.server.workers.pool import importing_main_for_a_child
        from pymprpc.testing import serve_in_thread

        async def ping():
            return "pong"

        server = Server(("127.0.0.1", 0))
        server.register_function(ping)
        try:
            with serve_in_thread(server) as running, RPC(running.url, timeout=5) as rpc:
                q.put(f"{rpc.ping()} {importing_main_for_a_child()}")
        except BaseException as exc:
            q.put(f"{type(exc).__name__}: {exc}")

    if __name__ == "__main__":
        out = []
        for method in sys.argv[1:]:
            ctx = mp.get_context(method)
            q = ctx.Queue()
            p = ctx.Process(target=serve_once, args=(q,))
            p.start()
            out.append(q.get(timeout=30))
            p.join(10)
        print(" | ".join(out), flush=True)
"""


def _run(python: str, tmp_path: Path) -> str:
    # A file, not -c: spawn and forkserver import the main module from its path.
    script = tmp_path / "main_guard.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT)])}
    done = subprocess.run(
        [python, str(script), "spawn", "forkserver"],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(60)
def test_child_target_starts_a_server(tmp_path: Path) -> None:
    assert _run(sys.executable, tmp_path) == "pong False | pong False"


@pytest.mark.timeout(60)
@pytest.mark.skipif(not PY313.exists(), reason="needs the Python 3.13 environment")
def test_child_target_starts_a_server_on_313(tmp_path: Path) -> None:
    assert _run(str(PY313), tmp_path) == "pong False | pong False"
