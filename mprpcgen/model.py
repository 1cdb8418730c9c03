"""The typed model (IR) of an interface file: what the parser builds and the checker reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Pos:
    """A place in an interface file (line and column are 1-based)."""

    path: Path
    line: int
    column: int
    length: int = 1


PRIMITIVE_TYPES = ("bool", "int", "float", "str", "bytes", "any", "none")


@dataclass(frozen=True, slots=True)
class TypeRef:
    """A use of a type: a primitive or declared name, list<T>, map<str, T>, or T?."""

    kind: str  # "named", "list", "map", "optional"
    pos: Pos
    name: str = ""  # for "named"
    args: tuple[TypeRef, ...] = ()

    @property
    def is_optional(self) -> bool:
        return self.kind == "optional"

    def __str__(self) -> str:
        if self.kind == "named":
            return self.name
        if self.kind == "list":
            return f"list<{self.args[0]}>"
        if self.kind == "map":
            return f"map<{self.args[0]}, {self.args[1]}>"
        return f"{self.args[0]}?"


class LiteralKind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STR = "str"
    BOOL = "bool"
    NONE = "none"
    EMPTY_LIST = "[]"
    EMPTY_MAP = "{}"
    ENUM = "enum member"


@dataclass(frozen=True, slots=True)
class Literal:
    """A default value as written."""

    kind: LiteralKind
    value: Any
    pos: Pos
    text: str


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: TypeRef
    default: Literal | None
    pos: Pos


class MethodKind(enum.Enum):
    FUNCTION = "def"
    COROUTINE = "async def"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class Annotation:
    name: str
    argument: str | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    kind: MethodKind
    params: tuple[Param, ...]
    returns: TypeRef | None
    oneway: bool
    annotations: tuple[Annotation, ...]
    doc: str
    pos: Pos

    def annotation(self, name: str) -> Annotation | None:
        return next((a for a in self.annotations if a.name == name), None)

    @property
    def wire_name(self) -> str:
        """The name clients call: `@wire("...")` if given, else the method's own name."""
        wire = self.annotation("wire")
        return wire.argument if wire is not None and wire.argument else self.name


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    version: str | None
    methods: tuple[Method, ...]
    doc: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: TypeRef
    default: Literal | None
    doc: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Struct:
    name: str
    fields: tuple[Field, ...]
    doc: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class EnumMember:
    name: str
    value: int
    doc: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Enum:
    name: str
    members: tuple[EnumMember, ...]
    doc: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Import:
    path: str  # as written, relative to the importing file
    pos: Pos


TypeDecl = Struct | Enum


@dataclass(frozen=True, slots=True)
class IdlFile:
    """One parsed interface file."""

    path: Path
    imports: tuple[Import, ...]
    services: tuple[Service, ...]
    structs: tuple[Struct, ...]
    enums: tuple[Enum, ...]

    @property
    def module(self) -> str:
        """The name of the generated package for this file."""
        return self.path.stem

    @property
    def types(self) -> tuple[TypeDecl, ...]:
        return (*self.enums, *self.structs)


@dataclass(frozen=True, slots=True)
class Program:
    """Every file reachable from the inputs, each with the declarations it can see."""

    files: tuple[IdlFile, ...]
    # file path -> {type name -> (declaring file, declaration)}
    scopes: dict[Path, dict[str, tuple[IdlFile, TypeDecl]]] = field(default_factory=dict)
