"""Semantic checks of a parsed program. Every problem found is reported, not just the first."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from pathlib import Path

from pymprpc.schema import INT_MAX, INT_MIN

from .diagnostics import Diagnostic
from .model import (
    PRIMITIVE_TYPES,
    Annotation,
    Enum,
    IdlFile,
    Literal,
    LiteralKind,
    Method,
    MethodKind,
    Pos,
    Service,
    Struct,
    TypeDecl,
    TypeRef,
)
from .naming import (
    AMBIGUOUS_NAMES,
    CLIENT_ATTRIBUTES,
    IDENTIFIER,
    MAX_NAME_LENGTH,
    PROJECT_MODULES,
    PYTHON_KEYWORDS,
    STDLIB_MODULES,
    service_names,
    snake_case,
)

Scope = dict[str, tuple[IdlFile, TypeDecl]]

EXECUTORS = ("process", "thread", "inline")
# Python's naming conventions, so generated code reads as (and lints as) idiomatic Python.
STYLES = {
    "type": (re.compile(r"[A-Z][A-Za-z0-9]*\Z"), "CapWords", lambda n: n[:1].upper() + n[1:]),
    "service": (re.compile(r"[A-Z][A-Za-z0-9]*\Z"), "CapWords", lambda n: n[:1].upper() + n[1:]),
    "enum member": (
        re.compile(r"[A-Z][A-Z0-9_]*\Z"),
        "UPPER_CASE",
        lambda n: snake_case(n).upper(),
    ),
}
SNAKE = (re.compile(r"[a-z][a-z0-9_]*\Z"), "snake_case", lambda n: snake_case(n))
PACKAGE_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")  # what the file name's package may be


def article(word: str) -> str:
    """`a` or `an` before `word` ("an int", "an async def", "a str")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


class Checker:
    """Collects every semantic problem of a program's files."""

    def __init__(self, broken_imports: frozenset[Path] = frozenset()) -> None:
        self.diagnostics: list[Diagnostic] = []
        # Files with an import that failed: their unknown types are that failure's echo.
        self.broken_imports = broken_imports
        self.file: IdlFile | None = None

    def error(self, pos: Pos, message: str) -> None:
        self.diagnostics.append(Diagnostic(pos, message))

    # -- names -------------------------------------------------------------------

    def check_name(self, name: str, pos: Pos, what: str) -> bool:
        if len(name) > MAX_NAME_LENGTH:
            self.error(
                pos,
                f"{what} name '{name[:20]}...' is {len(name)} characters long; "
                f"names have at most {MAX_NAME_LENGTH}",
            )
            return False
        if name in PYTHON_KEYWORDS:
            self.error(pos, f"{what} name '{name}' is a Python keyword; choose another name")
            return False
        if name in AMBIGUOUS_NAMES:
            self.error(
                pos, f"{what} name '{name}' is easily misread as 1 or 0; choose another name"
            )
            return False
        if name.startswith("_"):
            self.error(pos, f"{what} name '{name}' must not start with '_' (private in Python)")
            return False
        pattern, style, fix = STYLES.get(what, SNAKE)
        if not pattern.match(name):
            self.error(pos, f"{what} names are {style}: write '{fix(name)}' instead of '{name}'")
            return False
        return True

    def check_duplicates(self, items: Iterable[tuple[str, Pos]], what: str) -> None:
        seen: dict[str, Pos] = {}
        for name, pos in items:
            if name in seen:
                first = seen[name]
                self.error(pos, f"duplicate {what} '{name}' (first declared at line {first.line})")
            else:
                seen[name] = pos

    # -- files -------------------------------------------------------------------

    def check_file(self, file: IdlFile, scope: Scope) -> None:
        self.file = file
        if len(file.module) > MAX_NAME_LENGTH:
            self.error(
                Pos(file.path, 1, 1),
                f"file name '{file.path.name}' is too long: it names the generated package, "
                f"and names have at most {MAX_NAME_LENGTH} characters",
            )
        elif file.module in STDLIB_MODULES:
            self.error(
                Pos(file.path, 1, 1),
                f"file name '{file.path.name}' would generate package '{file.module}', "
                "which is a module of Python's standard library; rename the file",
            )
        elif file.module in PROJECT_MODULES:
            self.error(
                Pos(file.path, 1, 1),
                f"file name '{file.path.name}' would generate package '{file.module}', "
                "which would shadow the package of that name that pymprpc needs; "
                "rename the file",
            )
        elif not IDENTIFIER.match(file.module) or file.module in PYTHON_KEYWORDS:
            self.error(
                Pos(file.path, 1, 1),
                f"file name '{file.path.name}' must be a Python identifier before '.idl': "
                "it names the generated package",
            )
        elif not PACKAGE_NAME.match(file.module):
            # PEP 8 package names; ruff's N999 fails a package named otherwise.
            self.error(
                Pos(file.path, 1, 1),
                f"file name '{file.path.name}' would generate package '{file.module}', but "
                "package names are lowercase (PEP 8): rename it to "
                f"'{_lowercase_name(file.module)}.idl'",
            )
        own = [(d.name, d.pos) for d in file.types] + [(s.name, s.pos) for s in file.services]
        self.check_duplicates(own, "declaration")
        for decl in file.types:
            self.check_name(decl.name, decl.pos, "type")
            other = scope.get(decl.name)
            if other is not None and other[0].path != file.path:
                self.error(
                    decl.pos,
                    f"type '{decl.name}' is already declared in {other[0].path.name}, "
                    "which this file imports",
                )
        self.check_generated_names(file, scope)
        for enum in file.enums:
            self.check_enum(enum)
        for struct in file.structs:
            self.check_struct(struct, scope)
        for service in file.services:
            self.check_name(service.name, service.pos, "service")
            self.check_duplicates(((m.name, m.pos) for m in service.methods), "method")
            for method in service.methods:
                self.check_method(method, scope)
            self.check_wire_names(service)
        self.check_recursion(file, scope)

    def check_generated_names(self, file: IdlFile, scope: Scope) -> None:
        """Names generated for two declarations must differ (`Jobs` and `AsyncJobs` would
        both give `AsyncJobsClient`; `HTTPServer` and `HttpServer` `register_http_server`)."""
        owners: dict[str, Service] = {}
        for service in file.services:
            for name in service_names(service.name):
                if name in scope:
                    self.error(
                        service.pos,
                        f"service '{service.name}' generates '{name}', which is also the "
                        f"name of type '{name}' (line {scope[name][1].pos.line}); rename one",
                    )
                first = owners.setdefault(name, service)
                if first is not service and first.name != service.name:
                    self.error(
                        service.pos,
                        f"services '{first.name}' (line {first.pos.line}) and "
                        f"'{service.name}' would both generate '{name}'; rename one",
                    )

    def check_enum(self, enum: Enum) -> None:
        if not enum.members:
            self.error(enum.pos, f"enum '{enum.name}' has no members")
        self.check_duplicates(((m.name, m.pos) for m in enum.members), "enum member")
        values: dict[int, str] = {}
        for member in enum.members:
            self.check_name(member.name, member.pos, "enum member")
            if not INT_MIN <= member.value <= INT_MAX:
                self.error(member.pos, f"enum value {member.value} is outside the 64-bit range")
            if member.value in values:
                self.error(
                    member.pos,
                    f"enum value {member.value} of '{member.name}' is already used by "
                    f"'{values[member.value]}'",
                )
            else:
                values[member.value] = member.name

    def check_struct(self, struct: Struct, scope: Scope) -> None:
        self.check_duplicates(((f.name, f.pos) for f in struct.fields), "field")
        for f in struct.fields:
            self.check_name(f.name, f.pos, "field")
            if self.check_type(f.type, scope) and f.default is not None:
                self.check_default(f.default, f.type, scope, allow_empty=True)

    def check_method(self, method: Method, scope: Scope) -> None:
        if self.check_name(method.name, method.pos, "method") and method.name in CLIENT_ATTRIBUTES:
            self.error(
                method.pos,
                f"method name '{method.name}' is reserved: the generated clients use it",
            )
        self.check_duplicates(((p.name, p.pos) for p in method.params), "parameter")
        seen_default = False
        for param in method.params:
            if self.check_name(param.name, param.pos, "parameter") and param.name == "self":
                self.error(param.pos, "parameter name 'self' is reserved")
            if param.default is not None:
                seen_default = True
            elif seen_default:
                self.error(
                    param.pos,
                    f"parameter '{param.name}' without a default follows one with a default",
                )
            if self.check_type(param.type, scope) and param.default is not None:
                self.check_default(param.default, param.type, scope, allow_empty=False)
        if method.returns is not None:
            self.check_type(method.returns, scope)
        if method.kind is MethodKind.STREAM and (
            method.returns is None or _is_none(method.returns)
        ):
            self.error(method.pos, f"stream '{method.name}' must declare its item type: -> T")
        if method.oneway:
            if method.kind is MethodKind.STREAM:
                self.error(method.pos, f"a stream cannot be oneway: '{method.name}'")
            elif method.returns is not None and not _is_none(method.returns):
                self.error(
                    method.returns.pos,
                    f"oneway method '{method.name}' cannot return a value (nobody receives it)",
                )
        self.check_annotations(method)

    def check_wire_names(self, service: Service) -> None:
        """Two methods may not answer to the same name on the wire."""
        seen: dict[str, Method] = {}
        for method in service.methods:
            first = seen.setdefault(method.wire_name, method)
            if first is not method and first.name != method.name:  # same name: reported
                self.error(
                    method.pos,
                    f"method '{method.name}' is called '{method.wire_name}' on the wire, "
                    f"like method '{first.name}' (line {first.pos.line}); rename one",
                )

    def check_annotations(self, method: Method) -> None:
        self.check_duplicates(((a.name, a.pos) for a in method.annotations), "annotation")
        for ann in method.annotations:
            if ann.name == "deprecated":
                if ann.argument is not None:
                    self.error(ann.pos, "@deprecated takes no argument")
            elif ann.name == "executor":
                if ann.argument not in EXECUTORS:
                    self.error(
                        ann.pos,
                        f"@executor needs one of {', '.join(EXECUTORS)}, e.g. @executor(thread)",
                    )
                elif method.kind is not MethodKind.FUNCTION:
                    self.error(
                        ann.pos,
                        f"@executor applies to plain 'def' methods; '{method.name}' is "
                        f"{article(method.kind.value)} {method.kind.value} and runs on the "
                        "event loop",
                    )
            elif ann.name == "wire":
                self.check_wire_annotation(ann)
            else:
                self.error(
                    ann.pos,
                    f"unknown annotation '@{ann.name}' "
                    '(known: @deprecated, @executor(...), @wire("..."))',
                )

    def check_wire_annotation(self, ann: Annotation) -> None:
        name = ann.argument
        if not name:
            self.error(
                ann.pos,
                '@wire needs the name clients call, e.g. @wire("getUser") for a legacy '
                "camelCase method",
            )
        elif name.startswith("system."):
            self.error(ann.pos, f"@wire(\"{name}\"): names under 'system.' belong to the server")
        elif not name.isprintable() or any(c.isspace() for c in name):
            self.error(ann.pos, f"@wire({name!r}): a wire name has no spaces or control characters")

    # -- types -------------------------------------------------------------------

    def check_type(self, ref: TypeRef, scope: Scope) -> bool:
        if ref.kind == "named":
            if ref.name in PRIMITIVE_TYPES or ref.name in scope:
                return True
            if self.file is not None and self.file.path in self.broken_imports:
                return False  # the failed import was reported; do not guess
            known = {name.lower(): name for name in (*PRIMITIVE_TYPES, *scope)}
            close = difflib.get_close_matches(ref.name.lower(), list(known), n=1)
            hint = f" (did you mean '{known[close[0]]}'?)" if close else ""
            self.error(ref.pos, f"unknown type '{ref.name}'{hint}")
            return False
        if ref.kind == "map":
            key, _ = ref.args
            if not (key.kind == "named" and key.name == "str"):
                self.error(key.pos, f"map keys must be str, not {key}: map<str, T>")
                return False
        if ref.kind == "optional" and ref.args[0].kind == "optional":
            self.error(ref.pos, f"'{ref}' is optional twice")
            return False
        return all(self.check_type(arg, scope) for arg in ref.args)

    def check_default(self, lit: Literal, ref: TypeRef, scope: Scope, *, allow_empty: bool) -> None:
        problem = _default_problem(lit, ref, scope, allow_empty)
        if problem:
            self.error(lit.pos, f"bad default {lit.text} for type {ref}: {problem}")

    def check_recursion(self, file: IdlFile, scope: Scope) -> None:
        """A struct may not contain itself through required struct fields (infinite)."""

        def required_structs(struct: Struct) -> Iterable[tuple[str, Struct]]:
            for f in struct.fields:
                if f.type.kind == "named" and f.default is None:
                    found = scope.get(f.type.name)
                    if found is not None and isinstance(found[1], Struct):
                        yield f.name, found[1]

        for start in file.structs:
            stack: list[tuple[Struct, str]] = [(start, start.name)]
            seen: set[str] = set()
            while stack:
                struct, trail = stack.pop()
                for field_name, target in required_structs(struct):
                    path = f"{trail}.{field_name}"
                    if target.name == start.name:
                        self.error(
                            start.pos,
                            f"struct '{start.name}' contains itself through required fields "
                            f"({path}); make one of them optional (T?) or a list",
                        )
                        stack.clear()
                        break
                    if target.name not in seen:
                        seen.add(target.name)
                        stack.append((target, f"{path} -> {target.name}"))


def _is_float(ref: TypeRef) -> bool:
    while ref.kind == "optional":
        ref = ref.args[0]
    return ref.kind == "named" and ref.name == "float"


def _is_none(ref: TypeRef) -> bool:
    return ref.kind == "named" and ref.name == "none"


def _lowercase_name(module: str) -> str:
    """A lowercase package name to suggest for `module`, one the file-name rules accept
    (`JSON` is not to become the standard library's `json`)."""
    name = snake_case(module)
    if name in STDLIB_MODULES or name in PROJECT_MODULES or name in PYTHON_KEYWORDS:
        name += "_api"
    return name


def _enum_member_problem(lit: Literal, scope: Scope) -> str:
    """What is wrong with enum-member literal `lit` (`E.M`) wherever it stands ("" if
    nothing): E must be an enum in scope and M one of its members."""
    enum_name, member = lit.value
    decl = scope.get(enum_name)
    if decl is None:
        return f"unknown enum {enum_name}"
    if not isinstance(decl[1], Enum):
        return f"{enum_name} is a struct, not an enum: only an enum member can be written E.M"
    if member not in {m.name for m in decl[1].members}:
        return f"{enum_name} has no member '{member}'"
    return ""


def _default_problem(lit: Literal, ref: TypeRef, scope: Scope, allow_empty: bool) -> str:
    kind = lit.kind
    if kind is LiteralKind.INT and not INT_MIN <= lit.value <= INT_MAX:
        return f"integers are 64-bit on the wire ({INT_MIN} to {INT_MAX})"
    if kind is LiteralKind.FLOAT and not math.isfinite(lit.value):
        return "too large for a float (it would be infinite)"
    if kind is LiteralKind.INT and _is_float(ref):
        try:
            float(lit.value)
        except OverflowError:
            return "too large for a float"
    if ref.kind == "optional":
        if kind is LiteralKind.NONE:
            return ""
        return _default_problem(lit, ref.args[0], scope, allow_empty)
    if ref.kind in ("list", "map"):
        empty = LiteralKind.EMPTY_LIST if ref.kind == "list" else LiteralKind.EMPTY_MAP
        if kind is not empty:
            return f"only {empty.value} can be the default of a {ref.kind}"
        if not allow_empty:
            return f"parameters cannot default to {empty.value}; declare {ref}? = none instead"
        return ""
    name = ref.name
    if name == "any":
        if kind in (LiteralKind.EMPTY_LIST, LiteralKind.EMPTY_MAP) and not allow_empty:
            return "parameters cannot default to [] or {}"
        if kind is LiteralKind.ENUM:
            # Any value will do, but an enum member must exist like anywhere else.
            return _enum_member_problem(lit, scope)
        return ""
    expected = {
        "bool": (LiteralKind.BOOL,),
        "int": (LiteralKind.INT,),
        "float": (LiteralKind.FLOAT, LiteralKind.INT),
        "str": (LiteralKind.STR,),
        "none": (LiteralKind.NONE,),
    }
    if name in expected:
        if kind in expected[name]:
            return ""
        if kind is LiteralKind.NONE:
            return f"none needs an optional type: declare {ref}?"
        return f"expected {article(name)} {name} value"
    if name == "bytes":
        return "bytes values cannot have a default other than none (declare bytes?)"
    decl = scope.get(name)
    if decl is not None and isinstance(decl[1], Enum):
        if kind is not LiteralKind.ENUM:
            return (
                f"expected a member of {name}, e.g. {name}.{decl[1].members[0].name}"
                if (decl[1].members)
                else f"expected a member of {name}"
            )
        enum_name, member = lit.value
        if enum_name != name:
            return f"{enum_name} is not {name}"
        if member not in {m.name for m in decl[1].members}:
            return f"{name} has no member '{member}'"
        return ""
    if decl is not None:
        return "a struct can only default to none (declare it optional: T?)"
    return "unknown type"


def check(
    files: Iterable[IdlFile],
    scopes: dict[Path, Scope],
    broken_imports: Iterable[Path] = (),
) -> list[Diagnostic]:
    """Every semantic problem of `files` (each seeing the types of its scope)."""
    checker = Checker(frozenset(broken_imports))
    for file in files:
        checker.check_file(file, scopes[file.path])
    return checker.diagnostics
