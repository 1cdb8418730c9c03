"""Parsing an interface file into the model (syntax errors become diagnostics)."""

from __future__ import annotations

import ast
import functools
import re
import warnings
from pathlib import Path
from typing import Any, Final

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
from .naming import MAX_TYPE_DEPTH

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
    "ARROW": "'->'",
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
    return Lark.open_from_package(
        "mprpcgen",
        "grammar.lark",
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


class _Refused(Exception):
    """A token the grammar accepts but whose value is wrong (a bad escape, a huge number)."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _string(path: Path, token: Token) -> str:
    """The value of a STRING token, with Python's escapes; anything doubtful is an error."""
    text = str(token)
    for index, char in enumerate(text):
        if char == "\0":  # Python's own message would echo the NUL and no position
            pos = _pos(path, token)
            raise _Refused(
                Diagnostic(
                    Pos(path, pos.line, pos.column + index),
                    f"string {_escaped(text)} holds a raw NUL character; write \\0 instead",
                )
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "\d": an invalid escape is an error here
            value = ast.literal_eval(text)
    except (SyntaxError, ValueError, SyntaxWarning, DeprecationWarning) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        reason = reason.split(":", 1)[-1].strip() if "codec" in reason else reason
        raise _Refused(
            Diagnostic(_pos(path, token), f"bad string {_escaped(text)}: {_escaped(reason)}")
        ) from None
    assert isinstance(value, str)
    for char in value:
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise _Refused(
                Diagnostic(
                    _pos(path, token),
                    f"string {_escaped(text)} holds a lone surrogate (U+{ord(char):04X}), "
                    "which is not text; write the character itself",
                )
            )
    return value


def _escaped(text: str) -> str:
    """`text` with control characters written as escapes, so a message prints cleanly."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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

    @staticmethod
    def _split_docs(items: list[Any]) -> tuple[str, list[Any]]:
        """Leading doc comment tokens (inlined into the rule) as text, and the rest."""
        count = 0
        while (
            count < len(items)
            and isinstance(items[count], Token)
            and (items[count].type == "DOC_COMMENT")
        ):
            count += 1
        return _docs(Tree("docs", list(items[:count]))), items[count:]

    def import_stmt(self, items: list[Token]) -> Import:
        (string,) = items
        return Import(_string(self.path, string), self.p(string))

    def version(self, items: list[Token]) -> str:
        return _string(self.path, items[0])

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
            argument = _string(self.path, arg)
        else:
            argument = str(arg)
        return Annotation(str(name), argument, self.p(name))

    def returns(self, items: list[Any]) -> TypeRef:
        return items[-1]  # type: ignore[no-any-return]

    def method(self, items: list[Any]) -> Method:
        doc, items = self._split_docs(items)
        annotations = tuple(i for i in items if isinstance(i, Annotation))
        rest = [i for i in items if not isinstance(i, Annotation)]
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
        doc, (name, type_, default) = self._split_docs(items)
        return Field(str(name), type_, default, doc, self.p(name))

    def enum(self, items: list[Any]) -> Enum:
        doc, name, *members = items
        return Enum(str(name), tuple(members), doc, self.p(name))

    def member(self, items: list[Any]) -> EnumMember:
        doc, (name, value) = self._split_docs(items)
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
        try:
            value = int(items[0])
        except ValueError:  # more digits than Python converts
            raise _Refused(
                Diagnostic(self.p(items[0]), f"integer {str(items[0])[:20]}... is far too long")
            ) from None
        return self._lit(LiteralKind.INT, value, items[0])

    def float_lit(self, items: list[Token]) -> Literal:
        return self._lit(LiteralKind.FLOAT, float(items[0]), items[0])

    def str_lit(self, items: list[Token]) -> Literal:
        return self._lit(LiteralKind.STR, _string(self.path, items[0]), items[0])

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
    problem = _lexical_problem(text, path)
    if problem is not None:
        return problem
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        hint = _likely_mistake(exc, text, path)
        if hint is not None:
            return hint
        return _with_open_brace(_syntax_error(path, exc), exc, text, path)
    try:
        result = _Build(path).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, _Refused):
            return exc.orig_exc.diagnostic
        raise exc.orig_exc from None  # pragma: no cover - a grammar/transformer mismatch
    assert isinstance(result, IdlFile)
    return result


# Comments and strings, skipped when scanning for brackets (an unterminated one is matched
# by the last two alternatives and reported).
_SCAN = re.compile(
    r'//[^\n]*|/\*(?:.|\n)*?\*/|"(?:[^"\\\n]|\\.)*"|(?P<open_comment>/\*)|(?P<open_string>")'
    r"|(?P<bracket>[{}<>])"
)


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _lexical_problem(text: str, path: Path) -> Diagnostic | None:
    """Unterminated strings and comments, and types nested deeper than MAX_TYPE_DEPTH,
    reported where they start (the parser would report them late, or overflow the stack)."""
    depth = 0
    for match in _SCAN.finditer(text):
        if match.group("open_comment"):
            line, col = _line_col(text, match.start())
            return Diagnostic(Pos(path, line, col, 2), "unterminated /* comment */")
        if match.group("open_string"):
            line, col = _line_col(text, match.start())
            return Diagnostic(
                Pos(path, line, col), 'unterminated string: close it with " on the same line'
            )
        bracket = match.group("bracket")
        if bracket == "<":
            depth += 1
            if depth > MAX_TYPE_DEPTH:
                line, col = _line_col(text, match.start())
                return Diagnostic(
                    Pos(path, line, col),
                    f"types nest at most {MAX_TYPE_DEPTH} levels deep; name an inner "
                    "part with a struct",
                )
        elif bracket == ">":
            depth = max(0, depth - 1)
        elif bracket is not None:  # { or }
            depth = 0
    return None


# Other languages' spellings of the IDL's values, as a user may write them in a default.
_FOREIGN_VALUES = {
    "None": "none",
    "null": "none",
    "nil": "none",
    "NULL": "none",
    "True": "true",
    "TRUE": "true",
    "False": "false",
    "FALSE": "false",
}
_NAME_AFTER_EQUALS = re.compile(r"=\s*([A-Za-z_][A-Za-z0-9_]*)\s*\Z")
_DOC_BEFORE = re.compile(r"///[^\n]*\s*\Z")
_DOCUMENTS_NOTHING: Final = (
    "this /// doc comment documents nothing: it belongs before the declaration it "
    "describes (use // for a plain comment)"
)


def _likely_mistake(exc: UnexpectedInput, text: str, path: Path) -> Diagnostic | None:
    """A diagnostic for two mistakes the parser would report one token late, at a
    token that is not the problem: a default written as a bare name (`= None`, read as
    the start of `Enum.MEMBER`), and a `///` doc comment with nothing after it to
    document (the `}` after it blamed). None for any other syntax error."""
    at_end = isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    )
    if at_end:
        # A `///` last in the file: the same mistake as one last in a block.
        tokens: Any = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
        expected = set(tokens)
        match = _DOC_BEFORE.search(text)
        if "DOC_COMMENT" not in expected or match is None:
            return None
        line, col = _line_col(text, match.start())
        return Diagnostic(Pos(path, line, col, 3), _DOCUMENTS_NOTHING)
    if not isinstance(exc, UnexpectedToken):
        return None
    expected = set(exc.accepts or exc.expected)
    before = text[: exc.token.start_pos]
    if expected == {"DOT"}:
        match = _NAME_AFTER_EQUALS.search(before)
        if match is None:
            return None
        word = match.group(1)
        line, col = _line_col(text, match.start(1))
        pos = Pos(path, line, col, len(word))
        if word in _FOREIGN_VALUES:
            return Diagnostic(pos, f"'{word}' is not an IDL value: write '{_FOREIGN_VALUES[word]}'")
        return Diagnostic(
            pos,
            f"'{word}' is not a value: a default is a number, a \"string\", true, false, "
            "none, [], {} or an enum member written Enum.MEMBER",
        )
    if "DOC_COMMENT" in expected and exc.token.type == "RBRACE":
        match = _DOC_BEFORE.search(before)
        if match is None:
            return None
        line, col = _line_col(text, match.start())
        return Diagnostic(Pos(path, line, col, 3), _DOCUMENTS_NOTHING)
    return None


def _with_open_brace(
    diagnostic: Diagnostic, exc: UnexpectedInput, text: str, path: Path
) -> Diagnostic:
    """At the end of the file, say which `{` is still open."""
    at_end = isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    )
    if not at_end:
        return diagnostic
    opened: list[int] = []
    for match in _SCAN.finditer(text):
        if match.group("bracket") == "{":
            opened.append(match.start())
        elif match.group("bracket") == "}" and opened:
            opened.pop()
    if not opened:
        return diagnostic
    line, col = _line_col(text, opened[-1])
    return Diagnostic(
        diagnostic.pos, f"{diagnostic.message}; the '{{' at line {line}:{col} is not closed"
    )
