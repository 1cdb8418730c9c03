"""Packaging: one version, the [gen] extra's hint, what the wheel ships and what it declares."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import mprpcgen
import pymprpc

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Runs the mprpcgen entry point as if lark and jinja2 were not installed: a None entry in
# sys.modules makes `import lark` raise ImportError(name="lark"), as a missing package does.
WITHOUT_GEN = """
import sys
sys.modules["lark"] = None
sys.modules["jinja2"] = None
{run}
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "run",
    [
        "from mprpcgen.entry import main; sys.exit(main())",
        "import runpy; runpy.run_module('mprpcgen', run_name='__main__')",
    ],
    ids=["script", "python-m"],
)
def test_mprpcgen_without_gen_extra_says_what_to_install(run: str) -> None:
    done = _run(WITHOUT_GEN.format(run=run), "idl/calculator.idl", "-o", "out")
    assert done.returncode == 1
    assert "install pymprpc[gen]" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_other_import_errors_are_not_disguised_as_a_missing_extra() -> None:
    code = (
        "import sys; sys.modules['mprpcgen.loader'] = None\n"
        "from mprpcgen.entry import main; sys.exit(main())"
    )
    done = _run(code, "idl/calculator.idl", "-o", "out")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "mprpcgen.loader" in done.stderr
    assert "install pymprpc[gen]" not in done.stderr


def test_console_script_goes_through_the_entry_point() -> None:
    assert PYPROJECT["project"]["scripts"]["mprpcgen"] == "mprpcgen.entry:main"


def test_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "runtime/pymprpc/__init__.py"
    assert mprpcgen.__version__ == pymprpc.__version__
    assert importlib.metadata.version("pymprpc") == pymprpc.__version__
    done = _run("from mprpcgen.entry import main; import sys; sys.exit(main())", "--version")
    assert done.stdout.strip() == f"mprpcgen {pymprpc.__version__}"


def test_dev_tools_are_dependency_groups_not_extras() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"gen", "otel"}  # what users install; nothing for developers
    assert {"test", "bench", "docs"} <= set(PYPROJECT["dependency-groups"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    (path,) = out.glob("pymprpc-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.timeout(150)
def test_wheel_declares_license_classifiers_and_only_the_gen_extra(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    dist_info = f"pymprpc-{pymprpc.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert "pymprpc/py.typed" in names
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert f"Version: {pymprpc.__version__}" in metadata
    for classifier in (
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX",
        "Typing :: Typed",
    ):
        assert f"Classifier: {classifier}" in metadata
    extras = [line for line in metadata.splitlines() if line.startswith("Provides-Extra:")]
    assert extras == ["Provides-Extra: gen", "Provides-Extra: otel"]


@pytest.mark.timeout(150)
def test_wheel_ships_nothing_that_needs_the_repository(wheel: zipfile.ZipFile) -> None:
    modules = [n for n in wheel.namelist() if n.endswith(".py")]
    assert "pymprpc/demo.py" in modules  # runs from the wheel: it needs pymprpc alone
    assert "mprpcgen/demo.py" not in modules  # needs generated_examples/
    shipped = {n.split("/")[0] for n in modules}
    for name in modules:
        tree = ast.parse(wheel.read(name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                known = root in sys.stdlib_module_names or root in shipped
                # opentelemetry: pymprpc/otel.py only, the `otel` extra (test_otel checks
                # that nothing else imports it); pytest: the opt-in pytest plugin only.
                optional = {
                    "pymprpc/otel.py": "opentelemetry",
                    "pymprpc/pytest_plugin.py": "pytest",
                }
                extra = {"msgpack", "lark", "jinja2", optional.get(name, "msgpack")}
                assert known or root in extra, f"{name} imports {root}"
