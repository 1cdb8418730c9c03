# ruff: noqa: B023, E501
"""Black-box attacks on mprpcgen: a corpus of valid and invalid IDL files.

The valid corpus is generated once per line length (in process: a subprocess per file
cost a second each) and checked in one batch per tool: ruff (defaults and project rules)
and ruff format at every length, mypy --strict at the shortest and the default, then
imported and round-tripped over the blocking and asyncio clients against a real server.
Every invalid file must fail with a positioned message and write nothing.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import enum
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import threading
import types
import typing
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mprpcgen.cli import main

HERE = Path(__file__).parent
VALID = HERE / "valid"
INVALID = HERE / "invalid"
BIN = Path(sys.executable).parent
ROOTS = [*sorted(p for p in VALID.glob("*.idl")), VALID / "diamond" / "top.idl"]
INVALID_FILES = sorted(p for p in INVALID.glob("*.idl"))
# README: "any line length from 80 up". 80 and 84 take the wrapped client __init__
# signature, 87 the one-line one at its tightest; 100 is the default.
LINE_LENGTHS = (80, 84, 87, 100)
DEFAULT_LENGTH = 100
PROJECT_RUFF = """
line-length = {n}
target-version = "py311"
[lint]
select = ["E", "F", "W", "I", "B", "UP", "N", "SIM", "RUF", "BLE"]
ignore = ["RUF022", "N818"]
"""
ERR = re.compile(r"^(?P<file>[^\n:]+\.idl):(?P<line>\d+):(?P<col>\d+): error: .+$", re.M)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def gen(*args: str | Path) -> Result:
    """The mprpcgen command line, run in this process; its exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())


def run(
    cmd: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def packages(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if (p / "__init__.py").exists())


def mypy_strict(out: Path) -> subprocess.CompletedProcess[str]:
    args = [x for p in packages(out) for x in ("-p", p)]
    env = dict(os.environ, MYPYPATH=str(out))
    cmd = [BIN / "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, *args]
    return run(cmd, cwd=out, env=env)


def ruff_all(out: Path, n: int, cfg: Path) -> list[str]:
    """Failures of ruff check (defaults, then project rules) and ruff format at length n."""
    cfg.write_text(PROJECT_RUFF.format(n=n))
    ruff = BIN / "ruff"
    checks = {
        "ruff check (defaults)": [ruff, "check", "--isolated", "--line-length", str(n), "."],
        "ruff check (project rules)": [ruff, "check", "--config", cfg, "."],
        "ruff format": [ruff, "format", "--check", "--isolated", "--line-length", str(n), "."],
    }
    failed = []
    for what, cmd in checks.items():
        r = run([*cmd[:2], "--no-cache", *cmd[2:]], cwd=out)
        if r.returncode != 0:
            failed.append(f"{what} at {n}:\n{r.stdout[-3000:]}{r.stderr[-1000:]}")
    return failed


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The valid corpus generated at every line length (one directory each)."""
    outs: dict[int, Path] = {}
    for n in LINE_LENGTHS:
        out = tmp_path_factory.mktemp(f"gen{n}")
        r = gen(*ROOTS, "-o", out, "--line-length", str(n))
        assert r.returncode == 0, r.stderr
        outs[n] = out
    return outs


@contextlib.contextmanager
def imported_from(out: Path) -> Iterator[None]:
    """`out` on sys.path, with its packages imported afresh and forgotten afterwards."""
    names = set(packages(out))

    def forget() -> None:
        for m in list(sys.modules):
            if m.split(".")[0] in names:
                del sys.modules[m]

    forget()
    sys.path.insert(0, str(out))
    try:
        yield
    finally:
        sys.path.remove(str(out))
        forget()


# ---------------------------------------------------------------- the valid corpus


def test_no_init_in_output_dir(generated: dict[int, Path]) -> None:
    for out in generated.values():
        assert not (out / "__init__.py").exists()


@pytest.mark.timeout(120)
def test_ruff_and_format_at_every_line_length(generated: dict[int, Path], tmp_path: Path) -> None:
    failed = [f for n, out in generated.items() for f in ruff_all(out, n, tmp_path / "ruff.toml")]
    assert not failed, "\n".join(failed)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n", [min(LINE_LENGTHS), DEFAULT_LENGTH])
def test_mypy_strict(generated: dict[int, Path], n: int) -> None:
    r = mypy_strict(generated[n])
    assert r.returncode == 0, r.stdout[-8000:]


def test_check_is_clean_then_stale(generated: dict[int, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert gen(*ROOTS, "-o", out).returncode == 0
    r = gen(*ROOTS, "-o", out, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    edited = sorted(out.glob("*/types.py"))
    assert len(edited) >= len(ROOTS)
    for f in edited:
        f.write_text(f.read_text() + "\n# edited\n")
    r = gen(*ROOTS, "-o", out, "--check")
    assert r.returncode == 1, r.stdout + r.stderr
    for f in edited:  # each edited file is reported on its own
        assert f"{f} is out of date" in r.stderr, (f, r.stderr)


def test_no_o_writes_cwd_without_init(tmp_path: Path) -> None:
    r = run([sys.executable, "-m", "mprpcgen", VALID / "ticketing.idl"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ticketing" / "client.py").exists()
    assert not (tmp_path / "__init__.py").exists()


# ---------------------------------------------------------------- doc/literal fidelity


def idl_docs(path: Path) -> list[str]:
    """The /// blocks of a file, joined as inspect.getdoc would show them."""
    blocks: list[str] = []
    cur: list[str] = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        s = line.strip()
        if s.startswith("///"):
            t = s[3:]
            cur.append(t[1:] if t.startswith(" ") else t)
        elif cur:
            blocks.append(inspect.cleandoc("\n".join(x.expandtabs() for x in cur)).strip("\n"))
            cur = []
    return [b for b in blocks if b]


# ---------------------------------------------------------------- round trips


def sample(tp: Any, depth: int = 0) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return {"k": [1, "two", None, 3.5, True]}
    if tp is type(None) or tp is None:
        return None
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return None if depth > 3 else sample(inner[0], depth + 1)
    if origin is list:
        return [] if depth > 4 else [sample(args[0], depth + 1), sample(args[0], depth + 1)]
    if origin is dict:
        return {} if depth > 4 else {"a\x00é": sample(args[1], depth + 1)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    if tp is bool:
        return True
    if tp is int:
        return -(2**63)
    if tp is float:
        return -1.5e300
    if tp is str:
        return "\"''' \\ \x00 é 🎉"
    if tp is bytes:
        return b"\x00\xff"
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kw = {f.name: sample(hints[f.name], depth + 1) for f in dataclasses.fields(tp)}
        return tp(**kw)
    raise AssertionError(f"no sample for {tp!r}")


def servicer_for(cls: type) -> Any:
    ns: dict[str, Any] = {}
    for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
        if not getattr(fn, "__isabstractmethod__", False):
            continue
        hints = typing.get_type_hints(fn)
        ret = hints.get("return")
        if inspect.isasyncgenfunction(fn):
            item = typing.get_args(ret)[0]

            async def agen(self: Any, *a: Any, _i: Any = item, **k: Any) -> AsyncIterator[Any]:
                for _ in range(2):
                    yield sample(_i)

            ns[name] = agen
        elif inspect.isgeneratorfunction(fn) or typing.get_origin(ret) is Iterator:
            item = typing.get_args(ret)[0]

            def gen(self: Any, *a: Any, _i: Any = item, **k: Any) -> Iterator[Any]:
                for _ in range(2):
                    yield sample(_i)

            ns[name] = gen
        elif inspect.iscoroutinefunction(fn):

            async def co(self: Any, *a: Any, _r: Any = ret, **k: Any) -> Any:
                return sample(_r)

            ns[name] = co
        else:

            def plain(self: Any, *a: Any, _r: Any = ret, **k: Any) -> Any:
                return sample(_r)

            ns[name] = plain
    return type("Impl", (cls,), ns)()


def call_args(fn: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    return {
        p: sample(hints[p])
        for p in sig.parameters
        if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("idl", ROOTS, ids=lambda p: p.stem)
def test_round_trip(idl: Path, generated: dict[int, Path]) -> None:
    from pymprpc.server import Server

    out = generated[DEFAULT_LENGTH]
    with imported_from(out):
        pkg = importlib.import_module(idl.stem)
        srv_mod = importlib.import_module(f"{idl.stem}.server")
        servicers = {
            n[: -len("Servicer")]: getattr(srv_mod, n)
            for n in dir(srv_mod)
            if n.endswith("Servicer") and inspect.isclass(getattr(srv_mod, n))
        }
        # docs: every /// block of the file must appear verbatim as some docstring.
        consts = []
        for py in (out / idl.stem).glob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    consts.append(inspect.cleandoc(node.value))
        all_docs = "\n\n".join(consts)
        for block in idl_docs(idl):
            assert block in all_docs, f"doc not kept verbatim: {block!r}"

        server = Server(("127.0.0.1", 0))
        for svc, cls in servicers.items():
            snake = re.sub(r"(?<!^)(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])", "_", svc).lower()
            getattr(srv_mod, "register_" + snake)(server, servicer_for(cls), prefix=f"{svc}.")
        with server:
            th = threading.Thread(target=server.run_forever, daemon=True)
            th.start()
            try:
                _drive(server, servicers, pkg)
            finally:
                server.stop()
                th.join(15)


def _drive(server: Any, servicers: dict[str, Any], pkg: Any) -> None:
    if True:
        addr = server.address
        url = f"tcp://{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        for svc, cls in servicers.items():
            client_cls = getattr(pkg, f"{svc}Client")
            aclient_cls = getattr(pkg, f"Async{svc}Client")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with client_cls(url, prefix=f"{svc}.") as c:
                    for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
                        if not getattr(fn, "__isabstractmethod__", False):
                            continue
                        ret = typing.get_type_hints(fn).get("return")
                        got = getattr(c, name)(**call_args(fn))
                        if inspect.isasyncgenfunction(fn):
                            got = list(got)
                            want: Any = [sample(typing.get_args(ret)[0])] * 2
                        else:
                            want = sample(ret)
                        if not (ret is None or ret is type(None)) or got is not None:
                            assert got == want, f"{svc}.{name}: {got!r} != {want!r}"

                async def amain() -> None:
                    async with aclient_cls(url, prefix=f"{svc}.") as ac:
                        for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
                            if not getattr(fn, "__isabstractmethod__", False):
                                continue
                            ret = typing.get_type_hints(fn).get("return")
                            if inspect.isasyncgenfunction(fn):
                                got = [x async for x in getattr(ac, name)(**call_args(fn))]
                                want = [sample(typing.get_args(ret)[0])] * 2
                            else:
                                got = await getattr(ac, name)(**call_args(fn))
                                want = sample(ret)
                            assert got == want or (got is None and ret in (None, type(None))), (
                                f"async {svc}.{name}: {got!r} != {want!r}"
                            )

                asyncio.run(amain())


# ---------------------------------------------------------------- invalid files


@pytest.mark.parametrize("idl", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid(idl: Path, tmp_path: Path) -> None:
    """Exit 1, `file:line:col: error:`, the line and a caret, no raw control character
    in the message, and nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    r = gen(idl, "-o", out)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    m = ERR.search(r.stderr)
    assert m, r.stderr
    lines = r.stderr.splitlines()
    i = lines.index(m.group(0))
    assert re.match(r"^\s*\^~*$", lines[i + 2]), r.stderr
    assert list(out.rglob("*")) == [], list(out.rglob("*"))
    bad = [c for c in r.stderr if ord(c) < 32 and c != "\n"]
    assert not bad, repr(r.stderr)


def test_raw_nul_is_reported_at_the_nul_escaped() -> None:
    r = gen(INVALID / "raw_nul_in_string.idl", "-o", os.devnull + "_nonexistent_dir")
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.endswith(
        ':1:23: error: string "a\\x00b" holds a raw NUL character; write \\0 instead'
    )
    assert "null bytes" not in r.stderr  # not Python's own message


@pytest.mark.parametrize("module", ["pymprpc", "msgpack", "mprpcgen"])
def test_project_module_names_refused(module: str) -> None:
    r = gen(INVALID / f"{module}.idl", "-o", os.devnull + "_nonexistent_dir")
    assert r.returncode == 1
    assert f"would generate package '{module}', which would shadow" in r.stderr, r.stderr


def test_generator_only_dependencies_allowed_as_names(tmp_path: Path) -> None:
    """Generated code imports pymprpc (and so msgpack), never lark or jinja2."""
    for name in ("lark", "jinja2"):
        idl = tmp_path / f"{name}.idl"
        idl.write_text("struct A { x: int = 1; }\n")
        r = gen(idl, "-o", tmp_path / "o")
        assert r.returncode == 0, r.stderr
        imports = (tmp_path / "o" / name / "types.py").read_text()
        assert not re.search(r"^(from|import) (lark|jinja2)", imports, re.M)


# ---------------------------------------------------------------- literal defaults

FIELD_DEFAULT = re.compile(
    r"\b([a-z_][a-z0-9_]*): (?:str|int|float|bool)\?? = (\"(?:[^\"\\]|\\.)*\"|[-0-9.e+]+|true|false)"
)


@pytest.mark.parametrize(
    "stem", ["strings_esc", "numeric_edges", "docs_odd", "iot_telemetry", "ticketing"]
)
def test_literal_defaults(stem: str, generated: dict[int, Path]) -> None:
    idl = VALID / f"{stem}.idl"
    with imported_from(generated[DEFAULT_LENGTH]):
        tmod = importlib.import_module(f"{stem}.types")
        cmod = importlib.import_module(f"{stem}.client")
    found: dict[str, set[Any]] = {}
    for cls in list(vars(tmod).values()) + list(vars(cmod).values()):
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                found.setdefault(f.name, set()).add(repr(f.default))
        elif inspect.isclass(cls):
            for fn in vars(cls).values():
                if inspect.isfunction(fn):
                    for p in inspect.signature(fn).parameters.values():
                        if p.default is not inspect.Parameter.empty:
                            found.setdefault(p.name, set()).add(repr(p.default))
    text = idl.read_text(encoding="utf-8-sig")
    for name, lit in FIELD_DEFAULT.findall(text):
        want = {"true": True, "false": False}.get(lit)
        if want is None:
            want = ast.literal_eval(lit)
        ok = {
            repr(want),
            repr(float(want)) if isinstance(want, int) and not isinstance(want, bool) else "",
        }
        assert ok & found.get(name, set()), (name, lit, found.get(name))


# ---------------------------------------------------------------- outputs and the CLI


def test_check_reports_orphan_after_service_removed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    idl = src / "shop.idl"
    idl.write_text("struct A { x: int = 1; }\nservice Shop { def f(a: A) -> A; }\n")
    assert gen(idl, "-o", out).returncode == 0
    idl.write_text("struct A { x: int = 1; }\n")
    r = gen(idl, "-o", out, "--check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert gen(idl, "-o", out).returncode == 0
    assert not (out / "shop" / "client.py").exists()
    assert gen(idl, "-o", out, "--check").returncode == 0


def test_invalid_file_leaves_previous_output_intact(tmp_path: Path) -> None:
    idl = tmp_path / "keep.idl"
    idl.write_text("service Keep { def f() -> int; }\n")
    out = tmp_path / "out"
    assert gen(idl, "-o", out).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*.py")}
    idl.write_text("service Keep { def f() -> itn; }\n")
    r = gen(idl, "-o", out)
    assert r.returncode == 1
    assert {p: p.read_bytes() for p in out.rglob("*.py")} == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--line-length", "79"], 1, "--line-length 79 is too short"),
        (["--line-length", "abc"], 2, "invalid int value"),
        (["nonexistent.idl"], 1, "cannot read nonexistent.idl"),
        (["--package", "bad-name"], 1, "'bad-name' is not a Python identifier"),
    ],
)
def test_cli_misuse(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    idl = tmp_path / "cli.idl"
    idl.write_text("service Cli { def f() -> int; }\n")
    r = gen(idl, *args, "-o", tmp_path / "o")
    assert r.returncode == code and message in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_misuse_in_a_process_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "x.idl").write_text("service X { def f() -> int; }\n")
    r = run([sys.executable, "-m", "mprpcgen", "x.idl", "--package", "1abc"], cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("mprpcgen: error: --package '1abc'"), r.stderr


# ---------------------------------------------------------------- --package / inferred package


@pytest.mark.parametrize(
    ("pkg", "why"),
    [
        ("bad-name", "'bad-name' is not a Python identifier"),
        ("class.rpc", "'class' is a Python keyword"),
        ("1abc", "'1abc' is not a Python identifier"),
        ("a..b", "it has an empty part"),
    ],
)
@pytest.mark.parametrize("idl", [VALID / "diamond" / "top.idl", VALID / "ticketing.idl"])
def test_package_option_validated(pkg: str, why: str, idl: Path, tmp_path: Path) -> None:
    """Refused whether or not the output needs it (ticketing imports nothing)."""
    r = gen(idl, "-o", tmp_path / "o", "--package", pkg)
    assert r.returncode == 1, r.stderr
    assert r.stderr == f"mprpcgen: error: --package {pkg!r} is not a dotted import name: {why}\n"
    assert not (tmp_path / "o").exists()


def test_package_option_json_is_fine(tmp_path: Path) -> None:
    """A package named like a stdlib module is the user's business: it is a valid name."""
    out = tmp_path / "o"
    r = gen(VALID / "diamond" / "top.idl", "-o", out, "--package", "json")
    assert r.returncode == 0, r.stderr
    for py in out.rglob("*.py"):
        compile(py.read_text(), str(py), "exec")


@pytest.mark.parametrize("dirname", ["my-app", "class"])
def test_inferred_package_from_non_identifier_dir(dirname: str, tmp_path: Path) -> None:
    out = tmp_path / dirname
    out.mkdir()
    (out / "__init__.py").write_text("")
    r = gen(VALID / "diamond" / "top.idl", "-o", out)
    assert r.returncode == 1, r.stderr
    assert f"its import name would be '{dirname}'" in r.stderr
    assert "pass --package NAME or rename the directory" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py"]
    # Told the name, it generates.
    r = gen(VALID / "diamond" / "top.idl", "-o", out, "--package", "my_app")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- line endings


def test_cr_only_line_endings(tmp_path: Path) -> None:
    """A file saved with classic-Mac CR line endings reads like LF, and generates the same."""
    data = (VALID / "cr_only_line_endings.idl.txt").read_bytes()
    assert b"\n" not in data
    for name, text in (("cr_only", data), ("lf_only", data.replace(b"\r", b"\n"))):
        d = tmp_path / name
        d.mkdir()
        (d / "cr_only.idl").write_bytes(text)
        r = gen(d / "cr_only.idl", "-o", d / "o")
        assert r.returncode == 0, r.stderr
    cr = {
        p.relative_to(tmp_path / "cr_only" / "o"): p.read_text()
        for p in (tmp_path / "cr_only" / "o").rglob("*.py")
    }
    lf = {
        p.relative_to(tmp_path / "lf_only" / "o"): p.read_text()
        for p in (tmp_path / "lf_only" / "o").rglob("*.py")
    }
    assert cr and cr == lf


@pytest.mark.parametrize("eol", ["\r", "\r\n"])
def test_error_positions_with_cr_line_endings(eol: str, tmp_path: Path) -> None:
    idl = tmp_path / "pos.idl"
    idl.write_bytes(eol.join(["/// doc", "service Pos {", "    def f() -> itn;", "}", ""]).encode())
    r = gen(idl, "-o", tmp_path / "o")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert re.match(r".*pos\.idl:3:16: error: ", lines[0]), r.stderr
    assert lines[1] == "        def f() -> itn;" and lines[2] == "                   ^~~", r.stderr


# ---------------------------------------------------------------- random IDL (hypothesis)


SNAKE = st.sampled_from(
    [
        "id",
        "type",
        "list",
        "dict",
        "str",
        "format",
        "hash",
        "input",
        "object",
        "property",
        "super",
        "schema",
        "server",
        "client",
        "servicer",
        "register",
        "timeout",
        "options",
        "self_",
        "cls",
        "sig",
        "args",
        "kwargs",
        "result",
        "value",
        "stream",
        "match",
        "case",
        "int",
        "float",
        "bool",
        "bytes",
        "any",
        "none",
        "version",
        "field",
        "dataclass",
        "abc",
        "asyncio",
        "typing",
        "annotations",
        "builtins",
        "x",
        "prefix",
        "addr",
        "metadata",
    ]
)
CAPS = st.sampled_from(
    [
        "Any",
        "Optional",
        "Enum",
        "IntEnum",
        "Field",
        "Server",
        "Client",
        "Iterator",
        "AsyncIterator",
        "Type1",
        "Schema",
        "Dataclass",
        "Abc",
    ]
)
PRIM = st.sampled_from(["int", "float", "str", "bool", "bytes", "any"])


def type_expr(depth: int = 0) -> st.SearchStrategy[str]:
    if depth > 3:
        return PRIM
    return st.one_of(
        PRIM,
        st.builds(lambda t: f"list<{t}>", st.deferred(lambda: type_expr(depth + 1))),
        st.builds(lambda t: f"map<str, {t}>", st.deferred(lambda: type_expr(depth + 1))),
        st.builds(lambda t: f"{t}?", PRIM),
    )


DOC = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\t"), max_size=30
)


@st.composite
def idl_text(draw: st.DrawFn) -> str:
    struct = draw(CAPS)
    fields = draw(st.lists(SNAKE, unique=True, max_size=6))
    out = [f"/// {draw(DOC)}", f"struct {struct} {{"]
    for f in fields:
        out.append(f"    /// {draw(DOC)}")
        out.append(f"    {f}: {draw(type_expr())};")
    out.append("}")
    svc = draw(st.sampled_from(["Svc", "Server2", "Api", "Rpc"]))
    out.append(f"service {svc} {{")
    for m in draw(st.lists(SNAKE, unique=True, max_size=5)):
        params = draw(st.lists(SNAKE.filter(lambda p: p != "self"), unique=True, max_size=3))
        kind = draw(st.sampled_from(["def", "async def", "stream"]))
        ps = ", ".join(f"{p}: {draw(st.one_of(type_expr(), st.just(struct)))}" for p in params)
        out.append(f"    /// {draw(DOC)}")
        out.append(f"    {kind} {m}({ps}) -> {draw(st.one_of(type_expr(), st.just(struct)))};")
    out.append("}")
    return "\n".join(out) + "\n"


@pytest.mark.timeout(300)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(srcs=st.lists(idl_text(), min_size=8, max_size=8))
def test_random_idl(srcs: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each file is refused properly or generates code that the tools accept (checked in
    one batch: a mypy run per file would cost seconds each)."""
    d = tmp_path_factory.mktemp("rnd")
    out = d / "out"
    out.mkdir()
    kept = []
    for i, src in enumerate(srcs):
        (d / f"rnd{i}.idl").write_text(src, encoding="utf-8")
        r = gen(d / f"rnd{i}.idl", "-o", out)
        if r.returncode != 0:
            assert r.returncode == 1 and ERR.search(r.stderr), src + r.stderr
            assert not (out / f"rnd{i}").exists()
        else:
            kept.append(src)
    if not kept:
        return
    r2 = run([BIN / "ruff", "check", "--no-cache", "--isolated", "."], cwd=out)
    assert r2.returncode == 0, "\n".join(kept) + r2.stdout[-3000:]
    r3 = run(
        [BIN / "ruff", "format", "--isolated", "--check", "--line-length", "100", "."], cwd=out
    )
    assert r3.returncode == 0, "\n".join(kept) + r3.stdout[-3000:]
    r4 = mypy_strict(out)
    assert r4.returncode == 0, "\n".join(kept) + r4.stdout[-3000:]
