"""Server options: one frozen config, documented, with the 0.0.3 spellings kept."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import pymprpc.server
from pymprpc.server import Server
from pymprpc.server.config import FD_RESERVE, ServerConfig, default_max_connections


def test_idle_timeout_and_its_old_spelling() -> None:
    assert Server(("127.0.0.1", 0), idle_timeout=5).config.idle_timeout == 5
    assert Server(("127.0.0.1", 0), timeout=7).config.idle_timeout == 7  # 0.0.3
    assert Server(("127.0.0.1", 0)).config.idle_timeout == 180
    assert Server(("127.0.0.1", 0), timeout=None).config.settings().idle_timeout is None
    with pytest.raises(TypeError, match="not both"):
        Server(("127.0.0.1", 0), idle_timeout=5, timeout=5)


def test_the_config_is_frozen_and_holds_every_option() -> None:
    server = Server(("127.0.0.1", 0), max_inflight=3, kept_results_bytes=10, backlog=50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.config.max_inflight = 4  # type: ignore[misc]
    options = set(inspect.signature(Server).parameters) - {"addr", "auth", "timeout", "loop"}
    assert options <= {f.name for f in dataclasses.fields(ServerConfig)}
    assert (server.config.max_inflight, server.config.kept_results_bytes) == (3, 10)


def test_server_state_is_private() -> None:
    server = Server(("127.0.0.1", 0))
    public = [name for name in vars(server) if not name.startswith("_")]
    assert public == []


def test_every_server_parameter_is_documented_in_its_docstring() -> None:
    doc = Server.__doc__ or ""
    for name in inspect.signature(Server).parameters:
        assert re.search(rf"^\s+(\w+, )*{name}(, \w+)*:", doc, re.M), name


def test_default_max_connections_stays_below_the_fd_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = default_max_connections()  # may raise the soft limit (never lowers it)
    soft_after, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft_after >= soft
    assert limit <= max(1, soft_after - FD_RESERVE)


def test_no_import_cycle_inside_the_server_package() -> None:
    package = Path(pymprpc.server.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        imports = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    imports.add(node.module.split(".")[0])
                else:
                    imports.update(alias.name for alias in node.names)
        graph[path.stem] = imports

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cyclic = sorted(m for m in graph if m != "__init__" and reaches(m, m, set()))
    assert cyclic == []
