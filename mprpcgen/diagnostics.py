"""Compiler-style error reports: `file:line:col: message`, the offending line, a caret."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .model import Pos


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One mistake in an interface file."""

    pos: Pos
    message: str

    def render(self, source: str | None) -> str:
        where = f"{display_path(self.pos.path)}:{self.pos.line}:{self.pos.column}"
        text = f"{where}: error: {self.message}"
        # Lines end at "\n" only, as the parser counts them (not at form feeds or U+2028).
        lines = source.split("\n") if source is not None else []
        if 0 < self.pos.line <= len(lines):
            line = _printable(lines[self.pos.line - 1].rstrip("\r").expandtabs(1))
            caret = " " * (self.pos.column - 1) + "^" + "~" * max(0, self.pos.length - 1)
            text += f"\n    {line}\n    {caret}"
        return text


class IdlError(Exception):
    """One or more diagnostics; `render()` formats them all for a person."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: dict[Path, str]) -> None:
        self.diagnostics = sorted(
            diagnostics, key=lambda d: (str(d.pos.path), d.pos.line, d.pos.column)
        )
        self.sources = sources
        super().__init__(self.render())

    def render(self) -> str:
        parts = [d.render(self.sources.get(d.pos.path)) for d in self.diagnostics]
        count = len(self.diagnostics)
        parts.append(f"{count} error{'s' if count != 1 else ''}")
        return "\n".join(parts)


def display_path(path: Path) -> str:
    """A path as the user wrote it (relative stays relative, never made absolute)."""
    return str(path)


def _printable(line: str) -> str:
    """The quoted line with control characters shown as spaces, so the caret stays aligned."""
    return "".join(c if c.isprintable() else " " for c in line)
