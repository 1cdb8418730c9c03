"""Rendering a checked program to Python with jinja2.

Everything a template prints is computed here (annotations, schema expressions, defaults,
docstrings); templates only lay the pieces out.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pymprpc.schema import PRIMITIVES

from . import __version__
from .checker import snake_case
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
    TypeDecl,
    TypeRef,
)

LINE_LENGTH = 100
INDENT = "    "


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mprpcgen", "templates"),
        autoescape=False,  # we render Python source, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def docstring(text: str, indent: str) -> str:
    """A docstring literal for `text` laid out as ruff format would (empty if no text)."""
    if not text:
        return ""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines()
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    body = "\n".join(f"{indent}{line}" if line else "" for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{body}\n{indent}"""'


def _py_str(value: str) -> str:
    """A string literal quoted as ruff format prefers (double, unless that needs escapes)."""
    if '"' in value and "'" not in value:
        return repr(value)  # repr picks single quotes here
    return json.dumps(value, ensure_ascii=False)


@dataclass
class FileContext:
    """Type names of one file as its generated modules refer to them."""

    file: IdlFile
    program: Program

    @property
    def scope(self) -> dict[str, tuple[IdlFile, TypeDecl]]:
        return self.program.scopes[self.file.path]

    def py_type(self, ref: TypeRef) -> str:
        if ref.kind == "named":
            return PRIMITIVES[ref.name][0] if ref.name in PRIMITIVES else ref.name
        if ref.kind == "list":
            return f"list[{self.py_type(ref.args[0])}]"
        if ref.kind == "map":
            return f"dict[str, {self.py_type(ref.args[1])}]"
        return f"{self.py_type(ref.args[0])} | None"

    def schema(self, ref: TypeRef) -> str:
        if ref.kind == "named":
            if ref.name in PRIMITIVES:
                return f"schema.{PRIMITIVES[ref.name][1]}"
            return f"{ref.name}Schema"
        if ref.kind == "list":
            return f"schema.List({self.schema(ref.args[0])})"
        if ref.kind == "map":
            return f"schema.Map({self.schema(ref.args[1])})"
        return f"schema.Optional({self.schema(ref.args[0])})"

    def default(self, lit: Literal, ref: TypeRef) -> str:
        kind = lit.kind
        if kind is LiteralKind.FLOAT or (kind is LiteralKind.INT and _base(ref) == "float"):
            return repr(float(lit.value))
        if kind is LiteralKind.INT:
            return repr(lit.value)
        if kind is LiteralKind.STR:
            return _py_str(lit.value)
        if kind is LiteralKind.BOOL:
            return "True" if lit.value else "False"
        if kind is LiteralKind.NONE:
            return "None"
        if kind is LiteralKind.EMPTY_LIST:
            return "dataclasses.field(default_factory=list)"
        if kind is LiteralKind.EMPTY_MAP:
            return "dataclasses.field(default_factory=dict)"
        return f"{lit.value[0]}.{lit.value[1]}"

    def decl(self, name: str, ref: TypeRef, default: Literal | None) -> str:
        """`name: annotation[ = default]`, for parameters and fields."""
        text = f"{name}: {self.py_type(ref)}"
        return text if default is None else f"{text} = {self.default(default, ref)}"

    def uses(self, refs: list[TypeRef]) -> set[str]:
        """Declared type names (not primitives) appearing in `refs`."""
        found: set[str] = set()
        for ref in refs:
            if ref.kind == "named":
                if ref.name not in PRIMITIVES:
                    found.add(ref.name)
            else:
                found |= self.uses(list(ref.args))
        return found

    def imports_from_other_files(
        self, classes: set[str], schemas: set[str]
    ) -> list[tuple[str, list[str]]]:
        """(module, names) to import from other files: classes and `<Name>Schema`s."""
        by_module: dict[str, set[str]] = {}
        for name in classes | schemas:
            owner, _ = self.scope[name]
            if owner.path != self.file.path:
                wanted = by_module.setdefault(owner.module, set())
                if name in classes:
                    wanted.add(name)
                if name in schemas:
                    wanted.add(f"{name}Schema")
        return [(m, sorted(by_module[m])) for m in sorted(by_module)]


def _base(ref: TypeRef) -> str:
    while ref.kind == "optional":
        ref = ref.args[0]
    return ref.name if ref.kind == "named" else ref.kind


def _def_line(indent: str, prefix: str, name: str, params: list[str], returns: str) -> str:
    """A def header on one line if it fits, else one parameter per line (ruff's layout)."""
    one = f"{indent}{prefix}{name}({', '.join(params)}) -> {returns}:"
    if len(one) <= LINE_LENGTH:
        return one
    inner = "".join(f"{indent}{INDENT}{p},\n" for p in params)
    return f"{indent}{prefix}{name}(\n{inner}{indent}) -> {returns}:"


def _method_view(ctx: FileContext, method: Method) -> dict[str, Any]:
    params = [ctx.decl(p.name, p.type, p.default) for p in method.params]
    result_ref = method.returns
    result_type = ctx.py_type(result_ref) if result_ref is not None else "None"
    stream = method.kind is MethodKind.STREAM
    names = [p.name for p in method.params]
    executor = method.annotation("executor")
    idl_params = ", ".join(
        f"{p.name}: {p.type}" + (f" = {p.default.text}" if p.default else "") for p in method.params
    )
    idl_sig = f"{method.wire_name}({idl_params})"
    if result_ref is not None:
        idl_sig += f" -> {result_ref}"
    self_params = ["self", *params]
    server_prefix = "async def " if method.kind is MethodKind.COROUTINE else "def "
    server_returns = f"AsyncIterator[{result_type}]" if stream else result_type
    plain_returns = "None" if method.oneway else result_type
    sync_returns = f"Iterator[{result_type}]" if stream else plain_returns
    async_returns = f"AsyncIterator[{result_type}]" if stream else sync_returns
    return {
        "name": method.name,
        "wire": method.wire_name,  # what the server registers and clients call
        "doc": method.doc,
        "server_doc": docstring(method.doc, INDENT * 2),
        "client_doc": docstring(method.doc, INDENT * 2),
        "stream": stream,
        "oneway": method.oneway,
        "deprecated": method.annotation("deprecated") is not None,
        "executor": executor.argument if executor else None,
        "idl_signature": _py_str(idl_sig),
        # A string literal cannot be wrapped; say so rather than fail the user's linter.
        "signature_noqa": (
            "  # noqa: E501" if len(f"        signature={_py_str(idl_sig)},") > LINE_LENGTH else ""
        ),
        "idl_doc": _py_str(method.doc),
        "args": ", ".join(names),
        "params_tuple": _tuple(
            [
                f"schema.Param({_py_str(p.name)}, {ctx.schema(p.type)}"
                + (f", {ctx.default(p.default, p.type)}" if p.default is not None else "")
                + ")"
                for p in method.params
            ],
            INDENT * 2,
        ),
        "result_schema": ctx.schema(result_ref) if result_ref is not None else "schema.NONE",
        "server_def": _def_line(INDENT, server_prefix, method.name, self_params, server_returns),
        "sync_def": _def_line(INDENT, "def ", method.name, self_params, sync_returns),
        "async_def": _def_line(INDENT, "async def ", method.name, self_params, async_returns),
    }


def _service_view(ctx: FileContext, service: Service) -> dict[str, Any]:
    doc = service.doc or f"Service {service.name}."
    snake = snake_case(service.name)
    name = service.name
    return {
        "name": name,
        "snake": snake,
        "doc": service.doc,
        "version": service.version,
        "class_doc": docstring(
            f"{doc}\n\nImplement every method, then serve it with register_{snake}().", INDENT
        ),
        "sync_doc": docstring(
            f"{doc}\n\nBlocking client: `with {name}Client(addr) as client: ...`.", INDENT
        ),
        "async_doc": docstring(
            f"{doc}\n\nAsyncio client: `async with Async{name}Client(addr) as client: ...`.",
            INDENT,
        ),
        "methods": [_method_view(ctx, m) for m in service.methods],
    }


def _struct_view(ctx: FileContext, struct: Struct) -> dict[str, Any]:
    fields = []
    for f in struct.fields:
        text = ctx.decl(f.name, f.type, f.default)
        if f.default is None and f.type.is_optional:
            text += " = None"
        fields.append({"decl": text, "doc": docstring(f.doc, INDENT)})
    schema_fields = [f"{_py_str(f.name)}: {ctx.schema(f.type)}" for f in struct.fields]
    return {
        "name": struct.name,
        "doc": docstring(struct.doc or f"Struct {struct.name}.", INDENT),
        "fields": fields,
        "schema_fields": schema_fields,
    }


def _enum_view(enum: Enum) -> dict[str, Any]:
    return {
        "name": enum.name,
        "doc": docstring(enum.doc or f"Enum {enum.name}.", INDENT),
        "members": [
            {"name": m.name, "value": m.value, "doc": docstring(m.doc, INDENT)}
            for m in enum.members
        ],
    }


def render_file(program: Program, file: IdlFile) -> dict[str, str]:
    """Module file name -> source, for the package generated from `file`."""
    ctx = FileContext(file, program)
    env = _environment()
    header = (
        f"# Generated by mprpcgen {__version__} from {file.path.name}. DO NOT EDIT:\n"
        f"# change {file.path.name} and run mprpcgen again."
    )
    refs: list[TypeRef] = [f.type for s in file.structs for f in s.fields]
    method_refs: list[TypeRef] = []
    for service in file.services:
        for method in service.methods:
            method_refs += [p.type for p in method.params]
            if method.returns is not None:
                method_refs.append(method.returns)
    own = {d.name for d in file.types}
    services = [_service_view(ctx, svc) for svc in file.services]
    method_types = sorted(ctx.uses(method_refs))
    common = {
        "header": header,
        "file": file,
        "module_doc": f"from {file.path.name}",
        "services": services,
    }
    stdlib = []
    if file.structs:
        stdlib.append("import dataclasses")
    if file.enums:
        stdlib.append("import enum")
    if any(_mentions_any(r) for r in refs):
        stdlib.append("from typing import Any")
    foreign = [
        _from_import(f"..{module}.types", names)
        for module, names in ctx.imports_from_other_files(
            ctx.uses(refs), ctx.uses(refs + method_refs)
        )
    ]
    types_src = env.get_template("types.py.j2").render(
        **common,
        imports=_import_block(stdlib, ["from pymprpc import schema"], foreign),
        enums=[_enum_view(e) for e in file.enums],
        structs=[_struct_view(ctx, s) for s in file.structs],
    )
    signatures = [f"{svc['name']}Methods" for svc in services]
    local_imports = _type_imports(ctx, method_types, own, signatures)
    uses_stream = any(m["stream"] for svc in services for m in svc["methods"])
    uses_any_in_methods = any(_mentions_any(r) for r in method_refs)
    server_stdlib = ["import abc"]
    if uses_stream:
        server_stdlib.append("from collections.abc import AsyncIterator")
    if uses_any_in_methods:
        server_stdlib.append("from typing import Any")
    server_src = env.get_template("server.py.j2").render(
        **common,
        imports=_import_block(server_stdlib, ["from pymprpc.server import Server"], local_imports),
    )
    client_stdlib = ["from collections.abc import AsyncIterator, Iterator"] if uses_stream else []
    if uses_any_in_methods:
        client_stdlib.append("from typing import Any")
    client_src = env.get_template("client.py.j2").render(
        **common,
        imports=_import_block(
            client_stdlib,
            [
                "from pymprpc import schema",
                "from pymprpc.client.typed import AsyncTypedClient, TypedClient",
            ],
            local_imports,
        ),
    )
    type_names = sorted({*(d.name for d in file.types), *(f"{d.name}Schema" for d in file.types)})
    clients = [f"{prefix}{svc['name']}Client" for svc in services for prefix in ("Async", "")]
    servers = [
        n for svc in services for n in (f"register_{svc['snake']}", f"{svc['name']}Servicer")
    ]
    exports = [
        ("client", sorted(clients)),
        ("server", sorted(servers)),
        ("types", sorted([*type_names, *signatures])),
    ]
    exports = [(m, names) for m, names in exports if names]
    init_src = env.get_template("init.py.j2").render(
        **common,
        exports=exports,
        all_names=sorted(n for _, names in exports for n in names),
    )
    modules = {"__init__.py": init_src, "types.py": types_src}
    if services:
        modules |= {"server.py": server_src, "client.py": client_src}
    return modules


def _from_import(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return line
    inner = "".join(f"{INDENT}{n},\n" for n in names)
    return f"from {module} import (\n{inner})"


def _tuple(items: list[str], indent: str) -> str:
    """A tuple literal laid out as ruff format would, exploded when it has 2+ items."""
    if not items:
        return "()"
    if len(items) == 1:
        return f"({items[0]},)"
    inner = "".join(f"{indent}{INDENT}{item},\n" for item in items)
    return f"(\n{inner}{indent})"


def _import_block(*sections: list[str]) -> str:
    """`from __future__` then each non-empty section, blank-line separated (isort layout)."""
    blocks = ["from __future__ import annotations", *("\n".join(s) for s in sections if s)]
    return "\n\n".join(blocks)


def _mentions_any(ref: TypeRef) -> bool:
    if ref.kind == "named":
        return ref.name == "any"
    return any(_mentions_any(a) for a in ref.args)


def _type_imports(ctx: FileContext, names: list[str], own: set[str], extra: Any) -> list[str]:
    """module -> names a server/client module imports (".types" or "..other.types")."""
    imports: dict[str, set[str]] = {".types": set(extra)}
    for name in names:
        owner, _ = ctx.scope[name]
        module = ".types" if name in own else f"..{owner.module}.types"
        imports.setdefault(module, set()).add(name)
    # isort order for relative imports: furthest first, then alphabetical.
    ordered = sorted(imports, key=lambda m: (-m.count("."), m))
    return [_from_import(m, sorted(imports[m])) for m in ordered]


def render_program(program: Program) -> dict[Path, str]:
    """Relative output path -> source, for every file of the program."""
    out: dict[Path, str] = {}
    for file in program.files:
        for name, source in render_file(program, file).items():
            out[Path(file.module) / name] = source
    return out
