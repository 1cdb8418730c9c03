"""Source layout by hand, as `ruff format` would lay it out (no formatter at generation time).

The rule that keeps output stable under `ruff format --check` whatever the names: a
bracketed list is written on one line when the whole line fits, otherwise one item per line
with a trailing comma (ruff's "magic trailing comma" then keeps it exploded). A line that
still does not fit (a long string or identifier cannot be split) gets `# noqa: E501`.
Literals are emitted with `py_str`/`docstring`, never by pasting text into quotes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

from .confusables import CONFUSABLE

INDENT = "    "
DEFAULT_LINE_LENGTH = 100
# The shortest line length the templates are written to fit (README: "from 80 up").
MIN_LINE_LENGTH = 80
NOQA = "  # noqa: E501"


def width(text: str) -> int:
    """Columns `text` takes, counted as ruff counts them (wide East Asian characters: 2)."""
    total = 0
    for char in text:
        if char.isascii():
            total += 1
        elif unicodedata.combining(char):
            continue
        else:
            total += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return total


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _body(text: str, quote: str, *, docstring: bool = False) -> str:
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char == quote and (not docstring or i == 0 or text[i + 1 : i + 2] in ("", quote)):
            # In a docstring only a quote that could close it (or end it) is escaped.
            out.append("\\" + char)
        elif _kept(char, docstring):
            out.append(char)
        else:
            out.append(_escape(char))
    return "".join(out)


def _kept(char: str, docstring: bool) -> bool:
    """Whether `char` appears as itself in a literal (else it is escaped): printable, not
    a tab, not confusable with ASCII (ruff's RUF001/RUF002); newlines in docstrings."""
    if char == " " or (docstring and char == "\n"):
        return True
    return char.isprintable() and char != "\t" and ord(char) not in CONFUSABLE


def py_str(text: str) -> str:
    """A Python string literal whose value is exactly `text`, quoted as ruff prefers."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    return f"{quote}{_body(text, quote)}{quote}"


def clean_doc(text: str) -> str:
    """Doc text normalised as `inspect.cleandoc` would leave it (so `__doc__` round-trips):
    tabs expanded, trailing spaces and surrounding blank lines dropped, common indent
    removed; repeated until stable, since dropping a blank first line changes which line
    is first."""
    while True:
        cleaned = _clean_once(text)
        if cleaned == text:
            return cleaned
        text = cleaned


def _clean_once(text: str) -> str:
    # Lines end at "\n" only, as inspect.cleandoc splits them (not at \x1e or U+2028).
    lines = [line.rstrip() for line in text.expandtabs().replace("\r\n", "\n").split("\n")]
    first, rest = lines[0].lstrip(), lines[1:]
    margins = [len(line) - len(line.lstrip()) for line in rest if line]
    margin = min(margins, default=0)
    lines = [first, *(line[margin:] for line in rest)]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def docstring(text: str, indent: str, line_length: int) -> str:
    """A docstring statement for (clean) `text` at `indent`; empty if there is no text.

    Every character is escaped as needed, so `inspect.getdoc()` gives `text` back exactly.
    A line too long is continued on the next source line with a backslash (which is not
    part of the string's value), broken after a space.
    """
    if not text:
        return ""
    body = _body(text, '"', docstring=True)
    lines = body.split("\n")
    physical: list[str] = []
    for number, line in enumerate(lines):
        first = f'{indent}"""' if number == 0 else (indent if line else "")
        last = '"""' if number == len(lines) - 1 and len(lines) == 1 else ""
        physical += _continued(first, line, last, line_length)
    if len(lines) > 1:
        physical.append(f'{indent}"""')
    return "\n".join(physical)


# One character of a string literal's body as written: an escape sequence or a character.
_TOKEN = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)|.", re.DOTALL)


def _continued(lead: str, line: str, end: str, line_length: int) -> list[str]:
    """`lead + line + end`, broken into backslash-continued source lines: after spaces, and
    inside a word too long for any line (between escape sequences, never within one)."""
    limit = line_length - 2
    out: list[str] = []
    current = lead
    for word in re.findall(r"\S*\s*", line):
        if not word:
            continue
        breakable = current.endswith(" ") and not word.startswith(" ")
        if current.strip() and breakable and width(current + word + end) > limit:
            out.append(current + "\\")
            current = ""
        if width(current + word + end) <= limit:
            current += word
            continue
        for token in _TOKEN.findall(word):
            if current.strip() and width(current + token + end) > limit:
                out.append(current + "\\")
                current = ""
            current += token
    out.append(current + end)
    return out


class Call:
    """A call (or bracketed display) to lay out: `head` includes the opening bracket."""

    __slots__ = ("args", "close", "head", "one_tuple")

    def __init__(
        self,
        head: str,
        args: Sequence[str | Call | Value],
        close: str = ")",
        *,
        one_tuple: bool = False,
    ) -> None:
        self.head = head
        self.args = list(args)
        self.close = close
        self.one_tuple = one_tuple  # a 1-tuple: the comma is required, not "magic"

    def flat(self) -> str:
        inner = ", ".join(flat(a) for a in self.args)
        if self.one_tuple and len(self.args) == 1:
            inner += ","
        return f"{self.head}{inner}{self.close}"


class Value:
    """`prefix` + a value that can be parenthesised (and, for a string, split into pieces
    joined by implicit concatenation) when the line does not fit."""

    __slots__ = ("literal", "prefix", "text")

    def __init__(self, prefix: str, literal: str, text: str | None = None) -> None:
        self.prefix = prefix
        self.literal = literal
        self.text = text  # the string's value, if the literal is a string

    def flat(self) -> str:
        return self.prefix + self.literal

    def pieces(self, avail: int) -> list[str]:
        """The literal, or string pieces each fitting in `avail` columns where possible."""
        if self.text is None:
            return [self.literal]
        words = [w for w in re.findall(r"\S*\s*", self.text) if w]
        pieces: list[str] = []
        current = ""
        for word in words:
            if current and width(py_str(current + word)) > avail:
                pieces.append(current)
                current = ""
            while width(py_str(current + word)) > avail and len(word) > 1:
                # A word longer than a line: cut it (pieces need not end at spaces).
                cut = 1
                while cut < len(word) and width(py_str(current + word[: cut + 1])) <= avail:
                    cut += 1
                pieces.append(current + word[:cut])
                current, word = "", word[cut:]
            current += word
        if current or not pieces:
            pieces.append(current)
        return [py_str(piece) for piece in pieces]


Expr = str | Call | Value


def flat(expr: Expr) -> str:
    return expr if isinstance(expr, str) else expr.flat()


def lay_out(expr: Expr, indent: str, line_length: int, prefix: str = "", suffix: str = "") -> str:
    """`indent + prefix + expr + suffix`, on one line if it fits, else with every call that
    does not fit exploded one argument per line with a trailing comma (ruff keeps that
    layout), and a value that does not fit parenthesised or split (ruff's own layout)."""
    line = f"{indent}{prefix}{flat(expr)}{suffix}"
    if width(line) <= line_length or isinstance(expr, str):
        return fit(line, line_length)
    inner = indent + INDENT
    if isinstance(expr, Value):
        if not expr.prefix and not prefix:  # a bare string argument: split in place
            pieces = expr.pieces(line_length - len(indent) - 1)
            if len(pieces) == 1:
                return fit(line, line_length)
            return "\n".join(f"{indent}{p}" for p in pieces) + suffix
        pieces = expr.pieces(line_length - len(inner))
        body = "\n".join(fit(f"{inner}{p}", line_length) for p in pieces)
        head = fit(f"{indent}{prefix}{expr.prefix}(", line_length)
        return f"{head}\n{body}\n{indent}){suffix}"
    if not expr.args:
        return fit(line, line_length)
    lines = [lay_out(arg, inner, line_length, suffix=",") for arg in expr.args]
    head = fit(f"{indent}{prefix}{expr.head}", line_length)
    tail = fit(f"{indent}{expr.close}{suffix}", line_length)
    return "\n".join([head, *lines, tail])


def fit(line: str, line_length: int) -> str:
    """`line`, with `# noqa: E501` if nothing can make it fit (one physical line only)."""
    return line + NOQA if too_long(line, line_length) else line


def too_long(line: str, line_length: int) -> bool:
    """Whether ruff's E501 flags `line`: wider than the limit and more than one "word"
    (ruff exempts a line that is a single run of non-blank characters)."""
    if "\n" in line or width(line) <= line_length:
        return False
    return len(line.split()) > 1


def member_key(name: str) -> tuple[int, NatOrd, NatOrd]:
    """isort's order of imported names (ruff's `order-by-type`): CONSTANTS, Classes, others,
    each in natural order (`Type_9` before `Type_10`), case-insensitively, then by case."""
    return (name_kind(name), NatOrd(name.lower()), NatOrd(name))


def all_key(name: str) -> tuple[int, NatOrd]:
    """RUF022's order of `__all__`: the same kinds as imports, but case-sensitive."""
    return (name_kind(name), NatOrd(name))


def name_kind(name: str) -> int:
    """0 for a CONSTANT (more than one character, every cased one upper case), 1 for a
    Class (an upper-case first character), 2 for anything else (`_Private` included)."""
    if len(name) > 1 and name.isupper():
        return 0
    return 1 if name[:1].isupper() else 2


@functools.total_ordering
class NatOrd:
    """A string ordered as ruff orders names and modules: the `natord` crate's natural
    order (Martin Pool's strnatcmp). A run of digits starting with `0` compares digit by
    digit from the left (`a01` < `a1`, `a010` < `a02`); any other run compares as a number
    (`a9` < `a10`); a longer run wins a tie. Splitting on digits and comparing the numbers
    gets runs with leading zeros wrong, which is how an import block came out unsorted."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NatOrd) and natord(self.text, other.text) == 0

    def __lt__(self, other: NatOrd) -> bool:
        return natord(self.text, other.text) < 0

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"NatOrd({self.text!r})"


def natord(left: str, right: str) -> int:
    """-1, 0 or 1 as `left` sorts before, with or after `right` in natord's order."""
    a = [c for c in left if not c.isspace()]
    b = [c for c in right if not c.isspace()]
    i = j = 0
    while i < len(a) and j < len(b):
        if _digit(a[i]) and _digit(b[j]):
            start_i, start_j = i, j
            while i < len(a) and _digit(a[i]):
                i += 1
            while j < len(b) and _digit(b[j]):
                j += 1
            x, y = a[start_i:i], b[start_j:j]
            if x[0] == "0" or y[0] == "0":
                # Left-aligned: the first differing digit decides, else the longer run.
                for p, q in zip(x, y, strict=False):
                    if p != q:
                        return -1 if p < q else 1
                if len(x) != len(y):
                    return -1 if len(x) < len(y) else 1
            else:
                # Right-aligned: the longer run is the larger number, else digit by digit.
                if len(x) != len(y):
                    return -1 if len(x) < len(y) else 1
                if x != y:
                    return -1 if x < y else 1
            continue
        if a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i += 1
        j += 1
    return (i < len(a)) - (j < len(b))


def _digit(char: str) -> bool:
    """Whether Rust's `char::to_digit(10)` accepts `char` (ASCII digits only)."""
    return "0" <= char <= "9"


# The line length ruff's import sorter (I001) wraps `from` imports at under its defaults.
ISORT_LINE_LENGTH = 88


def from_import(module: str, names: Sequence[str], line_length: int, indent: int = 0) -> str:
    """`from module import a, b` (in isort's order) or its one-name-per-line form.

    Written on one line only if it fits 88 columns too (less `indent`, where it will be
    indented): ruff's isort wraps longer ones under its default settings, and keeps the
    exploded form (its trailing comma is "magic") under any longer line length.
    """
    names = sorted(names, key=member_key)
    limit = min(line_length, ISORT_LINE_LENGTH) - indent
    line = f"from {module} import {', '.join(names)}"
    if width(line) <= limit:
        return line
    if len(names) == 1 and width(line) <= line_length - indent:
        return line  # ruff's isort keeps one name on one line while it fits the limit
    return lay_out(Call(f"from {module} import (", names), "", limit)


def import_block(*sections: Sequence[str]) -> str:
    """`from __future__` then each non-empty section, blank-line separated (isort layout)."""
    blocks = ["from __future__ import annotations", *("\n".join(s) for s in sections if s)]
    return "\n\n".join(blocks)


def after_imports(imports: str, body: str) -> str:
    """`imports` then `body` with the blank lines ruff's isort wants between them (its
    `lines-after-imports = -1`): two before a class or function (decorated or not), one
    before any other statement, such as a type alias when a file declares no class."""
    body = body.lstrip("\n")
    if not body:
        return f"{imports}\n"
    first = body.split(None, 1)[0]
    definition = first.startswith("@") or first in ("class", "def", "async")
    gap = "\n\n\n" if definition else "\n\n"
    return f"{imports}{gap}{body}"


def isort_key(statement: str) -> tuple[int, NatOrd, NatOrd]:
    """isort's order within a section: `import x` before `from x import`, then by module,
    case-insensitively (ruff's default `force-sort-within-sections = false`)."""
    words = statement.split()
    kind = 0 if words[0] == "import" else 1
    return (kind, NatOrd(words[1].lower()), NatOrd(words[1]))


def class_line(name: str, base: str, line_length: int) -> str:
    """`class name(base):`, its base on a line of its own if that is what fits."""
    line = f"class {name}({base}):" if base else f"class {name}:"
    if width(line) <= line_length or not base:
        return fit(line, line_length)
    return f"class {name}(\n{INDENT}{base}\n):"


def assign(
    target: str, value: Call, line_length: int, split_target: tuple[str, str] = ("", "")
) -> str:
    """`target = value` at module level, as ruff lays out an assignment that is too long:
    the value's call broken if `target = head(` fits, else the value parenthesised if
    `target = (` fits, else the target's subscript broken (`split_target` is its
    `(before "[", inside)`), then the value."""
    one = lay_out(value, "", line_length, prefix=f"{target} = ")
    if "\n" not in one or width(one.split("\n", 1)[0]) <= line_length:
        return one
    if width(f"{target} = (") <= line_length or not split_target[0]:
        inner = lay_out(value, INDENT, line_length)
        return f"{target} = (\n{inner}\n)"
    before, inside = split_target
    rest = lay_out(value, "", line_length, prefix="] = ")
    return f"{before}[\n{INDENT}{inside}\n{rest}"
