"""Review 25: mistakes a user plausibly makes, each reported compiler-style (file:line:col,
the line quoted, a count), exit 1, no traceback, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .r25_util import gen_text

# name -> (text, line of the error, a word the message must hold)
MISTAKES: dict[str, tuple[str, int, str]] = {
    "async_stream": ("service V {\n    async stream f() -> int;\n}\n", 2, "stream"),
    "capitalised_list": ("struct S {\n    a: List<int>;\n}\n", 2, "<"),
    "commas_in_struct": ("struct S {\n    a: int, b: int\n}\n", 2, ","),
    "default_expression": ("struct S {\n    a: int = 1 + 2;\n}\n", 2, "+"),
    "struct_default_braces": (
        "struct P { x: int; }\nstruct S {\n    p: P = {};\n}\n",
        3,
        "optional",
    ),
    "doc_before_import": ('/// the geometry\nimport "x.idl";\n', 2, "import"),
    "doc_in_params": (
        "service V {\n    def f(\n        /// the x\n        x: int) -> int;\n}\n",
        3,
        "///",
    ),
    "duplicate_annotation": (
        "service V {\n    @deprecated @deprecated def f();\n}\n",
        2,
        "duplicate",
    ),
    "duplicate_service": ("service V { }\nservice V { }\n", 2, "duplicate"),
    "enum_commas": ("enum E {\n    A = 1, B = 2\n}\n", 2, ","),
    "enum_float_value": ("enum E {\n    A = 1.0;\n}\n", 2, ".0"),
    "enum_hex_value": ("enum E {\n    A = 0x10;\n}\n", 2, "x10"),
    "enum_member_case": (
        "enum Color { RED = 1; }\nstruct S {\n    c: Color = Color.red;\n}\n",
        3,
        "red",
    ),
    "enum_no_values": ("enum E {\n    A;\n}\n", 2, "="),
    "executor_on_stream": (
        "service V {\n    @executor(thread) stream f() -> int;\n}\n",
        2,
        "@executor",
    ),
    "field_capitalised": (
        "struct Point { x: int; }\nstruct S {\n    Point: int;\n}\n",
        3,
        "snake_case",
    ),
    "import_without_quotes": ("import geometry.idl;\n", 1, "string"),
    "int_default_enum": (
        "enum Color { RED = 1; }\nstruct S {\n    a: int = Color.RED;\n}\n",
        3,
        "int",
    ),
    "list_param_none": ("service V {\n    def f(xs: list<int> = none) -> int;\n}\n", 2, "list"),
    "map_one_argument": ("struct S {\n    m: map<str>;\n}\n", 2, ","),
    "map_string_key": ("struct S {\n    a: map<string, int>;\n}\n", 2, "str"),
    "method_capitalised": (
        "struct Point { x: int; }\nservice V {\n    def Point() -> int;\n}\n",
        3,
        "snake_case",
    ),
    "missing_colon": ("service V {\n    def f(x int) -> int;\n}\n", 2, ":"),
    "missing_last_semicolon": ("service V {\n    def f(x: int) -> int\n}\n", 3, ";"),
    "none_type_wrong_default": ("struct S {\n    b: none = 1;\n}\n", 2, "none"),
    "oneway_async_result": ("service V {\n    oneway async def f() -> int;\n}\n", 2, "oneway"),
    "python_class": ("class S:\n    a: int\n", 1, "class"),
    "semicolon_after_brace": ("struct S { a: int; };\n", 1, ";"),
    "two_versions": ('service V version "1" version "2" { }\n', 1, "version"),
    "unicode_identifier": ("service V {\n    def café() -> int;\n}\n", 2, "é"),
    "void_result": ("service V {\n    def f() -> void;\n}\n", 2, "void"),
    "wrong_enum_in_default": (
        "enum A { X = 1; }\nenum B { Y = 1; }\nstruct S {\n    b: B = A.X;\n}\n",
        4,
        "A is not B",
    ),
    "dangling_doc_at_end": (
        "struct S { a: int; }\n/// dangling at the end\n",
        2,
        "documents nothing",
    ),
    "required_self_via_other": (
        "struct A {\n    b: B;\n}\nstruct B {\n    a: A;\n}\n",
        1,
        "contains itself",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_reported_compiler_style(tmp_path: Path, name: str) -> None:
    text, line, word = MISTAKES[name]
    done, out = gen_text(tmp_path, "mistake", text)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    first = done.stderr.splitlines()[0]
    found = re.match(r"^(\S+\.idl):(\d+):(\d+): error: (.+)$", first)
    assert found is not None, done.stderr
    assert found[1].endswith("mistake.idl") and int(found[2]) == line, done.stderr
    assert word in found[4], done.stderr
    assert re.search(r"^\d+ errors?$", done.stderr, re.M), done.stderr
    assert not (out / "mistake").exists()
