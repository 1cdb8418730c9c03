"""Reading interface files and their imports into a checked program."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .checker import Scope, check
from .diagnostics import Diagnostic, IdlError
from .model import IdlFile, Import, Pos, Program
from .parser import parse


class InputError(Exception):
    """A file named on the command line cannot be read."""


def _normal(path: Path) -> Path:
    """`path` tidied (`a/./b/../c` -> `a/c`) but still as the user wrote it: relative stays
    relative, so messages show paths the way they were typed."""
    return Path(os.path.normpath(path))


class Loader:
    """Parses files and everything they import, then checks the whole program."""

    def __init__(self) -> None:
        self.sources: dict[Path, str] = {}  # by display path, for quoting lines
        self.files: dict[Path, IdlFile] = {}  # by resolved path
        self.failed: set[Path] = set()
        self.diagnostics: list[Diagnostic] = []
        self.order: list[Path] = []  # dependencies first
        self.edges: dict[Path, list[Path]] = {}
        self.broken_imports: set[Path] = set()  # files with an import that failed

    def load(self, inputs: Sequence[Path]) -> Program:
        """Raises IdlError with every diagnostic found, or InputError for an unreadable input."""
        for given in inputs:
            self.visit(_normal(Path(given)), None, ())
        self.check_modules()
        scopes = {self.files[p].path: self.scope(p) for p in self.order}
        files = [self.files[p] for p in self.order]
        self.diagnostics += check(files, scopes, {self.files[p].path for p in self.broken_imports})
        if self.diagnostics:
            raise IdlError(self.diagnostics, self.sources)
        return Program(files=tuple(files), scopes=scopes)

    def visit(self, shown: Path, via: Import | None, stack: tuple[Path, ...]) -> bool:
        """Load `shown` (the path as displayed); whether it loaded without errors."""
        path = shown.resolve()
        if path in stack:
            assert via is not None
            cycle = " -> ".join(p.name for p in (*stack[stack.index(path) :], path))
            self.diagnostics.append(Diagnostic(via.pos, f"import cycle: {cycle}"))
            return False
        if path in self.files:
            return True
        if path in self.failed:
            return False
        text = self.read(shown, via)
        if text is None:
            self.failed.add(path)
            return False
        self.sources[shown] = text
        result = parse(text, shown)
        if isinstance(result, Diagnostic):
            self.diagnostics.append(result)
            self.failed.add(path)
            return False
        self.files[path] = result
        self.edges[path] = []
        for imp in result.imports:
            target = _normal(shown.parent / imp.path)
            self.edges[path].append(target.resolve())
            if not self.visit(target, imp, (*stack, path)):
                self.broken_imports.add(path)
        self.order.append(path)
        return True

    def read(self, shown: Path, via: Import | None) -> str | None:
        try:
            data = shown.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if via is None:
                raise InputError(f"cannot read {shown}: {reason}") from None
            self.diagnostics.append(
                Diagnostic(via.pos, f"cannot read imported file '{via.path}': {reason}")
            )
            return None
        # Any line ending is fine: CRLF (Windows) and a lone CR (classic Mac) become LF here,
        # before anything counts lines (a CR is one byte in UTF-8 and in no multi-byte
        # sequence, so this is safe on undecoded bytes too).
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        try:
            return data.decode("utf-8-sig")  # a BOM (Windows editors write one) is fine
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.sources[shown] = data.decode("utf-8", "replace")
            self.diagnostics.append(
                Diagnostic(
                    Pos(shown, line, column),
                    f"this file is not UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8",
                )
            )
            return None

    def check_modules(self) -> None:
        """Two files may not generate the same package."""
        modules: dict[str, IdlFile] = {}
        for path in self.order:
            file = self.files[path]
            first = modules.setdefault(file.module, file)
            if first is not file:
                self.diagnostics.append(
                    Diagnostic(
                        Pos(file.path, 1, 1),
                        f"'{file.path}' and '{first.path}' would both generate "
                        f"package '{file.module}': rename one",
                    )
                )

    def scope(self, path: Path) -> Scope:
        """The types `path` can see: its own, then those of the files it imports directly.

        A name declared by two imported files is ambiguous: reported at the second import.
        """
        file = self.files[path]
        scope: Scope = {}
        for imp, target in zip(file.imports, self.edges[path], strict=True):
            if target not in self.files:
                continue
            for decl in self.files[target].types:
                seen = scope.get(decl.name)
                if seen is None:
                    scope[decl.name] = (self.files[target], decl)
                elif seen[1] is not decl:
                    self.diagnostics.append(
                        Diagnostic(
                            imp.pos,
                            f"type '{decl.name}' is declared by both '{seen[0].path}' and "
                            f"'{self.files[target].path}', which this file imports; "
                            "rename one",
                        )
                    )
        for decl in file.types:
            scope.setdefault(decl.name, (file, decl))
        return scope


def load(inputs: Sequence[Path]) -> Program:
    """Parse `inputs` and everything they import, then check it all (see `Loader.load`)."""
    return Loader().load(inputs)
