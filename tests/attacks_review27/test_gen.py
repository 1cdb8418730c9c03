"""mprpcgen: file names, Python spellings of defaults, trailing ///, enum defaults on any."""

from __future__ import annotations

from pathlib import Path

import pytest

from mprpcgen.cli import main


def generate(tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    idl = tmp_path / name
    idl.write_text(text)
    status = main([str(idl), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    output = captured.err + captured.out
    if status == 0:
        return ""
    assert status == 1, output
    return output


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("Money.idl", "money.idl"), ("BillingApi.idl", "billing_api.idl"), ("Ab.idl", "ab.idl")],
)
@pytest.mark.timeout(30)
def test_capitalised_file_name_refused_with_lowercase_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, suggested: str
) -> None:
    out = generate(tmp_path, name, "service M { def a() -> int; }\n", capsys)
    assert f"{name}:1:1: error:" in out and f"'{suggested}'" in out, out


@pytest.mark.parametrize("name", ["JSON.idl", "Class.idl", "Pymprpc.idl"])
@pytest.mark.timeout(30)
def test_capitalised_file_name_suggestion_is_a_valid_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out = generate(tmp_path, name, "service M { def a() -> int; }\n", capsys)
    assert out
    suggested = name.lower()
    if f"rename it to '{suggested}'" in out:
        # the suggested name must itself be accepted
        again = generate(tmp_path, suggested, "service M { def a() -> int; }\n", capsys)
        assert again == "", f"suggested {suggested!r}, which is refused:\n{again}"


@pytest.mark.parametrize(
    ("decl", "word", "col", "write"),
    [
        ("service M { def a(x: int? = None) -> int; }", "None", 29, "none"),
        ("struct S { f: bool = True; }", "True", 22, "true"),
        ("struct S { f: bool = False; }", "False", 22, "false"),
        ("service M { def a(x: any = null) -> int; }", "null", 28, "none"),
        ("struct S { f: str? = NULL; }", "NULL", 22, "none"),
    ],
)
@pytest.mark.timeout(30)
def test_python_spellings_of_defaults_reported_at_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], decl: str, word: str, col: int, write: str
) -> None:
    out = generate(tmp_path, "spell.idl", decl + "\n", capsys)
    assert f"spell.idl:1:{col}: error: '{word}' is not an IDL value: write '{write}'" in out, out


@pytest.mark.parametrize(
    "block",
    ["service M {\n    def a() -> int;\n", "struct S {\n    f: int;\n", "enum E {\n    A = 1;\n"],
)
@pytest.mark.timeout(30)
def test_trailing_doc_comment_at_end_of_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str
) -> None:
    out = generate(tmp_path, "trail.idl", block + "    /// dangling\n}\n", capsys)
    assert "trail.idl:3:5: error: this /// doc comment documents nothing" in out, out


@pytest.mark.timeout(30)
def test_trailing_doc_comment_at_end_of_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = generate(tmp_path, "eof.idl", "struct S {\n    f: int;\n}\n/// dangling\n", capsys)
    assert "eof.idl:4:1: error: this /// doc comment documents nothing" in out, out


@pytest.mark.parametrize(
    ("decl", "needle"),
    [
        ("service M { def a(x: any = E.B) -> int; }", "E has no member 'B'"),
        ("struct S { f: any = E.Z; }", "E has no member 'Z'"),
        ("struct S { f: any? = E.Z; }", "E has no member 'Z'"),
        ("service M { def a(x: any = Nope.B) -> int; }", "unknown enum Nope"),
        ("struct T { f: any = T.X; }", "not an enum"),
    ],
)
@pytest.mark.timeout(30)
def test_enum_member_defaults_on_any_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], decl: str, needle: str
) -> None:
    out = generate(tmp_path, "anyd.idl", "enum E { A = 1; }\n" + decl + "\n", capsys)
    assert "anyd.idl:2:" in out and needle in out, out


@pytest.mark.timeout(60)
def test_valid_enum_default_on_any_generates_and_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import generated_package

    idl = tmp_path / "anyok.idl"
    idl.write_text("enum E { A = 1; B = 2; }\nstruct S { f: any = E.B; }\n")
    with generated_package(idl, tmp_path / "out") as package:
        assert package.S().f == package.E.B
