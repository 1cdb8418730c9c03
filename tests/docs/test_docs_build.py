"""The documents: the API reference builds in strict mode; docs/protocol.md matches the code."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pymprpc import Server
from pymprpc.codes import Code
from pymprpc.protocol import Feature

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


@pytest.mark.timeout(180)
def test_api_reference_builds_strictly(tmp_path: Path) -> None:
    """A docstring the reference cannot render, or a broken link, fails the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    server_page = (tmp_path / "api" / "server" / "index.html").read_text(encoding="utf-8")
    # Server's parameters are documented in its docstring, and rendered.
    for option in ("max_inflight", "kept_results_ttl", "grace_period", "reuse_port"):
        assert option in server_page
    assert (tmp_path / "protocol" / "index.html").is_file()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", PROTOCOL, re.M | re.S)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def test_protocol_document_lists_every_code() -> None:
    table = _section("Status codes")
    for code in Code:
        assert re.search(rf"\b{code.value}\b", table), f"code {code.value} ({code.name})"


def test_protocol_document_describes_every_feature() -> None:
    table = _section("Negotiated extensions")
    for feature in Feature:
        assert f"| `{feature.value}` |" in table, feature


def test_protocol_limits_name_real_server_options_and_their_defaults() -> None:
    parameters = inspect.signature(Server).parameters
    rows = [line for line in _section("Limits").splitlines() if line.startswith("| ")][2:]
    named = 0
    for row in rows:
        _, default, option = (cell.strip() for cell in row.strip("|").split("|")[:3])
        for name in re.findall(r"`(\w+)`", option.split("(")[0]):
            assert name in parameters, f"docs/protocol.md names Server option {name!r}"
            named += 1
            value = parameters[name].default
            if isinstance(value, int | float) and not isinstance(value, bool):
                shown = default.replace(",", "").replace(" MiB", "").replace(" s", "")
                expected = value / 2**20 if " MiB" in default else value
                assert float(shown) == expected, f"{name}: documented {default}, is {value}"
    assert named >= 8


def test_every_server_parameter_is_documented_in_its_docstring() -> None:
    doc = inspect.getdoc(Server) or ""
    args = doc.partition("\nArgs:\n")[2]
    assert args, "Server's docstring has no Args section"
    for name in inspect.signature(Server).parameters:
        assert re.search(rf"^    {name}:", args, re.M), f"Server parameter {name!r}"


def test_every_system_method_documented_exists_and_every_one_is_documented() -> None:
    """The Introspection section names exactly the `system.*` methods a server offers
    once `register_introspection_functions()` was called."""
    section = _section("Introspection (`system.*`)")
    documented = set(re.findall(r"`(system\.\w+)\(", section))
    server = Server(("127.0.0.1", 0))
    server.register_introspection_functions()
    offered = {name for name in server._core.registry.names() if name.startswith("system.")}
    assert "system.listServices" in documented
    assert documented == offered
