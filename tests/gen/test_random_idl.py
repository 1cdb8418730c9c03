"""Property: every valid interface file hypothesis can make generates modules that
compile, import, and pass ruff (defaults and project rules), ruff format and mypy
--strict. Names come from a broad alphabet that includes Python builtins, soft keywords
and names the generated code uses itself; docs hold arbitrary text; defaults are random."""

from __future__ import annotations

import builtins
import importlib
import itertools
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import on_sys_path
from mprpcgen.cli import main
from mprpcgen.naming import (
    AMBIGUOUS_NAMES,
    CLIENT_ATTRIBUTES,
    MAX_NAME_LENGTH,
    PYTHON_KEYWORDS,
    service_names,
)

ROOT = Path(__file__).resolve().parents[2]
GENERATOR_NAMES = [
    "sig", "schema", "result", "stream", "args", "reply", "server", "servicer", "abc",
    "dataclasses", "enum", "field", "annotations", "typing", "builtins", "inspect", "wire",
    "path", "name", "version", "match", "case", "type", "list", "dict", "str", "int",
    "float", "bytes", "bool", "any", "none", "map", "methods", "register", "warnings",
]  # fmt: skip
TYPE_NAMES = [
    "Any", "Server", "TypedClient", "AsyncTypedClient", "Iterator", "AsyncIterator",
    "Field", "Enum", "Struct", "Schema", "Optional", "List", "Map", "Signature", "Param",
    "Exception", "Type", "Object", "Dict",
]  # fmt: skip
SNAKE_POOL = sorted(
    {n for n in dir(builtins) if n.islower() and n.isidentifier() and not n.startswith("_")}
    | set(GENERATOR_NAMES)
)

snake = st.one_of(
    st.sampled_from(SNAKE_POOL), st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
).filter(lambda n: n not in PYTHON_KEYWORDS | AMBIGUOUS_NAMES and len(n) <= MAX_NAME_LENGTH)
caps = st.one_of(
    st.sampled_from(TYPE_NAMES), st.from_regex(r"[A-Z][a-zA-Z0-9]{0,12}", fullmatch=True)
).filter(lambda n: n not in AMBIGUOUS_NAMES)
upper = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in AMBIGUOUS_NAMES
)
doc_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=30
)
docs = st.lists(doc_text, max_size=2)
PRIMITIVES = ["bool", "int", "float", "str", "bytes", "any", "none"]


@dataclass
class Decls:
    enums: dict[str, list[str]]
    structs: list[str]


def _type(decls: Decls, depth: int = 0) -> st.SearchStrategy[str]:
    base = st.sampled_from(PRIMITIVES + list(decls.enums) + decls.structs)
    if depth >= 2:
        return base
    inner = st.deferred(lambda: _type(decls, depth + 1))
    return st.one_of(
        base,
        inner.map(lambda t: f"list<{t}>"),
        inner.map(lambda t: f"map<str, {t}>"),
        base.map(lambda t: f"{t}?"),
    )


def _default(decls: Decls, type_: str, param: bool) -> st.SearchStrategy[str]:
    """A default matching `type_` (or nothing)."""
    options: list[st.SearchStrategy[str]] = []
    if type_.endswith("?"):
        options.append(st.just("none"))
        type_ = type_[:-1]
    if type_ == "int":
        options.append(st.integers(-(2**63), 2**64 - 1).map(str))
    elif type_ == "float":
        options.append(st.floats(allow_nan=False, allow_infinity=False).map(repr))
    elif type_ == "str":
        text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
        options.append(text.map(lambda s: json.dumps(s, ensure_ascii=False)))
    elif type_ == "bool":
        options.append(st.sampled_from(["true", "false"]))
    elif type_ in decls.enums:
        options.append(st.sampled_from([f"{type_}.{m}" for m in decls.enums[type_]]))
    elif not param and type_.startswith("list<"):
        options.append(st.just("[]"))
    elif not param and type_.startswith("map<"):
        options.append(st.just("{}"))
    return st.one_of(options) if options else st.nothing()


def _doc(lines: list[str], indent: str) -> str:
    return "".join(f"{indent}/// {line}\n" for line in lines)


@st.composite
def idl_files(draw: st.DrawFn) -> str:
    names = draw(st.lists(caps, min_size=1, max_size=6, unique=True))
    enum_names = names[: draw(st.integers(0, min(2, len(names))))]
    decls = Decls({}, [])
    out = []
    for name in enum_names:
        members = draw(st.lists(upper, min_size=1, max_size=3, unique=True))
        values = draw(st.lists(st.integers(-5, 5), min_size=3, max_size=3, unique=True))
        decls.enums[name] = members
        body = "".join(f"    {m} = {v};\n" for m, v in zip(members, values, strict=False))
        out.append(f"{_doc(draw(docs), '')}enum {name} {{\n{body}}}\n")
    rest = names[len(enum_names) :]
    struct_names = rest[: draw(st.integers(0, len(rest)))]
    for name in struct_names:
        fields = draw(st.lists(snake, max_size=4, unique=True))
        lines = []
        for field in fields:
            type_ = draw(_type(decls))
            default = draw(st.none() | _default(decls, type_, param=False))
            tail = f" = {default}" if default is not None else ""
            lines.append(f"{_doc(draw(docs), '    ')}    {field}: {type_}{tail};\n")
        out.append(f"{_doc(draw(docs), '')}struct {name} {{\n{''.join(lines)}}}\n")
        decls.structs.append(name)  # later structs may use it; no recursion needed
    services = [n for n in rest[len(struct_names) :] if not n.endswith(("Client", "Servicer"))]
    taken = set(names)
    for name in services:
        generated = set(service_names(name))
        if generated & taken:
            continue  # a clash the compiler rightly refuses (tested in the corpus)
        taken |= generated
        methods = draw(st.lists(snake, max_size=4, unique=True))
        lines = []
        for method in methods:
            if method in CLIENT_ATTRIBUTES:
                continue
            kind = draw(st.sampled_from(["def", "async def", "stream", "oneway def"]))
            params = draw(st.lists(snake.filter(lambda n: n != "self"), max_size=3, unique=True))
            rendered = []
            defaults_started = False
            for param in params:
                type_ = draw(_type(decls))
                default = draw(st.none() | _default(decls, type_, param=True))
                if defaults_started and default is None:
                    continue
                defaults_started = defaults_started or default is not None
                rendered.append(f"{param}: {type_}" + (f" = {default}" if default else ""))
            result = "" if kind == "oneway def" else f" -> {draw(_type(decls))}"
            if kind == "stream" and result.endswith("none"):
                result = " -> int"
            deprecated = "@deprecated " if draw(st.booleans()) else ""
            sig = f"{kind} {method}({', '.join(rendered)}){result};"
            lines.append(f"{_doc(draw(docs), '    ')}    {deprecated}{sig}\n")
        out.append(f"{_doc(draw(docs), '')}service {name} {{\n{''.join(lines)}}}\n")
    return "".join(out)


counter = itertools.count()
EXAMPLES = [
    "struct B {\n    abc: bool;\n    /// \n    enum: bool;\n}\n",  # found by hypothesis
    'struct Server {\n    abc: str? = "\\U00010000";\n}\n',
    "service Iterator {\n}\nservice Iterators {\n}\n",
    # found by hypothesis on 3.13 (ruff I001): a type alias first after types.py's imports
    "service S {\n    def m(x: map<str, map<str, bool?>>);\n}\n",
]


def _generate_and_import(source: str, out: Path) -> None:
    """Generate `source` as a package of its own in `out`; compile and import it."""
    name = f"random_idl_{next(counter)}"
    with tempfile.TemporaryDirectory() as tmp:
        idl = Path(tmp) / f"{name}.idl"
        idl.write_text(source, encoding="utf-8")
        assert main([str(idl), "-o", str(out), "--line-length", "88"]) == 0, source
    for module in sorted((out / name).glob("*.py")):
        compile(module.read_text(encoding="utf-8"), str(module), "exec")
    with on_sys_path(out, name):
        for module in ("", ".types", ".client", ".server"):
            if not module or (out / name / f"{module[1:]}.py").exists():
                importlib.import_module(name + module)


@pytest.mark.timeout(300)
def test_random_valid_idl_compiles_imports_and_lints(tmp_path: Path) -> None:
    out = tmp_path / "out"

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(idl_files())
    def one(source: str) -> None:
        _generate_and_import(source, out)

    for source in EXAMPLES:
        _generate_and_import(source, out)
    one()
    # The checkers run once over every example's output.
    ruff = [sys.executable, "-m", "ruff"]
    project = ["--config", str(ROOT / "pyproject.toml"), "--config", "line-length=88"]
    project += ["--extend-ignore", "D"]  # as the project applies its rules to generated code
    defaults = ["--isolated", "--line-length", "88"]
    packages = sorted(p.name for p in out.iterdir() if p.is_dir())
    for args in (
        [*ruff, "check", "--no-cache", *project, "."],
        [*ruff, "check", "--no-cache", *defaults, "."],
        [*ruff, "format", "--check", "--no-cache", *defaults, "."],
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy")]
        + [a for p in packages for a in ("-p", p)],
    ):
        done = subprocess.run(args, cwd=out, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
