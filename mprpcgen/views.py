"""Typed views of a checked file: every piece of text the templates print, computed once.

Spelling rules that keep user names and generated names apart (see `naming.py`):
module-level helpers are imported under `_` aliases; a typing name (`Any`, `Iterator`,
`AsyncIterator`) is written plainly unless a user type of that name is in the module, then
as `_typing.X`/`_cabc.X`; inside a class whose members rebind a builtin the generated
annotations use (`int`, `list`, `dict`, ...), that builtin is written `_builtins.X`.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field

from pymprpc.schema import PRIMITIVES

from . import naming
from .layout import (
    INDENT,
    Call,
    Expr,
    Value,
    assign,
    clean_doc,
    docstring,
    fit,
    lay_out,
    py_str,
    width,
)
from .model import (
    Enum,
    IdlFile,
    Literal,
    LiteralKind,
    Method,
    MethodKind,
    Program,
    Service,
    Struct,
    TypeRef,
)

# Builtins the generated annotations and defaults use: a class member of one of these
# names would rebind it inside the class body.
BUILTIN_TYPES = frozenset({"bool", "int", "float", "str", "bytes", "list", "dict"})
TYPING_NAMES = {"Any": "_typing", "Iterator": "_cabc", "AsyncIterator": "_cabc"}


@dataclass(frozen=True, slots=True)
class Spelling:
    """How one namespace writes the names generated code relies on; `used` collects the
    helpers written, so the module imports exactly those."""

    module_names: frozenset[str]  # user names visible at module level
    shadowed: frozenset[str] = frozenset()  # builtins rebound in the current class
    used: set[str] = field(default_factory=set)

    def builtin(self, name: str) -> str:
        if name in self.shadowed:
            self.used.add("builtins")
            return f"_builtins.{name}"
        return name

    def typing(self, name: str) -> str:
        if name in self.module_names:
            module = TYPING_NAMES[name]
            self.used.add(module)
            return f"{module}.{name}"
        self.used.add(f"plain:{name}")  # markers apart from user type names
        return name

    def in_class(self, members: Iterable[str]) -> Spelling:
        return Spelling(self.module_names, BUILTIN_TYPES & frozenset(members), self.used)


@dataclass(frozen=True, slots=True)
class MemberView:
    name: str
    value: int
    doc: str


@dataclass(frozen=True, slots=True)
class EnumView:
    name: str
    doc: str
    members: tuple[MemberView, ...]
    schema: str


@dataclass(frozen=True, slots=True)
class FieldView:
    decl: str
    doc: str


@dataclass(frozen=True, slots=True)
class StructView:
    name: str
    doc: str
    fields: tuple[FieldView, ...]
    schema: str  # the whole `_XSchema = ...` statement


@dataclass(frozen=True, slots=True)
class MethodView:
    name: str
    wire: str
    kind: str  # "unary", "stream", "oneway"
    deprecated: bool
    server_def: str  # header (and decorator-free) of the abstract method
    server_doc: str
    server_body: str  # what follows the header in the servicer
    sync_def: str
    async_def: str
    client_doc: str
    sig: str  # `_sig = _XMethods.m`
    encode: str  # `_args = _sig.encode_args(...)`, laid out
    # The async client's unary call: `return self._typed_call(wire, (args...), typed=_sig)`,
    # laid out (a plain def returning the call's coroutine: no frame of its own).
    async_call: str
    signature: str  # the `name = _schema.Signature(...)` statement of the Methods class
    register: str  # the `server.register_function(...)(...)` statement


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    methods_class: str
    servicer: str
    client: str
    async_client: str
    register: str
    register_def: str
    version: str  # the `VERSION: str | None = ...` line
    service: str  # the clients' `SERVICE: str = ...` line
    register_service: str  # the `server.register_service(...)` statement
    methods_doc: str
    class_doc: str
    sync_doc: str
    async_doc: str
    methods: tuple[MethodView, ...]


@dataclass(frozen=True, slots=True)
class Options:
    line_length: int
    package: str  # import prefix of the output directory ("" or "pkg.sub.")


# A composite annotation wider than this is named by a module-level alias in types.py
# (`_Type1: TypeAlias = list[...]`), so every line holding one fits any line length >= 80.
ALIAS_WIDTH = 32


@dataclass(frozen=True, slots=True)
class AliasView:
    name: str
    statement: str  # `_TypeN: _typing.TypeAlias = ...`


class FileViews:
    """Builds the views of one file of a checked program."""

    def __init__(self, program: Program, file: IdlFile, options: Options) -> None:
        self.program = program
        self.file = file
        self.options = options
        self.scope = program.scopes[file.path]
        self.width = options.line_length
        self.aliases: dict[str, AliasView] = {}  # IDL type text -> its alias
        self.alias_names: set[str] = set()  # type names the aliases mention
        # Aliases live in types.py, whose module namespace holds every type in scope.
        self.alias_spelling = Spelling(frozenset(self.scope))
        for ref in _file_refs(file):
            self._alias(ref, self.alias_spelling)

    def _alias(self, ref: TypeRef, sp: Spelling, *, force: bool = False) -> str:
        """The annotation of `ref` at module level, naming long composites by aliases
        (any type, with `force`)."""
        key = str(ref)
        if key in self.aliases:
            return self.aliases[key].name
        if ref.kind == "named":
            text = self.py_type(ref, sp)
        else:
            args = [self._alias(arg, sp) for arg in ref.args]
            if ref.kind == "list":
                text = f"list[{args[0]}]"
            elif ref.kind == "map":
                text = f"dict[str, {args[1]}]"
            else:
                text = args[0] if args[0] == "None" else f"{args[0]} | None"
        if width(text) <= ALIAS_WIDTH and not force:
            return text
        name = f"Type_{len(self.aliases) + 1}"  # no IDL name has this form
        statement = f"{name}: _typing.TypeAlias = {text}"
        self.alias_names |= {w for w in re.findall(r"\b[A-Z]\w*", text) if w in self.scope}
        self.aliases[key] = AliasView(name, fit(statement, self.width))
        return name

    def annotation(self, ref: TypeRef, sp: Spelling, room: int) -> str:
        """The annotation of `ref` as written in a class or signature, an alias if it is
        wider than `room` columns (or than ALIAS_WIDTH, for a composite type)."""
        probe = Spelling(sp.module_names, sp.shadowed)  # helpers count only if written
        text = self.py_type(ref, probe)
        too_wide = width(text) > room or (ref.kind != "named" and width(text) > ALIAS_WIDTH)
        if too_wide and not text.startswith("Type_"):
            text = self._alias(ref, self.alias_spelling, force=True)
            sp.used.add(text)
        else:
            sp.used.update(probe.used)
        return text

    # -- types -------------------------------------------------------------------

    def py_type(self, ref: TypeRef, sp: Spelling) -> str:
        alias = self.aliases.get(str(ref))
        if alias is not None:
            sp.used.add(alias.name)
            return alias.name
        if ref.kind == "named":
            if ref.name == "any":
                return sp.typing("Any")
            if ref.name in PRIMITIVES:
                python = PRIMITIVES[ref.name][0]
                return "None" if python == "None" else sp.builtin(python)
            sp.used.add(ref.name)
            return ref.name
        if ref.kind == "list":
            return f"{sp.builtin('list')}[{self.py_type(ref.args[0], sp)}]"
        if ref.kind == "map":
            return f"{sp.builtin('dict')}[{sp.builtin('str')}, {self.py_type(ref.args[1], sp)}]"
        inner = self.py_type(ref.args[0], sp)
        return inner if inner == "None" else f"{inner} | None"

    def schema(self, ref: TypeRef) -> str:
        if ref.kind == "named":
            if ref.name in PRIMITIVES:
                return f"_schema.{PRIMITIVES[ref.name][1]}"
            return naming.schema_name(ref.name)
        if ref.kind == "list":
            return f"_schema.List({self.schema(ref.args[0])})"
        if ref.kind == "map":
            return f"_schema.Map({self.schema(ref.args[1])})"
        return f"_schema.Optional({self.schema(ref.args[0])})"

    def default(self, lit: Literal, ref: TypeRef, sp: Spelling) -> str:
        kind = lit.kind
        if kind is LiteralKind.FLOAT or (kind is LiteralKind.INT and _base(ref) == "float"):
            value = float(lit.value)
            assert math.isfinite(value)  # the checker refuses others
            return repr(value).replace("e+", "e")  # ruff format's spelling: 1e300
        if kind is LiteralKind.INT:
            return repr(lit.value)
        if kind is LiteralKind.STR:
            return py_str(lit.value)
        if kind is LiteralKind.BOOL:
            return "True" if lit.value else "False"
        if kind is LiteralKind.NONE:
            return "None"
        if kind is LiteralKind.EMPTY_LIST:
            return f"_dataclasses.field(default_factory={sp.builtin('list')})"
        if kind is LiteralKind.EMPTY_MAP:
            return f"_dataclasses.field(default_factory={sp.builtin('dict')})"
        sp.used.add(lit.value[0])
        return f"{lit.value[0]}.{lit.value[1]}"

    def decl(
        self, name: str, ref: TypeRef, default: Literal | None, sp: Spelling, indent: str
    ) -> Expr:
        """`name: annotation[ = default]` for a field or parameter; the default is
        parenthesised (a string split) by the layout if the line is too long, and the
        annotation aliased if even `name: annotation = (` would not fit."""
        room = self.width - len(indent) - len(name) - len(": ") - len(" = (")
        text = f"{name}: {self.annotation(ref, sp, room)}"
        if default is None:
            return text
        value = self.default(default, ref, sp)
        if value.startswith("_dataclasses.field("):
            return Call(f"{text} = _dataclasses.field(", [value[len("_dataclasses.field(") : -1]])
        is_str = default.kind is LiteralKind.STR
        return Value(f"{text} = ", value, default.value if is_str else None)

    # -- declarations ------------------------------------------------------------

    def enum(self, enum: Enum) -> EnumView:
        return EnumView(
            name=enum.name,
            doc=self.doc(enum.doc or f"Enum {enum.name}.", INDENT),
            members=tuple(
                MemberView(m.name, m.value, self.doc(m.doc, INDENT)) for m in enum.members
            ),
            schema=assign(
                naming.schema_name(enum.name), Call("_schema.Enum(", [enum.name]), self.width
            ),
        )

    def struct(self, struct: Struct, module: Spelling) -> StructView:
        sp = module.in_class(f.name for f in struct.fields)
        fields = []
        for f in struct.fields:
            decl = self.decl(f.name, f.type, f.default, sp, INDENT)
            if f.default is None and f.type.is_optional:
                decl = Value(f"{decl} = ", "None")
            fields.append(FieldView(lay_out(decl, INDENT, self.width), self.doc(f.doc, INDENT)))
        entries = [self.schema_call(f.type, f"{py_str(f.name)}: ") for f in struct.fields]
        fields_expr: Expr = Call("lambda: {", entries, "}") if entries else "dict"
        value = Call("_schema.Struct(", [struct.name, fields_expr])
        # Annotated: the fields may refer to the schema itself (mypy needs the type).
        name = naming.schema_name(struct.name)
        schema = assign(
            f"{name}: _schema.Struct[{struct.name}]",
            value,
            self.width,
            (f"{name}: _schema.Struct", struct.name),
        )
        return StructView(
            name=struct.name,
            doc=self.doc(struct.doc or f"Struct {struct.name}.", INDENT),
            fields=tuple(fields),
            schema=schema,
        )

    def schema_call(self, ref: TypeRef, prefix: str = "") -> Expr:
        """The schema of `ref` as a nested call the layout can break."""
        if ref.kind == "named":
            return prefix + self.schema(ref)
        head = {"list": "_schema.List(", "map": "_schema.Map(", "optional": "_schema.Optional("}
        inner = ref.args[1] if ref.kind == "map" else ref.args[0]
        return Call(prefix + head[ref.kind], [self.schema_call(inner)])

    def doc(self, text: str, indent: str) -> str:
        return docstring(clean_doc(text), indent, self.width)

    # -- services ----------------------------------------------------------------

    def service(self, service: Service, module: Spelling, role: str) -> ServiceView:
        """The view of `service` for the module `role` ("types", "server" or "client"):
        only that module's pieces are computed, so only its helpers are marked used."""
        name = service.name
        doc = clean_doc(service.doc) or f"Service {name}."
        register = naming.register_name(name)
        servicer = naming.servicer_name(name)
        # Two columns short of the limit: what `docstring` keeps free before continuing a line.
        note = textwrap.fill(EXECUTOR_NOTE, max(40, self.width - len(INDENT) - 2))
        class_sp = module.in_class(m.name for m in service.methods)
        register_def = lay_out(
            Call(
                f"def {register}(",
                ["server: _server.Server", f"servicer: {servicer}", "*", 'prefix: str = ""'],
            ),
            "",
            self.width,
            suffix=" -> None:",
        )
        return ServiceView(
            name=name,
            methods_class=naming.methods_name(name),
            servicer=servicer,
            client=naming.client_name(name),
            async_client=naming.async_client_name(name),
            register=register,
            register_def=register_def,
            version=lay_out(
                Value("VERSION: str | None = ", py_str(service.version), service.version)
                if service.version is not None
                else "VERSION: str | None = None",
                INDENT,
                self.width,
            ),
            service=fit(f"{INDENT}SERVICE: str = {py_str(name)}", self.width),
            register_service=self.register_service(service, servicer),
            methods_doc=self.doc(
                f"Declared signatures of service {name}, shared by its server and clients.",
                INDENT,
            ),
            class_doc=self.doc(
                f"{doc}\n\nImplement every method, then serve it with {register}().\n{note}",
                INDENT,
            ),
            sync_doc=self.doc(
                f"{doc}\n\nBlocking client: "
                f"`with {naming.client_name(name)}(addr) as client: ...`.",
                INDENT,
            ),
            async_doc=self.doc(
                f"{doc}\n\nAsyncio client: `async with {naming.async_client_name(name)}(addr) "
                "as client: ...`.",
                INDENT,
            ),
            methods=tuple(self.method(service, m, class_sp, module, role) for m in service.methods),
        )

    def register_service(self, service: Service, servicer: str) -> str:
        """The statement listing the service in the server's table (`system.listServices`):
        its name, wire method names, the servicer's VERSION, the prefix and the doc."""
        args: list[Expr] = [
            py_str(service.name),
            Call("(", [py_str(m.wire_name) for m in service.methods], one_tuple=True),
            f"version={servicer}.VERSION",
            "prefix=prefix",
        ]
        doc = clean_doc(service.doc)
        if doc:
            args.append(Value("doc=", py_str(doc), doc))
        # Inside the `with server.atomic_registration():` block of register_<service>().
        return lay_out(Call("server.register_service(", args), INDENT * 2, self.width)

    def method(
        self, service: Service, method: Method, sp: Spelling, module: Spelling, role: str
    ) -> MethodView:
        width = self.width
        indent2 = INDENT * 2
        params: list[Expr] = ["self"]
        if role != "types":  # only headers need annotations (and mark helpers used)
            params += [self.decl(p.name, p.type, p.default, sp, INDENT * 2) for p in method.params]
        result = "None"
        if method.returns is not None and role != "types":
            result = self.py_type(method.returns, sp)
        stream = method.kind is MethodKind.STREAM
        if stream:
            server_prefix = "async def"
            server_returns = async_returns = sync_returns = ""
            if role != "types":
                server_returns = async_returns = f"{sp.typing('AsyncIterator')}[{result}]"
            if role == "client":
                sync_returns = f"{sp.typing('Iterator')}[{result}]"
            # An async generator, as implementations are (`yield` makes it one).
            server_body = f"{indent2}raise NotImplementedError\n{indent2}yield"
        else:
            coroutine = method.kind is MethodKind.COROUTINE
            server_prefix, server_returns = "async def" if coroutine else "def", result
            sync_returns = async_returns = "None" if method.oneway else result
            if not method.oneway and role == "client":
                # A plain def returning the call's coroutine, typed as an `async def`'s.
                async_returns = f"_typed.Coro[{result}]"
            server_body = ""
        names = [p.name for p in method.params]
        methods = naming.methods_name(service.name)
        executor = method.annotation("executor")
        wire = py_str(method.wire_name)  # an f-string: one "word", as a wire name is
        body = wire[1:-1].replace("{", "{{").replace("}", "}}")
        options: list[Expr] = [f"f{wire[0]}{{prefix}}{body}{wire[0]}"]
        if executor is not None and executor.argument:
            options.append(f"executor={py_str(executor.argument)}")
        if method.annotation("deprecated") is not None:
            options.append("deprecated=True")
        options += [
            Value("signature=", py_str(_idl_signature(method)), _idl_signature(method)),
            Call("doc=_inspect.getdoc(", [f"{naming.servicer_name(service.name)}.{method.name}"]),
            f"schema={methods}.{method.name}",
        ]
        register = lay_out(
            Call("server.register_function(", options),
            INDENT * 2,  # inside register_<service>()'s atomic block
            width,
            suffix=f"(servicer.{method.name})",
        )
        param_schemas = [
            self.param_schema(p.name, p.type, p.default, module) for p in method.params
        ]
        signature = Call(
            "_schema.Signature(",
            [
                f"name={py_str(method.name)}",
                f"wire={py_str(method.wire_name)}",
                Call("params=(", param_schemas, one_tuple=True),
                self.schema_call(method.returns, "result=")
                if method.returns
                else "result=_schema.NONE",
                # The server refuses a handler answering the other way (see Signature).
                f"stream={stream}",
            ],
        )

        stub = not method.doc and not stream  # the servicer's body is just `...`

        def header(prefix: str, returns: str, *roles: str, body: str = "") -> str:
            if role not in roles:
                return ""
            return lay_out(
                Call(f"{prefix} {method.name}(", params),
                INDENT,
                width,
                suffix=f" -> {returns}:{body}",
            )

        return MethodView(
            name=method.name,
            wire=method.wire_name,
            kind="stream" if stream else "oneway" if method.oneway else "unary",
            deprecated=method.annotation("deprecated") is not None,
            server_def=header(server_prefix, server_returns, "server", body=" ..." if stub else ""),
            server_doc=self.doc(method.doc, indent2),
            server_body=server_body,
            sync_def=header("def", sync_returns, "client"),
            async_def=header("async def" if method.oneway else "def", async_returns, "client"),
            client_doc=self.doc(method.doc, indent2),
            sig=fit(f"{indent2}_sig = self._methods.{method.name}", width),
            # `method=`: an error names the method as the server does (with the prefix).
            encode=lay_out(
                Call("_sig.encode_args(", [*names, "method=self._prefix + _sig.wire"]),
                indent2,
                width,
                prefix="_args = ",
            ),
            async_call=lay_out(
                Call(
                    "self._typed_call(",
                    ["self._prefix + _sig.wire", Call("(", names, one_tuple=True), "typed=_sig"],
                ),
                indent2,
                width,
                prefix="return ",
            ),
            signature=_force_explode(signature, INDENT, width, f"{method.name} = "),
            register=register,
        )

    def param_schema(self, name: str, ref: TypeRef, default: Literal | None, sp: Spelling) -> Call:
        args: list[Expr] = [py_str(name), self.schema_call(ref)]
        if default is not None:
            value = self.default(default, ref, sp)
            is_str = default.kind is LiteralKind.STR
            args.append(Value("", value, default.value if is_str else None))
        return Call("_schema.Param(", args)


EXECUTOR_NOTE = (
    "Where methods run: plain `def` methods run on the server's thread executor by default, "
    "so every call shares this instance and its state; a method marked `@executor(process)` "
    "runs in a worker process, and each worker holds its own copy of the servicer. "
    "`async def` and `stream` methods run on the event loop."
)


def _force_explode(expr: Call, indent: str, line_length: int, prefix: str) -> str:
    """The Signature statement, always one argument per line (easy to scan and diff)."""
    inner = indent + INDENT
    lines = [lay_out(arg, inner, line_length, suffix=",") for arg in expr.args]
    head = fit(f"{indent}{prefix}{expr.head}", line_length)
    return "\n".join([head, *lines, f"{indent})"])


def _base(ref: TypeRef) -> str:
    while ref.kind == "optional":
        ref = ref.args[0]
    return ref.name if ref.kind == "named" else ref.kind


def _file_refs(file: IdlFile) -> list[TypeRef]:
    """Every type use of `file`, in declaration order (so alias numbers are stable)."""
    refs = [f.type for s in file.structs for f in s.fields]
    for service in file.services:
        for method in service.methods:
            refs += [p.type for p in method.params]
            if method.returns is not None:
                refs.append(method.returns)
    return refs


def _idl_signature(method: Method) -> str:
    params = ", ".join(
        f"{p.name}: {p.type}" + (f" = {p.default.text}" if p.default else "") for p in method.params
    )
    text = f"{method.wire_name}({params})"
    if method.returns is not None:
        text += f" -> {method.returns}"
    return text


def uses(refs: Iterable[TypeRef]) -> set[str]:
    """Declared type names (not primitives) appearing in `refs`."""
    found: set[str] = set()
    for ref in refs:
        if ref.kind == "named":
            if ref.name not in PRIMITIVES:
                found.add(ref.name)
        else:
            found |= uses(ref.args)
    return found
