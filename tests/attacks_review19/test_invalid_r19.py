"""Review 19: mistakes users make in IDL files are reported compiler-style, with exit
status 1, no traceback and no output written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .r19_util import generate, mypy_strict, ruff_defaults, ruff_project, show

pytestmark = pytest.mark.timeout(60)

# name -> (file bytes, line, col, a fragment of the message)
CASES: dict[str, tuple[bytes, int, int, str]] = {
    "typo_keyword": (b"strcut Point { x: int; }\n", 1, 1, "unexpected 'strcut'"),
    "missing_semicolon": (b"struct Point {\n    x: int\n    y: int;\n}\n", 3, 5, "expected ';'"),
    "unknown_type": (
        b"struct Shape { p: Piont; }\nstruct Point { x: int; }\n",
        1,
        19,
        "did you mean 'Point'",
    ),
    "wrong_default_type": (b'struct S { n: int = "five"; }\n', 1, 21, "bad default"),
    "float_for_int": (b"struct S { n: int = 1.5; }\n", 1, 21, "expected an int"),
    "bool_for_int": (b"struct S { n: int = true; }\n", 1, 21, "expected an int"),
    "int_none": (b"struct S { n: int = none; }\n", 1, 21, "declare int?"),
    "dup_struct": (
        b"struct A { x: int; }\nstruct A { y: int; }\n",
        2,
        8,
        "duplicate declaration 'A'",
    ),
    "dup_field": (b"struct A { x: int; x: str; }\n", 1, 20, "duplicate field 'x'"),
    "dup_method": (
        b"service S {\n  def f() -> int;\n  def f() -> str;\n}\n",
        3,
        7,
        "duplicate method 'f'",
    ),
    "dup_param": (b"service S { def f(a: int, a: int) -> int; }\n", 1, 27, "duplicate parameter"),
    "dup_enum_value": (b"enum E { A = 1; B = 1; }\n", 1, 17, "already used by 'A'"),
    "dup_enum_member": (b"enum E { A = 1; A = 2; }\n", 1, 17, "duplicate enum member"),
    "missing_import": (
        b'import "nowhere/missing.idl";\nstruct A { x: int; }\n',
        1,
        8,
        "cannot read imported file",
    ),
    "import_self": (b'import "import_self.idl";\nstruct S { x: int; }\n', 1, 8, "import cycle"),
    "self_required": (b"struct Node { value: int; next: Node; }\n", 1, 8, "contains itself"),
    "mutual_required": (b"struct A { b: B; }\nstruct B { a: A; }\n", 1, 8, "contains itself"),
    "keyword_field": (b"struct S { class: int; }\n", 1, 12, "Python keyword"),
    "reserved_rpc": (b"service S { def rpc() -> int; }\n", 1, 17, "reserved"),
    "reserved_with_options": (b"service S { def with_options() -> int; }\n", 1, 17, "reserved"),
    "self_param": (b"service S { def f(self: int) -> int; }\n", 1, 19, "reserved"),
    "underscore_name": (b"struct S { _hidden: int; }\n", 1, 12, "must not start with '_'"),
    "bad_escape": (b'struct S { s: str = "a\\qb"; }\n', 1, 21, "invalid escape"),
    "bad_named_escape": (b'struct S { s: str = "\\N{NO SUCH NAME}"; }\n', 1, 21, "unknown Unicode"),
    "lone_surrogate": (b'struct S { s: str = "\\ud800"; }\n', 1, 21, "surrogate"),
    "int_65bit": (b"struct S { n: int = 18446744073709551616; }\n", 1, 21, "64-bit"),
    "int_too_negative": (b"struct S { n: int = -9223372036854775809; }\n", 1, 21, "64-bit"),
    "enum_65bit": (b"enum E { A = 18446744073709551616; }\n", 1, 10, "64-bit"),
    "float_inf": (b"struct S { f: float = 1e309; }\n", 1, 23, "infinite"),
    "non_utf8": (b"/// caf\xe9\nstruct S { x: int; }\n", 1, 8, "not UTF-8"),
    "nul_byte": (b"struct S {\x00 x: int; }\n", 1, 11, "unexpected character"),
    "crlf_missing_semicolon": (
        b"struct S {\r\n    x: int\r\n    y: int;\r\n}\r\n",
        3,
        5,
        "expected ';'",
    ),
    "bom_unknown_type": (b"\xef\xbb\xbfstruct S { p: Piont; }\n", 1, 15, "unknown type"),
    "cr_only_unknown_type": (b"// x\rstruct S {\r p: Piont; }\r", 3, 5, "unknown type"),
    "unterminated_string": (b'struct S { s: str = "abc; }\n', 1, 21, "unterminated string"),
    "unterminated_comment": (b"/* never closed\nstruct S { x: int; }\n", 1, 1, "unterminated"),
    "camel_method": (b"service S { def getUser() -> int; }\n", 1, 17, "get_user"),
    "lower_struct": (b"struct point { x: int; }\n", 1, 8, "CapWords"),
    "lower_enum_member": (b"enum E { red = 1; }\n", 1, 10, "UPPER_CASE"),
    "name_too_long": (
        b"struct S { a_very_long_field_name_that_goes_on_and_on_xx: int; }\n",
        1,
        12,
        "at most 40",
    ),
    "stream_oneway": (b"service S { oneway stream f() -> int; }\n", 1, 27, "oneway"),
    "oneway_result": (b"service S { oneway def f() -> int; }\n", 1, 31, "cannot return"),
    "executor_async": (
        b"service S { @executor(process) async def f() -> int; }\n",
        1,
        14,
        "@executor",
    ),
    "executor_unknown": (b"service S { @executor(gpu) def f() -> int; }\n", 1, 14, "@executor"),
    "unknown_annotation": (b"service S { @cached def f() -> int; }\n", 1, 14, "unknown annotation"),
    "map_int_key": (b"struct S { m: map<int, str>; }\n", 1, 19, "map keys must be str"),
    "list_no_param": (b"struct S { l: list; }\n", 1, 19, "expected '<'"),
    "param_list_default": (
        b"service S { def f(a: list<int> = []) -> int; }\n",
        1,
        34,
        "parameters cannot default",
    ),
    "wrong_enum_default": (
        b"enum A { X = 1; }\nenum B { Y = 1; }\nstruct S { a: A = B.Y; }\n",
        3,
        19,
        "B is not A",
    ),
    "unknown_member": (b"enum A { X = 1; }\nstruct S { a: A = A.Z; }\n", 2, 19, "no member 'Z'"),
    "version_unquoted": (
        b"service S version 1.0 { def f() -> int; }\n",
        1,
        19,
        "expected a string",
    ),
    "trailing_brace": (b"struct S { x: int; } }\n", 1, 22, "unexpected '}'"),
    "missing_arrow": (b"service S { def f() int; }\n", 1, 21, "expected '->'"),
    "default_before_required": (
        b"service S { def f(a: int = 1, b: int) -> int; }\n",
        1,
        31,
        "follows one with a default",
    ),
    "async_stream": (b"service S { async stream f() -> int; }\n", 1, 19, "unexpected 'stream'"),
    "too_deep": (
        b"struct S { x: " + b"list<" * 33 + b"int" + b">" * 33 + b"; }\n",
        1,
        179,
        "32 levels",
    ),
    "wire_duplicate": (
        b'service S { @wire("b") def a() -> int; def b() -> int; }\n',
        1,
        44,
        "on the wire",
    ),
    "wire_system": (
        b'service S { @wire("system.x") def a() -> int; }\n',
        1,
        14,
        "belong to the server",
    ),
    "struct_like_client": (
        b"struct SClient { x: int; }\nservice S { def f() -> SClient; }\n",
        2,
        9,
        "SClient",
    ),
    "service_collide": (
        b"service Jobs { def f() -> int; }\nservice AsyncJobs { def f() -> int; }\n",
        2,
        9,
        "AsyncJobsClient",
    ),
    "bytes_str_default": (b'struct S { b: bytes = "x"; }\n', 1, 23, "bytes"),
    "confusable_l": (b"service S { def f(l: int) -> int; }\n", 1, 19, "misread"),
    "non_ascii_name": (b"struct S { caf\xc3\xa9: int; }\n", 1, 15, "unexpected character"),
}

EXTRA_FILES = {
    "cyclic_a": {"cyclic_b.idl": b'import "cyclic_a.idl";\nstruct B { x: int; }\n'},
    "shadow_import": {"shadow_dep.idl": b"struct P { y: int; }\n"},
}
CASES["cyclic_a"] = (b'import "cyclic_b.idl";\nstruct A { x: int; }\n', 1, 8, "import cycle")
CASES["shadow_import"] = (
    b'import "shadow_dep.idl";\nstruct P { x: int; }\n',
    2,
    8,
    "already declared",
)


def test_at_least_30_mistakes() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_reported_compiler_style(tmp_path: Path, name: str) -> None:
    content, line, col, fragment = CASES[name]
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{name}.idl").write_bytes(content)
    for extra, data in EXTRA_FILES.get(name, {}).items():
        (src / extra).write_bytes(data)
    out = tmp_path / "out"
    done = generate([src / f"{name}.idl"], out)
    text = done.stdout + done.stderr
    assert done.returncode == 1, show(done)
    assert "Traceback" not in text, text
    errors = re.findall(r"^(\S+?):(\d+):(\d+): error: (.*)$", text, re.M)
    assert errors, text
    assert any(int(ln) == line and int(c) == col and fragment in msg for _, ln, c, msg in errors), (
        text
    )
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def test_one_bad_file_writes_nothing_for_the_good_one(tmp_path: Path) -> None:
    (tmp_path / "good.idl").write_text("struct Good { x: int; }\n")
    (tmp_path / "bad.idl").write_text("struct Bad { x: Nope; }\n")
    out = tmp_path / "out"
    done = generate([tmp_path / "good.idl", tmp_path / "bad.idl"], out)
    assert done.returncode == 1 and "bad.idl:1:17: error:" in done.stderr, show(done)
    assert not out.exists() or not any(out.rglob("*"))


def test_all_errors_at_once(tmp_path: Path) -> None:
    (tmp_path / "many.idl").write_text(
        'struct A { x: Nope; }\nstruct B { y: int = "s"; }\nenum E { a = 1; }\n'
    )
    done = generate([tmp_path / "many.idl"], tmp_path / "out")
    assert done.returncode == 1
    assert len(re.findall(r"many\.idl:\d+:\d+: error:", done.stderr, re.M)) == 3, show(done)
    assert "3 errors" in done.stderr


@pytest.mark.parametrize(
    "args",
    [["nothere.idl"], ["."]],
    ids=["missing_file", "directory"],
)
def test_cli_file_errors_no_traceback(tmp_path: Path, args: list[str]) -> None:
    done = generate([tmp_path / a for a in args], tmp_path / "out")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error" in done.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "content", [b"", b"// nothing here yet\n", b"\xef\xbb\xbf", b"/* only */\r\n/// dangling?\r\n"]
)
def test_empty_files_do_not_crash(tmp_path: Path, content: bytes) -> None:
    # The README does not call an empty interface file an error: it may give one, or
    # generate a package that still lints, type-checks and imports.
    (tmp_path / "blank.idl").write_bytes(content)
    out = tmp_path / "out"
    done = generate([tmp_path / "blank.idl"], out)
    assert "Traceback" not in done.stdout + done.stderr
    if done.returncode == 1:
        assert re.search(r"^\S+:\d+:\d+: error:", done.stderr, re.M), show(done)
        return
    assert done.returncode == 0, show(done)
    for check in (ruff_project(out), ruff_defaults(out), mypy_strict(out, tmp_path / "c")):
        assert check.returncode == 0, show(check)
