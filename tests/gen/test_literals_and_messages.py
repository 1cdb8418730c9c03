"""Every literal comes out as exactly the text written (doc comments, wire names, string
and number defaults), and error messages point at the right place."""

from __future__ import annotations

import importlib
import inspect
import json
import keyword
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import on_sys_path
from mprpcgen.cli import main
from mprpcgen.confusables import CONFUSABLE
from mprpcgen.diagnostics import IdlError
from mprpcgen.layout import clean_doc, docstring, py_str
from mprpcgen.loader import load
from mprpcgen.model import IdlFile
from mprpcgen.naming import PYTHON_KEYWORDS
from pymprpc import schema

VALID = Path(__file__).resolve().parent / "corpus" / "valid"
TRICKY = [VALID / "doc_comments.idl", VALID / "escapes.idl", VALID / "control_chars.idl"]
TRICKY += [VALID / "number_limits.idl"]

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(text)
def test_py_str_is_exact(value: str) -> None:
    assert eval(py_str(value)) == value


@given(st.lists(text, max_size=4).map("\n".join))
def test_docstring_round_trips_through_getdoc(value: str) -> None:
    doc = clean_doc(value)
    source = docstring(doc, "    ", 88)

    if doc:
        namespace: dict[str, object] = {}
        exec(f"def holder():\n{source}\n", namespace)
        assert inspect.getdoc(namespace["holder"]) == doc


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, IdlFile]]:
    out = tmp_path_factory.mktemp("tricky")
    assert main([*map(str, TRICKY), "-o", str(out)]) == 0
    program = load(TRICKY)
    with on_sys_path(out, *(p.stem for p in TRICKY)):
        yield {f.module: f for f in program.files}


def test_doc_comments_become_the_same_text(tricky: dict[str, IdlFile]) -> None:
    checked = 0
    for name, file in tricky.items():
        package = importlib.import_module(name)
        for struct in file.structs:
            cls = getattr(package, struct.name)
            assert inspect.getdoc(cls) == (clean_doc(struct.doc) or f"Struct {struct.name}.")
            checked += 1
        for service in file.services:
            servicer = getattr(package, f"{service.name}Servicer")
            for method in service.methods:
                expected = clean_doc(method.doc) or None
                assert inspect.getdoc(getattr(servicer, method.name)) == expected, method.name
                checked += 1
    assert checked >= 10


def test_wire_names_and_defaults_are_exact(tricky: dict[str, IdlFile]) -> None:
    for name, file in tricky.items():
        types = importlib.import_module(f"{name}.types")
        for service in file.services:
            methods = getattr(types, f"_{service.name}Methods")
            for method in service.methods:
                sig = getattr(methods, method.name)
                assert sig.wire == method.wire_name
                for param, declared in zip(method.params, sig.params, strict=True):
                    if param.default is not None:
                        assert declared.default == param.default.value, param.name


def test_escapes_reach_python_unchanged(tricky: dict[str, IdlFile]) -> None:
    types = importlib.import_module("escapes.types")
    sig = types._EscapesMethods.defaults
    defaults = {p.name: p.default for p in sig.params}
    assert defaults["tab"] == "tab\there"
    assert defaults["quote"] == 'quote"d'
    assert defaults["back"] == "back\\slash"
    assert defaults["uni"] == "\u00e9\U0001f600"
    assert defaults["nul"] == "\x00"
    assert defaults["triple"] == '"""'
    assert types._EscapesMethods.quote_in_name.wire == 'a"b'
    assert types._EscapesMethods.backslash_in_name.wire == "get\\bUser"


def test_int_range_is_checked_both_ways() -> None:
    with pytest.raises(schema.ValidationError, match="64-bit"):
        schema.INT.decode(2**64, "n")
    with pytest.raises(schema.ValidationError, match="64-bit"):
        schema.INT.encode(-(2**63) - 1)
    assert schema.INT.decode(2**64 - 1, "n") == 2**64 - 1
    assert schema.INT.decode(-(2**63), "n") == -(2**63)


def _error(tmp_path: Path, source: str | bytes, name: str = "svc.idl") -> str:
    path = tmp_path / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source, encoding="utf-8")
    with pytest.raises(IdlError) as info:
        load([path])
    return info.value.render()


def test_line_numbers_after_form_feed_and_line_separator(tmp_path: Path) -> None:
    source = "// a form feed \f here\n// a line separator \u2028 here\nstruct P { x: Strng; }\n"
    text = _error(tmp_path, source)
    head, line = text.splitlines()[:2]
    assert head.endswith("svc.idl:3:15: error: unknown type 'Strng' (did you mean 'str'?)")
    assert line.strip() == "struct P { x: Strng; }"


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.idl"
    path.write_bytes(b"\xef\xbb\xbfstruct P { x: int; }\r\n")
    assert [s.name for s in load([path]).files[0].structs] == ["P"]


def test_paths_are_shown_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "idl").mkdir()
    (tmp_path / "idl" / "bad.idl").write_text("struct P { x: Strng; }\n")
    monkeypatch.chdir(tmp_path / "idl")
    assert main(["../idl/bad.idl", "-o", "out"]) == 1
    assert capsys.readouterr().err.startswith("../idl/bad.idl:1:15: error:")


def test_a_broken_import_is_reported_once_not_as_unknown_types(tmp_path: Path) -> None:
    (tmp_path / "geo.idl").write_text("struct Point { x: float }\n")
    text = _error(tmp_path, 'import "geo.idl";\nstruct Line { a: Point; b: Point; }\n')
    assert text.splitlines()[-1] == "1 error", text
    assert "geo.idl:1:25: error: unexpected '}'" in text


def test_keywords_are_the_same_on_every_python() -> None:
    assert frozenset(keyword.kwlist) == PYTHON_KEYWORDS  # 3.11 to 3.13 agree
    path = VALID / "soft_keywords.idl"
    assert load([path]).files  # `match`, `case`, `type` are names on every version


@settings(max_examples=40, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_arbitrary_text_never_crashes_the_compiler(source: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.idl"
        path.write_text("struct P {" + source + "}", encoding="utf-8")
        try:
            load([path])
        except IdlError as exc:
            assert ": error: " in exc.render()


def test_a_message_that_the_terminal_cannot_encode_still_prints(tmp_path: Path) -> None:
    (tmp_path / "café.idl").write_text("struct Café { x: Strng; }\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mprpcgen", "café.idl", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    assert done.returncode == 1
    err = done.stderr.decode("ascii")
    assert "Traceback" not in err
    assert "caf\\xe9.idl:1:11: error: unexpected character" in err


def test_the_confusables_table_is_ruffs(tmp_path: Path) -> None:
    points = [
        cp for cp in range(0x80, 0x30000) if not 0xD800 <= cp <= 0xDFFF and chr(cp).isprintable()
    ]
    probe = tmp_path / "probe.py"
    probe.write_text("".join(f'x{cp:x} = "{chr(cp)}"\n' for cp in points), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "RUF001",
         "--no-cache", "--output-format", "json", str(probe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    flagged = {points[d["location"]["row"] - 1] for d in json.loads(done.stdout)}
    assert flagged == CONFUSABLE
