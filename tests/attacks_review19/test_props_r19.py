"""Review 19, property-based: random valid IDL (names that collide with builtins, typing,
stdlib and the generated code's own helpers; nested types; defaults at the edges) generates
code that passes mypy --strict and ruff, imports, and round-trips random values."""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mprpcgen.cli import main
from pymprpc import schema

from .r19_util import (
    importable,
    mypy_strict,
    ruff_defaults,
    ruff_format,
    ruff_project,
    same,
    serving,
    show,
    signatures,
)

SNAKE = [
    "type", "id", "list", "print", "input", "format", "hash", "json", "asyncio", "enum",
    "field", "dataclass", "annotations", "any", "str", "int", "float", "bytes", "bool",
    "dict", "prefix", "method", "typed", "options", "server", "servicer", "client",
    "version", "stream", "match", "case", "sig", "args", "reply", "none", "value", "name",
    "items", "keys", "copy", "object", "typing", "abc", "inspect", "schema", "builtins",
    "result", "wire", "open", "next", "iter", "len", "super", "vars", "getattr",
]  # fmt: skip
# "Any" is in since its bug was fixed (test_bugs_r19.test_user_type_any_in_a_type_alias_*).
CAPS = [
    "Any", "Optional", "List", "Dict", "Callable", "Iterator", "AsyncIterator", "Coro",
    "Signature", "Struct", "Enum", "IntEnum", "Param", "Field", "Dataclass", "Annotations",
    "Type1", "Json", "Asyncio", "TypedClient", "Abc", "Builtins", "Union", "Literal",
]  # fmt: skip
MEMBERS = [
    "TYPE_CHECKING",
    "ANY",
    "NONE",
    "TRUE",
    "FALSE",
    "VERSION",
    "SERVICE",
    "A",
    "MAX",
    "NAME",
    "VALUE",
]
SERVICES = ["Typing", "Svc", "Inspect", "Collections", "Schema", "HTTPApi", "Builtins2"]
PRIMS = ["int", "float", "str", "bool", "bytes", "any"]
EDGE_INT = [0, -1, 2**64 - 1, -(2**63), 2**63 - 1]
EDGE_FLOAT = ["-0.0", "1e308", "5e-324", "-1.7976931348623157e308", "0.5", "3"]
TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\x00\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    max_size=30,
)


def idl_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are a subset of Python's


@dataclass
class Spec:
    enums: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    structs: dict[str, list[tuple[str, str, str | None]]] = field(default_factory=dict)
    methods: list[tuple[str, str, str, list[tuple[str, str, str | None]]]] = field(
        default_factory=list
    )
    service: str = "Svc"
    version: str | None = None
    doc: str = ""


@st.composite
def type_expr(draw: Any, types: list[str], depth: int = 0) -> str:
    options = PRIMS + types
    kind = draw(st.sampled_from(["prim", "prim", "opt", "list", "map"] if depth < 4 else ["prim"]))
    if kind == "prim":
        return str(draw(st.sampled_from(options)))
    inner = draw(type_expr(types, depth + 1))
    if kind == "opt":
        return inner if inner.endswith("?") else inner + "?"
    if kind == "list":
        return f"list<{inner}>"
    return f"map<str, {inner}>"


@st.composite
def default_for(draw: Any, t: str, spec: Spec, param: bool) -> str | None:
    if not draw(st.booleans()):
        return None
    if t.endswith("?"):
        if draw(st.booleans()):
            return "none"
        t = t[:-1]
        if t.endswith("?") or t.startswith(("list", "map")) or t in spec.structs:
            return "none"
    if t == "int":
        return str(draw(st.sampled_from(EDGE_INT)))
    if t == "float":
        return str(draw(st.sampled_from(EDGE_FLOAT)))
    if t == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if t == "str":
        return idl_string(draw(TEXT))
    if t in spec.enums:
        return f"{t}.{draw(st.sampled_from(spec.enums[t]))[0]}"
    if not param and t.startswith("list<"):
        return "[]"
    if not param and t.startswith("map<"):
        return "{}"
    return None


@st.composite
def specs(draw: Any) -> Spec:
    spec = Spec()
    names = draw(st.lists(st.sampled_from(CAPS), min_size=1, max_size=4, unique=True))
    n_enums = draw(st.integers(0, len(names) - 1))
    for name in names[:n_enums]:
        members = draw(st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=4, unique=True))
        values = draw(
            st.lists(
                st.sampled_from([*EDGE_INT, 1, 2, 3, 7]),
                min_size=len(members),
                max_size=len(members),
                unique=True,
            )
        )
        spec.enums[name] = list(zip(members, values, strict=True))
    for name in names[n_enums:]:
        spec.structs[name] = []
    types = list(spec.enums) + list(spec.structs)
    for name in spec.structs:
        fields = draw(st.lists(st.sampled_from(SNAKE), max_size=4, unique=True))
        for f in fields:
            t = draw(type_expr(types))
            if t == name or t in spec.structs:
                t += "?"  # a required field of a struct type could make a cycle
            spec.structs[name].append((f, t, draw(default_for(t, spec, param=False))))
    for m in draw(st.lists(st.sampled_from(SNAKE), min_size=1, max_size=4, unique=True)):
        if m in ("rpc", "connect", "close", "with_options"):
            continue
        kind = draw(st.sampled_from(["def", "async def", "stream", "oneway def"]))
        params: list[tuple[str, str, str | None]] = []
        seen_default = False
        for p in draw(st.lists(st.sampled_from(SNAKE), max_size=3, unique=True)):
            t = draw(type_expr(types))
            d = draw(default_for(t, spec, param=True))
            if seen_default and d is None:
                continue
            seen_default = seen_default or d is not None
            params.append((p, t, d))
        result = "none" if kind == "oneway def" else draw(type_expr(types))
        spec.methods.append((kind, m, result, params))
    spec.service = draw(st.sampled_from(SERVICES))
    # Short versions: a long one is test_bugs_r19.test_long_version_string_lints_and_formats.
    spec.version = draw(
        st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
    )
    spec.doc = draw(TEXT)
    return spec


def render(spec: Spec) -> str:
    lines = []
    for name, members in spec.enums.items():
        lines.append(f"/// {spec.doc}")
        lines.append(f"enum {name} {{ " + " ".join(f"{m} = {v};" for m, v in members) + " }")
    for name, fields in spec.structs.items():
        lines.append(f"/// {spec.doc}")
        body = " ".join(f"{f}: {t}" + (f" = {d}" if d else "") + ";" for f, t, d in fields)
        lines.append(f"struct {name} {{ {body} }}")
    version = f" version {idl_string(spec.version)}" if spec.version is not None else ""
    lines.append(f"/// {spec.doc}")
    lines.append(f"service {spec.service}{version} {{")
    for kind, m, result, params in spec.methods:
        ps = ", ".join(f"{p}: {t}" + (f" = {d}" if d else "") for p, t, d in params)
        arrow = "" if kind == "oneway def" else f" -> {result}"
        lines.append(f"    /// {spec.doc}")
        lines.append(f"    {kind} {m}({ps}){arrow};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def values(s: schema.Schema[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    if isinstance(s, schema.Optional):
        return st.none() if depth >= 3 else st.none() | values(s.inner, depth + 1)
    if isinstance(s, schema.List):
        return st.just([]) if depth >= 3 else st.lists(values(s.item, depth + 1), max_size=2)
    if isinstance(s, schema.Map):
        return (
            st.just({})
            if depth >= 3
            else st.dictionaries(TEXT, values(s.value, depth + 1), max_size=2)
        )
    if isinstance(s, schema.Enum):
        return st.sampled_from(list(s.cls))
    if isinstance(s, schema.Struct):
        fields = {n: values(f, depth + 1) for n, f in s.fields.items()}
        return st.builds(s.cls, **fields)
    return {
        "bool": st.booleans(),
        "int": st.integers(-(2**63), 2**64 - 1),
        "float": st.floats(allow_nan=False, allow_infinity=False),
        "str": st.text(max_size=20),
        "bytes": st.binary(max_size=20),
        "any": st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
            lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=3), c, max_size=2),
            max_leaves=4,
        ),
        "none": st.none(),
    }[s.name]


class _Echo:
    """Servicer body: every method returns what it got as its first argument (or a value
    drawn for the result), recording the arguments."""


BATCH = 30


@pytest.mark.timeout(240)
def test_random_idl_generates_typechecks_and_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    counter = iter(range(10_000))
    sources: dict[str, str] = {}

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec=specs(), data=st.data())
    def one(spec: Spec, data: st.DataObject) -> None:
        name = f"rand{next(counter)}"
        text = render(spec)
        (tmp_path / f"{name}.idl").write_text(text, encoding="utf-8")
        sources[name] = text
        assert main([str(tmp_path / f"{name}.idl"), "-o", str(out)]) == 0, text
        with importable(out):
            package = importlib.import_module(name)
            types = importlib.import_module(f"{name}.types")
            client_mod = importlib.import_module(f"{name}.client")
            sigs = signatures(getattr(types, f"_{spec.service}Methods"))
            servicer_cls = getattr(package, f"{spec.service}Servicer")
            register = next(
                getattr(package, n) for n in package.__all__ if n.startswith("register_")
            )
            calls = {m: [data.draw(values(p.schema)) for p in s.params] for m, s in sigs.items()}
            results = {m: data.draw(values(s.result)) for m, s in sigs.items()}
            got: dict[str, list[Any]] = {}
            body: dict[str, Any] = {}
            for m, s in sigs.items():
                body[m] = _impl(m, s, servicer_cls, results[m], got)
            servicer = type("Impl", (servicer_cls,), body)()
            with serving((register, servicer)) as addr:
                with getattr(client_mod, f"{spec.service}Client")(addr) as client:
                    for m, s in sigs.items():
                        answer = getattr(client, m)(*calls[m])
                        if s.stream:
                            answer = list(answer)
                            assert same(answer, [results[m]]), (text, m, answer)
                        else:
                            assert same(answer, results[m]), (text, m, answer, results[m])
                        _wait(got, m)
                        assert same(got.pop(m), calls[m]), (text, m)
                asyncio.run(
                    asyncio.wait_for(_async_calls(client_mod, spec, addr, sigs, calls, results), 30)
                )

    one()
    assert sources
    for check in (
        mypy_strict(out, tmp_path / "cache"),
        ruff_project(out),
        ruff_defaults(out),
        ruff_format(out),
    ):
        named = [t for n, t in sources.items() if f"{n}/" in check.stdout + check.stderr]
        assert check.returncode == 0, show(check) + "\n" + "\n".join(named)


def _wait(got: dict[str, Any], m: str) -> None:
    import time

    end = time.monotonic() + 10
    while m not in got:
        assert time.monotonic() < end
        time.sleep(0.005)


async def _async_calls(
    client_mod: Any, spec: Spec, addr: str, sigs: Any, calls: Any, results: Any
) -> None:
    async with getattr(client_mod, f"Async{spec.service}Client")(addr) as client:
        for m, s in sigs.items():
            if s.stream:
                answer = [x async for x in getattr(client, m)(*calls[m])]
                assert same(answer, [results[m]]), m
            else:
                answer = await getattr(client, m)(*calls[m])
                assert same(answer, results[m]), m


def _impl(m: str, s: schema.Signature[Any], cls: type, result: Any, got: dict[str, Any]) -> Any:
    import inspect

    abstract = getattr(cls, m)
    names = [p.name for p in s.params]

    def record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        values = list(args) + [kwargs[n] for n in names[len(args) :]]
        got[m] = values

    if inspect.isasyncgenfunction(abstract):

        async def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            record(args, kwargs)
            yield result

        return stream
    if inspect.iscoroutinefunction(abstract):

        async def coroutine(self: Any, *args: Any, **kwargs: Any) -> Any:
            record(args, kwargs)
            return result

        return coroutine

    def function(self: Any, *args: Any, **kwargs: Any) -> Any:
        record(args, kwargs)
        return result

    return function
