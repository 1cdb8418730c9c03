"""Parsing an interface file into the model (syntax errors become diagnostics)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, UnexpectedInput, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken, VisitError

from .diagnostics import Diagnostic
from .model import (
    Annotation,
    Enum,
    EnumMember,
    Field,
    IdlFile,
    Import,
    Literal,
    LiteralKind,
    Method,
    MethodKind,
    Param,
    Pos,
    Service,
    Struct,
    TypeRef,
)

# How expected tokens read in an error message.
_TOKEN_TEXT = {
    "NAME": "a name",
    "STRING": 'a string "..."',
    "SIGNED_INT": "an integer",
    "SIGNED_FLOAT": "a number",
    "SEMICOLON": "';'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COLON": "':'",
    "COMMA": "','",
    "EQUAL": "'='",
    "LESSTHAN": "'<'",
    "MORETHAN": "'>'",
    "OPTIONAL": "'?'",
    "AT": "'@'",
    "DOT": "'.'",
    "DOC_COMMENT": "a /// doc comment",
    "__ANON_0": "'->'",
    "ONEWAY": "'oneway'",
    "DEF": "'def'",
    "ASYNC": "'async'",
    "STREAM": "'stream'",
    "SERVICE": "'service'",
    "STRUCT": "'struct'",
    "ENUM": "'enum'",
    "IMPORT": "'import'",
    "VERSION": "'version'",
    "LIST": "'list'",
    "MAP": "'map'",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "NONE": "'none'",
    "$END": "end of file",
}


@functools.cache
def _parser() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _pos(path: Path, item: Token | Any) -> Pos:
    if isinstance(item, Token):
        return Pos(path, item.line or 1, item.column or 1, max(1, len(str(item))))
    meta = item
    return Pos(path, getattr(meta, "line", 1), getattr(meta, "column", 1))


def _docs(tree: Tree[Any]) -> str:
    lines = [str(t)[3:] for t in tree.children]
    # One leading space after /// is conventional; keep relative indentation beyond it.
    lines = [line[1:] if line.startswith(" ") else line for line in lines]
    return "\n".join(lines).strip()


class _Build(Transformer[Token, Any]):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def p(self, item: Any) -> Pos:
        return _pos(self.path, item)

    def start(self, items: list[Any]) -> IdlFile:
        return IdlFile(
            path=self.path,
            imports=tuple(i for i in items if isinstance(i, Import)),
            services=tuple(i for i in items if isinstance(i, Service)),
            structs=tuple(i for i in items if isinstance(i, Struct)),
            enums=tuple(i for i in items if isinstance(i, Enum)),
        )

    def docs(self, items: list[Token]) -> str:
        return _docs(Tree("docs", list(items)))

    def import_stmt(self, items: list[Token]) -> Import:
        (string,) = items
        return Import(ast.literal_eval(str(string)), self.p(string))

    def version(self, items: list[Token]) -> str:
        return str(ast.literal_eval(str(items[0])))

    def service(self, items: list[Any]) -> Service:
        doc, name, version, *methods = items
        return Service(str(name), version, tuple(methods), doc, self.p(name))

    def plain(self, items: list[Token]) -> MethodKind:
        return MethodKind.FUNCTION

    def coroutine(self, items: list[Token]) -> MethodKind:
        return MethodKind.COROUTINE

    def stream(self, items: list[Token]) -> MethodKind:
        return MethodKind.STREAM

    def annotation(self, items: list[Token | None]) -> Annotation:
        name, arg = items
        assert name is not None
        if arg is None:
            argument = None
        elif arg.type == "STRING":
            argument = str(ast.literal_eval(str(arg)))
        else:
            argument = str(arg)
        return Annotation(str(name), argument, self.p(name))

    def returns(self, items: list[TypeRef]) -> TypeRef:
        return items[0]

    def method(self, items: list[Any]) -> Method:
        doc = items[0]
        annotations = tuple(i for i in items if isinstance(i, Annotation))
        rest = [i for i in items[1:] if not isinstance(i, Annotation)]
        oneway, kind, name, params, returns = rest
        return Method(
            name=str(name),
            kind=kind,
            params=tuple(params or ()),
            returns=returns,
            oneway=oneway is not None,
            annotations=annotations,
            doc=doc,
            pos=self.p(name),
        )

    def params(self, items: list[Param | None]) -> list[Param]:
        return [p for p in items if p is not None]

    def param(self, items: list[Any]) -> Param:
        name, type_, default = items
        return Param(str(name), type_, default, self.p(name))

    def struct(self, items: list[Any]) -> Struct:
        doc, name, *fields = items
        return Struct(str(name), tuple(fields), doc, self.p(name))

    def field(self, items: list[Any]) -> Field:
        doc, name, type_, default = items
        return Field(str(name), type_, default, doc, self.p(name))

    def enum(self, items: list[Any]) -> Enum:
        doc, name, *members = items
        return Enum(str(name), tuple(members), doc, self.p(name))

    def member(self, items: list[Any]) -> EnumMember:
        doc, name, value = items
        return EnumMember(str(name), int(value), doc, self.p(name))

    # -- types -------------------------------------------------------------------

    @v_args(meta=True)
    def type(self, meta: Any, items: list[Any]) -> TypeRef:
        base, optional = items
        if optional is None:
            return base  # type: ignore[no-any-return]
        return TypeRef("optional", self.p(meta), args=(base,))

    def named_type(self, items: list[Token]) -> TypeRef:
        (name,) = items
        return TypeRef("named", self.p(name), name=str(name))

    @v_args(meta=True)
    def list_type(self, meta: Any, items: list[TypeRef]) -> TypeRef:
        return TypeRef("list", self.p(meta), args=(items[0],))

    @v_args(meta=True)
    def map_type(self, meta: Any, items: list[TypeRef]) -> TypeRef:
        return TypeRef("map", self.p(meta), args=(items[0], items[1]))

    # -- literals ----------------------------------------------------------------

    def _lit(self, kind: LiteralKind, value: Any, token: Token, text: str | None = None) -> Literal:
        return Literal(kind, value, self.p(token), text if text is not None else str(token))

    def int_lit(self, items: list[Token]) -> Literal:
        return self._lit(LiteralKind.INT, int(items[0]), items[0])

    def float_lit(self, items: list[Token]) -> Literal:
        return self._lit(LiteralKind.FLOAT, float(items[0]), items[0])

    def str_lit(self, items: list[Token]) -> Literal:
        return self._lit(LiteralKind.STR, ast.literal_eval(str(items[0])), items[0])

    @v_args(meta=True)
    def true_lit(self, meta: Any, items: list[Token]) -> Literal:
        return Literal(LiteralKind.BOOL, True, self.p(meta), "true")

    @v_args(meta=True)
    def false_lit(self, meta: Any, items: list[Token]) -> Literal:
        return Literal(LiteralKind.BOOL, False, self.p(meta), "false")

    @v_args(meta=True)
    def none_lit(self, meta: Any, items: list[Token]) -> Literal:
        return Literal(LiteralKind.NONE, None, self.p(meta), "none")

    @v_args(meta=True)
    def list_lit(self, meta: Any, items: list[Token]) -> Literal:
        return Literal(LiteralKind.EMPTY_LIST, [], self.p(meta), "[]")

    @v_args(meta=True)
    def map_lit(self, meta: Any, items: list[Token]) -> Literal:
        return Literal(LiteralKind.EMPTY_MAP, {}, self.p(meta), "{}")

    def enum_lit(self, items: list[Token]) -> Literal:
        enum_name, member = items
        text = f"{enum_name}.{member}"
        return self._lit(LiteralKind.ENUM, (str(enum_name), str(member)), enum_name, text)


def _expected(tokens: set[str]) -> str:
    names = sorted({_TOKEN_TEXT.get(t, repr(t.lower())) for t in tokens})
    if len(names) > 6:
        names = [*names[:6], "..."]
    return ", ".join(names)


def _syntax_error(path: Path, exc: UnexpectedInput) -> Diagnostic:
    line, column = exc.line if exc.line > 0 else 1, exc.column if exc.column > 0 else 1
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        found = "end of file" if token.type == "$END" else repr(str(token))
        length = max(1, len(str(token))) if token.type != "$END" else 1
        message = f"unexpected {found}; expected {_expected(exc.accepts or exc.expected)}"
        return Diagnostic(Pos(path, line, column, length), message)
    if isinstance(exc, UnexpectedCharacters):
        return Diagnostic(Pos(path, line, column), f"unexpected character {exc.char!r}")
    if isinstance(exc, UnexpectedEOF):
        return Diagnostic(
            Pos(path, line, column),
            f"unexpected end of file; expected {_expected(set(exc.expected))}",
        )
    return Diagnostic(Pos(path, line, column), "syntax error")  # pragma: no cover


def parse(text: str, path: Path) -> IdlFile | Diagnostic:
    """The model of `text`, or the diagnostic for its first syntax error."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        return _syntax_error(path, exc)
    try:
        result = _Build(path).transform(tree)
    except VisitError as exc:  # pragma: no cover - a grammar/transformer mismatch
        raise exc.orig_exc from None
    assert isinstance(result, IdlFile)
    return result
