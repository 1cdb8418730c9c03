"""Every IDL mistake is reported as file:line:col with the line and a caret, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mprpcgen.cli import main
from mprpcgen.diagnostics import IdlError
from mprpcgen.loader import load


def errors_of(tmp_path: Path, source: str, name: str = "svc.idl", **others: str) -> str:
    for other, text in others.items():
        (tmp_path / f"{other}.idl").write_text(text)
    path = tmp_path / name
    path.write_text(source)
    with pytest.raises(IdlError) as info:
        load([path])
    return info.value.render()


def one_error(tmp_path: Path, source: str, **others: str) -> tuple[str, str, str]:
    text = errors_of(tmp_path, source, **others)
    lines = text.splitlines()
    assert lines[-1] == "1 error", text
    return lines[0], lines[1], lines[2]


@pytest.mark.parametrize(
    ("source", "where", "message"),
    [
        ("service S {\n  def f(a: int) -> int\n}\n", ":3:1:", "unexpected '}'; expected ';'"),
        ("service S { def f(a: int,, ) -> int; }", ":1:26:", "unexpected ','"),
        ("struct { }", ":1:8:", "expected a name"),
        ("service S { def f() -> int; ", ":1:27:", "unexpected end of file"),
        ("service S $", ":1:11:", "unexpected character '$'"),
        # Mistakes the parser sees one token late: reported where they are.
        ("struct P { x: bool = True; }", ":1:22:", "'True' is not an IDL value: write 'true'"),
        ("struct P { x: int = big; }", ":1:21:", "'big' is not a value: a default is a number"),
        ("struct P {\n  x: int; /// the x\n}", ":2:11:", "this /// doc comment documents"),
    ],
)
def test_syntax_errors(tmp_path: Path, source: str, where: str, message: str) -> None:
    head, line, caret = one_error(tmp_path, source)
    assert where in head and message in head, head
    col = int(where.split(":")[2])
    assert caret.index("^") - 4 == col - 1
    assert line.strip() in source


SEMANTIC = [
    ("struct P { x: flaot; }", "unknown type 'flaot' (did you mean 'float'?)", "flaot"),
    ("struct P { x: int; x: str; }", "duplicate field 'x' (first declared at line 1)", "x: str"),
    ("struct P { class: int; }", "field name 'class' is a Python keyword", "class"),
    ("struct int { x: int; }", "type names are CapWords: write 'Int'", "int"),
    ('struct P { x: int = "a"; }', 'bad default "a" for type int: expected an int value', '"a"'),
    ("struct P { x: list<int> = {}; }", "only [] can be the default of a list", "{}"),
    ("struct P { c: C = C.PINK; } enum C { RED = 1; }", "C has no member 'PINK'", "C.PINK"),
    ("enum C { RED = 1; BLUE = 1; }", "enum value 1 of 'BLUE' is already used by 'RED'", "BLUE"),
    ("struct point { x: int; }", "type names are CapWords: write 'Point'", "point"),
    ("service S { def getThing() -> int; }", "write 'get_thing' instead", "getThing"),
    ("service S { def f(a: int = 1, b: int) -> int; }", "'b' without a default follows", "b"),
    ("service S { stream f(); }", "stream 'f' must declare its item type", "f"),
    ("service S { oneway def f() -> int; }", "cannot return a value", "int"),
    ("service S { @executor(gpu) def f(); }", "@executor needs one of process, thread", "executor"),
    (
        "service S { @executor(thread) async def f(); }",
        "applies to plain 'def' methods",
        "executor",
    ),
    ("service S { @cached def f(); }", "unknown annotation '@cached'", "cached"),
    ("service S { @wire def f(); }", "@wire needs the name clients call", "wire"),
    ('service S { @wire("system.f") def f(); }', "names under 'system.' belong to", "wire"),
    ('service S { @wire("a b") def f(); }', "a wire name has no spaces", "wire"),
    (
        'service S { @wire("g") def f(); def g(); }',
        "method 'g' is called 'g' on the wire, like method 'f' (line 1); rename one",
        "g",
    ),
    ("service S { def close(); }", "method name 'close' is reserved", "close"),
    ("service S { def f(tags: list<int> = []); }", "parameters cannot default to []", "[]"),
    ("struct A { b: B; } struct B { a: A; }", "contains itself through required fields", "A"),
    ("struct P { m: map<int, str>; }", "map keys must be str", "int"),
    ("struct P { x: int; } service P { }", "duplicate declaration 'P'", "P"),
    (
        "struct SClient { x: int; } service S { }",
        "service 'S' generates 'SClient', which is also the name of type 'SClient'",
        "S",
    ),
]


@pytest.mark.parametrize(("source", "message", "marked"), SEMANTIC)
def test_semantic_errors(tmp_path: Path, source: str, message: str, marked: str) -> None:
    text = errors_of(tmp_path, source)
    assert message in text, text
    assert "Traceback" not in text
    head, line, caret = text.splitlines()[:3]
    assert head.startswith(str(Path("svc.idl"))) or "svc.idl:" in head
    start = caret.index("^")
    assert line[start:].startswith(marked), (line, caret)


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    text = errors_of(
        tmp_path,
        'struct P {\n  x: flaot;\n  y: int = "no";\n}\nservice S {\n  def Bad() -> P;\n}\n',
    )
    assert text.splitlines()[-1] == "3 errors"
    places = re.findall(r"svc\.idl:(\d+:\d+): error", text)
    assert places == ["2:6", "3:12", "6:7"]


def test_recursion_through_a_list_or_optional_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "tree.idl"
    path.write_text("struct Node { children: list<Node>; parent: Node?; }")
    assert [s.name for s in load([path]).files[0].structs] == ["Node"]


def test_import_cycle(tmp_path: Path) -> None:
    text = errors_of(tmp_path, 'import "b.idl";\n', name="a.idl", b='import "a.idl";\n')
    assert "import cycle: a.idl -> b.idl -> a.idl" in text


def test_missing_import(tmp_path: Path) -> None:
    text = errors_of(tmp_path, 'import "nope.idl";\nstruct P { x: int; }\n')
    assert "svc.idl:1:8: error: cannot read imported file 'nope.idl'" in text


def test_imported_types_are_visible_and_duplicates_refused(tmp_path: Path) -> None:
    (tmp_path / "common.idl").write_text("struct Point { x: float; }")
    good = tmp_path / "uses.idl"
    good.write_text('import "common.idl";\nstruct Line { a: Point; b: Point; }')
    assert len(load([good]).files) == 2
    text = errors_of(tmp_path, 'import "common.idl";\nstruct Point { y: int; }')
    assert "type 'Point' is already declared in common.idl" in text


def test_file_name_must_be_an_identifier(tmp_path: Path) -> None:
    text = errors_of(tmp_path, "struct P { x: int; }", name="my-svc.idl")
    assert "must be a Python identifier" in text


def test_file_name_must_be_lowercase(tmp_path: Path) -> None:
    # It names the package, which PEP 8 (and ruff's N999) wants lowercase.
    text = errors_of(tmp_path, "struct P { x: int; }", name="BillingApi.idl")
    assert "package names are lowercase (PEP 8): rename it to 'billing_api.idl'" in text


def test_cli_reports_errors_with_exit_1_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.idl"
    bad.write_text("service S {\n  def f(a: Strng) -> int;\n}\n")
    done = subprocess.run(
        [sys.executable, "-m", "mprpcgen", str(bad), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "bad.idl:2:12: error: unknown type 'Strng' (did you mean 'str'?)" in done.stderr
    assert "      def f(a: Strng) -> int;\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.idl"), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mprpcgen: error: cannot read") and "No such file" in err


def test_cli_unwritable_output_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "ok.idl"
    good.write_text("struct P { x: int; }")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output directory should be")
    assert main([str(good), "-o", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mprpcgen: error: cannot write") and "Traceback" not in err
