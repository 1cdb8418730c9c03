"""A stateful servicer keeps its state: the issue's Todo service, generated and served.

Every `def` method of a servicer is a bound method; it must run where it shares the one
servicer instance (the thread pool by default), or writes land in a worker's copy and
reads see another. `@executor(process)` still forks, and says so at registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import arun, on_sys_path
from pymprpc.server import Server
from pymprpc.testing import client_for, sync_client_for

TODO_IDL = """\
service Todo {
    def add(title: str) -> int;     // returns the new count
    def items() -> list<str>;
}
"""

FORKED_IDL = """\
service Forked {
    @executor(process) def bump() -> int;
}
"""


@contextlib.contextmanager
def _generated(tmp_path: Path, name: str, source: str) -> Iterator[ModuleType]:
    """Package `name` generated from `source` by the `mprpcgen` command, imported."""
    idl = tmp_path / f"{name}.idl"
    idl.write_text(source)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "mprpcgen", str(idl), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with on_sys_path(out, name):
        yield importlib.import_module(name)


@pytest.fixture
def todo_module(tmp_path: Path) -> Iterator[ModuleType]:
    with _generated(tmp_path, "todo", TODO_IDL) as module:
        yield module


def _todo_servicer(module: ModuleType) -> Any:
    class Todo(module.TodoServicer):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            self.list: list[str] = []

        def add(self, title: str) -> int:
            self.list.append(title)
            return len(self.list)

        def items(self) -> list[str]:
            return list(self.list)

    return Todo()


def test_todo_blocking_client_sees_every_write(todo_module: ModuleType) -> None:
    server = Server(("127.0.0.1", 0))
    servicer = _todo_servicer(todo_module)
    todo_module.register_todo(server, servicer)
    with sync_client_for(server, todo_module.TodoClient) as todo:
        assert [todo.add(t) for t in ("milk", "eggs", "bread")] == [1, 2, 3]
        assert todo.items() == ["milk", "eggs", "bread"]
    assert servicer.list == ["milk", "eggs", "bread"]


def test_todo_async_client_sees_every_write(todo_module: ModuleType) -> None:
    server = Server(("127.0.0.1", 0))
    servicer = _todo_servicer(todo_module)
    todo_module.register_todo(server, servicer)

    async def main() -> None:
        async with client_for(server, todo_module.AsyncTodoClient) as todo:
            assert [await todo.add(t) for t in ("milk", "eggs")] == [1, 2]
            assert await todo.items() == ["milk", "eggs"]

    arun(main())
    assert servicer.list == ["milk", "eggs"]


def test_todo_keeps_every_write_under_concurrent_calls(todo_module: ModuleType) -> None:
    """Many calls at once from one connection: nothing is lost."""
    server = Server(("127.0.0.1", 0))
    servicer = _todo_servicer(todo_module)
    todo_module.register_todo(server, servicer)

    async def main() -> list[int]:
        async with client_for(server, todo_module.AsyncTodoClient) as todo:
            await asyncio.gather(*(todo.add(f"t{i}") for i in range(50)))
            return list(await todo.items())

    items = arun(main())
    # Calls may run on several threads at once (append/len is the servicer's business),
    # but every write reaches the one instance.
    assert sorted(items) == sorted(f"t{i}" for i in range(50))
    assert len(servicer.list) == 50


def test_executor_process_in_idl_forks_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _generated(tmp_path, "forked", FORKED_IDL) as module:

        class Forked(module.ForkedServicer):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                self.value = 0

            def bump(self) -> int:
                self.value += 1
                return self.value

        server = Server(("127.0.0.1", 0), max_workers=1)
        servicer = Forked()
        with caplog.at_level(logging.INFO, logger="pymprpc.server"):
            module.register_forked(server, servicer)
        notes = [r for r in caplog.records if "own copy" in r.getMessage()]
        assert len(notes) == 1 and notes[0].levelno == logging.INFO
        with sync_client_for(server, module.ForkedClient) as client:
            assert client.bump() == 1
            assert client.bump() == 2  # the worker's copy
        assert servicer.value == 0  # the server's copy never changed


def test_servicer_docstring_says_where_methods_run(todo_module: ModuleType) -> None:
    doc = todo_module.TodoServicer.__doc__ or ""
    assert "thread executor" in doc and "own copy" in doc
    source = Path(todo_module.__file__).with_name("server.py").read_text()
    # The generator's own text is wrapped to fit, not continued with backslashes.
    assert not [line for line in source.splitlines() if line.endswith("\\")]
