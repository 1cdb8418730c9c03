"""Reading interface files and their imports into a checked program."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .checker import Scope, check
from .diagnostics import Diagnostic, IdlError
from .model import IdlFile, Import, Pos, Program
from .parser import parse


class InputError(Exception):
    """A file named on the command line cannot be read."""


def load(inputs: Sequence[Path]) -> Program:
    """Parse `inputs` and everything they import, then check it all.

    Raises IdlError with every diagnostic found, or InputError for an unreadable input.
    """
    sources: dict[Path, str] = {}
    files: dict[Path, IdlFile] = {}
    failed: set[Path] = set()
    diagnostics: list[Diagnostic] = []
    order: list[Path] = []
    edges: dict[Path, list[Path]] = {}

    def visit(path: Path, via: Import | None, stack: tuple[Path, ...]) -> None:
        path = path.resolve()
        if path in stack:
            assert via is not None
            cycle = " -> ".join(p.name for p in (*stack[stack.index(path) :], path))
            diagnostics.append(Diagnostic(via.pos, f"import cycle: {cycle}"))
            return
        if path in files or path in failed:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            if via is None:
                raise InputError(f"cannot read {path}: {reason}") from None
            diagnostics.append(
                Diagnostic(via.pos, f"cannot read imported file '{via.path}': {reason}")
            )
            failed.add(path)
            return
        sources[path] = text
        result = parse(text, path)
        if isinstance(result, Diagnostic):
            diagnostics.append(result)
            failed.add(path)
            return
        files[path] = result
        edges[path] = []
        for imp in result.imports:
            target = (path.parent / imp.path).resolve()
            edges[path].append(target)
            visit(target, imp, (*stack, path))
        order.append(path)

    for given in inputs:
        visit(Path(given), None, ())

    modules: dict[str, Path] = {}
    for path in order:
        module = files[path].module
        if module in modules and modules[module] != path:
            diagnostics.append(
                Diagnostic(
                    Pos(path, 1, 1),
                    f"'{path.name}' and '{modules[module]}' would both generate "
                    f"package '{module}': rename one",
                )
            )
        modules.setdefault(module, path)

    scopes: dict[Path, Scope] = {}
    for path in order:
        scope: Scope = {}
        for target in edges[path]:
            if target in files:
                for decl in files[target].types:
                    scope.setdefault(decl.name, (files[target], decl))
        for decl in files[path].types:
            scope.setdefault(decl.name, (files[path], decl))
        scopes[path] = scope

    diagnostics += check((files[p] for p in order), scopes)
    if diagnostics:
        raise IdlError(diagnostics, sources)
    return Program(files=tuple(files[p] for p in order), scopes=scopes)
