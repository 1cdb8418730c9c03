"""The command line as a new user meets it: `mprpcgen service.idl`, where the output goes,
what it says, and what generated code promises (issue 14, and issue 11's semantics)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ServerThread, generated_package
from mprpcgen.cli import main
from pymprpc.errors import ExpireWarning
from pymprpc.server import Server

ROOT = Path(__file__).resolve().parents[2]

TODO = """\
/// A to-do list.
service Todo version "1.4.2" {
    def add(title: str) -> int;
    @deprecated oneway def forget(title: str);
    stream titles() -> str;
}
"""


def _mprpcgen(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mprpcgen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _python(cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_without_o_writes_next_to_where_it_runs_and_says_what_it_did(tmp_path: Path) -> None:
    (tmp_path / "todo.idl").write_text(TODO)
    first = _mprpcgen(tmp_path, "todo.idl")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "mprpcgen: wrote 4 files to ."
    assert sorted(p.name for p in (tmp_path / "todo").iterdir()) == [
        "__init__.py",
        "client.py",
        "server.py",
        "types.py",
    ]
    assert not (tmp_path / "__init__.py").exists()  # the user's directory stays theirs
    again = _mprpcgen(tmp_path, "todo.idl")
    assert again.stdout.strip() == "mprpcgen: 4 files unchanged in ."


def test_packages_importing_each_other_need_no_package_around_them(tmp_path: Path) -> None:
    (tmp_path / "geo.idl").write_text("struct Point { x: float; y: float; }\n")
    (tmp_path / "maps.idl").write_text(
        'import "geo.idl";\nservice Maps { def center(p: Point) -> Point; }\n'
    )
    assert _mprpcgen(tmp_path, "maps.idl").returncode == 0
    assert not (tmp_path / "__init__.py").exists()
    done = _python(
        tmp_path,
        """
        from maps import MapsClient, MapsServicer
        from geo import Point
        print(MapsServicer.__name__, Point(x=1, y=2))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "MapsServicer Point(x=1, y=2)" in done.stdout


def test_package_option_for_output_inside_a_package(tmp_path: Path) -> None:
    (tmp_path / "geo.idl").write_text("struct Point { x: float; y: float; }\n")
    (tmp_path / "maps.idl").write_text(
        'import "geo.idl";\nservice Maps { def center(p: Point) -> Point; }\n'
    )
    (tmp_path / "myapp" / "rpc").mkdir(parents=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    args = ["maps.idl", "-o", "myapp/rpc", "--package", "myapp.rpc"]
    assert _mprpcgen(tmp_path, *args).returncode == 0
    assert not (tmp_path / "myapp" / "rpc" / "__init__.py").exists()
    assert "from myapp.rpc.geo.types import" in (tmp_path / "myapp/rpc/maps/types.py").read_text()
    done = _python(tmp_path, "from myapp.rpc.maps import MapsClient; print('ok')")
    assert done.returncode == 0, done.stderr


def test_package_is_inferred_from_init_files(tmp_path: Path) -> None:
    (tmp_path / "geo.idl").write_text("struct Point { x: float; }\n")
    (tmp_path / "maps.idl").write_text('import "geo.idl";\nstruct Route { a: Point; }\n')
    (tmp_path / "app" / "gen").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "gen" / "__init__.py").write_text("")
    assert _mprpcgen(tmp_path, "maps.idl", "-o", "app/gen").returncode == 0
    assert "from app.gen.geo.types import" in (tmp_path / "app/gen/maps/types.py").read_text()


def test_stale_files_are_removed_and_check_reports_them(tmp_path: Path) -> None:
    idl = tmp_path / "svc.idl"
    idl.write_text("struct P { x: int; }\nservice S { def f() -> int; }\n")
    assert main([str(idl), "-o", str(tmp_path / "out")]) == 0
    (tmp_path / "out" / "svc" / "notes.py").write_text("# the user's own file\n")
    idl.write_text("struct P { x: int; }\n")  # the service is deleted
    check = _mprpcgen(tmp_path, "svc.idl", "-o", "out", "--check")
    assert check.returncode == 1
    assert "out/svc/client.py is no longer generated (stale)" in check.stderr
    assert "out/svc/server.py is no longer generated (stale)" in check.stderr
    done = _mprpcgen(tmp_path, "svc.idl", "-o", "out")
    assert "removed 2 stale files" in done.stdout, done.stdout
    assert not (tmp_path / "out/svc/client.py").exists()
    assert (tmp_path / "out/svc/notes.py").exists()  # not ours: left alone
    assert _mprpcgen(tmp_path, "svc.idl", "-o", "out", "--check").returncode == 0


@pytest.fixture
def todo(tmp_path: Path) -> Iterator[object]:
    (tmp_path / "todo.idl").write_text(TODO)
    with generated_package(tmp_path / "todo.idl", tmp_path) as todo:
        yield todo


def test_servicer_docstring_says_where_methods_run(todo: object) -> None:
    doc = inspect.getdoc(todo.TodoServicer)  # type: ignore[attr-defined]
    assert doc is not None
    flat = " ".join(doc.split())
    assert "thread executor by default" in flat
    assert "shares this instance and its state" in flat
    assert "@executor(process)" in flat and "its own copy of the servicer" in flat


def test_version_reaches_the_generated_module(todo: object) -> None:
    assert todo.TodoServicer.VERSION == "1.4.2"  # type: ignore[attr-defined]
    assert todo.TodoClient.VERSION == "1.4.2"  # type: ignore[attr-defined]


def test_importing_a_client_does_not_import_the_server_module(todo: object) -> None:
    assert "todo.server" not in sys.modules
    assert todo.TodoClient  # type: ignore[attr-defined]
    assert "todo.server" not in sys.modules
    assert todo.TodoServicer  # type: ignore[attr-defined]  # loaded on first use
    assert "todo.server" in sys.modules


def test_all_exports_user_facing_names_only(todo: object) -> None:
    assert sorted(todo.__all__) == [  # type: ignore[attr-defined]
        "AsyncTodoClient",
        "TodoClient",
        "TodoServicer",
        "register_todo",
    ]


def test_deprecated_oneway_warns_the_caller(todo: object) -> None:
    class Todo(todo.TodoServicer):  # type: ignore[attr-defined,name-defined,misc]
        def add(self, title: str) -> int:
            return 1

        def forget(self, title: str) -> None:
            pass

        async def titles(self) -> Iterator[str]:  # type: ignore[misc]
            yield "a"

    server = Server(("127.0.0.1", 0))
    todo.register_todo(server, Todo())  # type: ignore[attr-defined]
    with ServerThread(server) as thread, todo.TodoClient(thread.url) as client:  # type: ignore[attr-defined]
        with pytest.warns(ExpireWarning, match=r"forget\(\) is deprecated") as record:
            client.forget("milk")
        assert record[0].filename == __file__  # points at the caller's line
        assert list(client.titles()) == ["a"]


# Generated at the default line length (100), imports of 89 to 100 columns: ruff's import
# sorter wraps them at its default 88, so they must come out wrapped (found by
# tests/attacks_gen's random IDL: `from .types import Server, Type_1, ..., _Server2Methods`).
WIDE_IMPORTS = """\
struct CustomerRecord { id: str; }
struct InvoiceRecord { id: str; }
struct PaymentRecord { id: str; }

service Billing {
    def customer(r: CustomerRecord) -> InvoiceRecord;
    def pay(r: PaymentRecord) -> str;
}

service Ledger { def ping() -> str; }
"""


def test_imports_wider_than_88_columns_pass_ruff_defaults(tmp_path: Path) -> None:
    (tmp_path / "wide.idl").write_text(WIDE_IMPORTS)
    assert main([str(tmp_path / "wide.idl"), "-o", str(tmp_path / "out")]) == 0
    package = tmp_path / "out" / "wide"
    client = (package / "client.py").read_text()
    # On one line, 96 columns: written one name per line instead.
    assert "from .types import (\n    CustomerRecord,\n" in client
    # 90 columns once indented under `if TYPE_CHECKING:` (86 without the indent).
    assert "    from .server import (\n" in (package / "__init__.py").read_text()
    project = ["--config", str(ROOT / "pyproject.toml"), "--config", "lint.extend-ignore=['D']"]
    for args in (["--isolated"], project):  # ruff's defaults, the project's rules
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", *args, "."],
            capture_output=True,
            text=True,
            cwd=tmp_path / "out",
            timeout=120,
        )
        assert done.returncode == 0, done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--isolated", "--line-length", "100"],
        capture_output=True,
        text=True,
        cwd=tmp_path / "out",
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
