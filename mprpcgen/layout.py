"""Source layout by hand, as `ruff format` would lay it out (no formatter at generation time).

The rule that keeps output stable under `ruff format --check` whatever the names: a
bracketed list is written on one line when the whole line fits, otherwise one item per line
with a trailing comma (ruff's "magic trailing comma" then keeps it exploded). A line that
still does not fit (a long string or identifier cannot be split) gets `# noqa: E501`.
Literals are emitted with `py_str`/`docstring`, never by pasting text into quotes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

INDENT = "    "
DEFAULT_LINE_LENGTH = 100
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
        elif char == " " or (char.isprintable() and char != "\t") or (docstring and char == "\n"):
            out.append(char)
        else:
            out.append(_escape(char))
    return "".join(out)


def py_str(text: str) -> str:
    """A Python string literal whose value is exactly `text`, quoted as ruff prefers."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    return f"{quote}{_body(text, quote)}{quote}"


def clean_doc(text: str) -> str:
    """Doc text normalised as `inspect.cleandoc` would leave it (so `__doc__` round-trips):
    tabs expanded, trailing spaces and surrounding blank lines dropped, common indent removed."""
    lines = [line.rstrip() for line in text.expandtabs().splitlines()]
    if not lines:
        return ""
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

    Every character is escaped as needed, so `inspect.getdoc()` gives `text` back exactly;
    `# noqa: E501` follows the closing quotes if a line is too long (ruff applies a comment
    there to the whole string).
    """
    if not text:
        return ""
    body = _body(text, '"', docstring=True)
    lines = body.split("\n")
    if len(lines) == 1:
        source = f'{indent}"""{lines[0]}"""'
        physical = [source]
    else:
        rest = [f"{indent}{line}" if line else "" for line in lines[1:]]
        physical = [f'{indent}"""{lines[0]}', *rest, f'{indent}"""']
        source = "\n".join(physical)
    if any(width(line) > line_length for line in physical):
        source += NOQA
    return source


class Call:
    """A call (or bracketed display) to lay out: `head` includes the opening bracket."""

    __slots__ = ("args", "close", "head", "one_tuple")

    def __init__(
        self, head: str, args: Sequence[str | Call], close: str = ")", *, one_tuple: bool = False
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


def flat(expr: str | Call) -> str:
    return expr if isinstance(expr, str) else expr.flat()


def lay_out(
    expr: str | Call, indent: str, line_length: int, prefix: str = "", suffix: str = ""
) -> str:
    """`indent + prefix + expr + suffix`, on one line if it fits, else with every call that
    does not fit exploded one argument per line with a trailing comma."""
    line = f"{indent}{prefix}{flat(expr)}{suffix}"
    if width(line) <= line_length or isinstance(expr, str) or not expr.args:
        return fit(line, line_length)
    inner = indent + INDENT
    lines = [lay_out(arg, inner, line_length, suffix=",") for arg in expr.args]
    head = fit(f"{indent}{prefix}{expr.head}", line_length)
    tail = fit(f"{indent}{expr.close}{suffix}", line_length)
    return "\n".join([head, *lines, tail])


def fit(line: str, line_length: int) -> str:
    """`line`, with `# noqa: E501` if nothing can make it fit (one physical line only)."""
    if "\n" in line or width(line) <= line_length:
        return line
    return line + NOQA


def member_key(name: str) -> tuple[int, str, str]:
    """isort's order of imported names (ruff's `order-by-type`): CONSTANTS, Classes, others,
    each case-insensitively."""
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return (kind, name.lower(), name)


def from_import(module: str, names: Sequence[str], line_length: int) -> str:
    """`from module import a, b` (in isort's order) or its one-name-per-line form."""
    names = sorted(names, key=member_key)
    line = f"from {module} import {', '.join(names)}"
    if width(line) <= line_length:
        return line
    if len(names) == 1:
        return fit(line, line_length)
    return lay_out(Call(f"from {module} import (", names), "", line_length)


def import_block(*sections: Sequence[str]) -> str:
    """`from __future__` then each non-empty section, blank-line separated (isort layout)."""
    blocks = ["from __future__ import annotations", *("\n".join(s) for s in sections if s)]
    return "\n\n".join(blocks)


def isort_key(statement: str) -> tuple[int, str, str]:
    """isort's order within a section: `import x` before `from x import`, then by module,
    case-insensitively (ruff's default `force-sort-within-sections = false`)."""
    words = statement.split()
    kind = 0 if words[0] == "import" else 1
    return (kind, words[1].lower(), words[1])
