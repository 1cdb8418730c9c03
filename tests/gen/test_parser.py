"""The parser turns valid interface files into the model."""

from __future__ import annotations

from pathlib import Path

from mprpcgen.model import IdlFile, LiteralKind, MethodKind
from mprpcgen.parser import parse

SOURCE = """\
// a plain comment is ignored
import "other.idl";

/// Arithmetic.
/// Second line.
service Calc version "1.0" {
    /// Add.
    def add(a: int, b: int = 2,) -> int;
    async def wait(seconds: float = 1) -> none;
    /* block comment */
    stream count(n: int) -> list<int>?;
    @executor(thread) @deprecated @wire("oldOne") def old(shape: Shape?) -> map<str, Shape>;
    oneway def log(line: str = "a \\"quoted\\" line");
}

enum Color { RED = 1; BLUE = -2; }

struct Shape {
    /// The name.
    name: str;
    color: Color = Color.RED;
    tags: list<str> = [];
    on: bool = true;
}
"""


def model() -> IdlFile:
    result = parse(SOURCE, Path("calc.idl"))
    assert isinstance(result, IdlFile), result
    return result


def test_structure() -> None:
    f = model()
    assert [i.path for i in f.imports] == ["other.idl"]
    [svc] = f.services
    assert (svc.name, svc.version, svc.doc) == ("Calc", "1.0", "Arithmetic.\nSecond line.")
    assert [m.name for m in svc.methods] == ["add", "wait", "count", "old", "log"]
    assert [m.kind for m in svc.methods] == [
        MethodKind.FUNCTION,
        MethodKind.COROUTINE,
        MethodKind.STREAM,
        MethodKind.FUNCTION,
        MethodKind.FUNCTION,
    ]
    assert f.module == "calc"


def test_methods() -> None:
    add, wait, count, old, log = model().services[0].methods
    assert add.doc == "Add." and add.pos.line == 8 and add.pos.column == 9
    assert [(p.name, str(p.type)) for p in add.params] == [("a", "int"), ("b", "int")]
    assert add.params[1].default is not None and add.params[1].default.value == 2
    assert str(wait.returns) == "none"
    assert str(count.returns) == "list<int>?"
    assert [(a.name, a.argument) for a in old.annotations] == [
        ("executor", "thread"),
        ("deprecated", None),
        ("wire", "oldOne"),
    ]
    assert (old.wire_name, add.wire_name) == ("oldOne", "add")
    assert str(old.returns) == "map<str, Shape>" and str(old.params[0].type) == "Shape?"
    assert log.oneway and log.returns is None
    assert log.params[0].default is not None
    assert log.params[0].default.value == 'a "quoted" line'


def test_types() -> None:
    f = model()
    [color] = f.enums
    assert [(m.name, m.value) for m in color.members] == [("RED", 1), ("BLUE", -2)]
    [shape] = f.structs
    assert shape.fields[0].doc == "The name."
    defaults = [f.default.kind if f.default else None for f in shape.fields]
    assert defaults == [None, LiteralKind.ENUM, LiteralKind.EMPTY_LIST, LiteralKind.BOOL]


def test_keywords_are_names_where_a_name_is_expected() -> None:
    result = parse("struct S { stream_count: int; map_of: int; }", Path("k.idl"))
    assert isinstance(result, IdlFile)
    assert [f.name for f in result.structs[0].fields] == ["stream_count", "map_of"]
