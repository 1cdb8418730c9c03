"""Review 25, property-based: random valid interface files (names from a pool of builtins,
keywords-adjacent, typing and generated-code names; random type trees; random defaults,
strings with escapes) generate, pass ruff, import, and round-trip every method through a
real server; a bounded sample of them passes mypy --strict, in one batch."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .r25_util import generate, importable, mypy_strict, round_trip, ruff_defaults, show

TYPE_NAMES = [
    "Any", "Optional", "List", "Iterator", "AsyncIterator", "Schema", "Server", "Coro",
    "TypeAlias", "Enum", "Struct", "Param", "Signature", "Field", "Type", "Str", "Int",
    "Dict", "Callable", "Self", "Abc", "Dataclass", "Builtins", "Typing", "Client",
    "Servicer", "Money", "Point", "Node", "Event",
]  # fmt: skip
LOWER_NAMES = [
    "type", "match", "case", "list", "dict", "id", "print", "str", "int", "float", "bool",
    "bytes", "any", "object", "cls", "args", "method", "sig", "typed", "prefix", "server",
    "servicer", "field", "value", "name", "version", "stream", "oneway", "schema", "wire",
    "default", "options", "reply", "call", "notify", "super", "iter", "next", "len", "input",
    "exec", "abc", "enum", "typing", "dataclasses", "builtins", "inspect", "none", "true",
    "false", "struct", "service", "register", "services", "kwargs", "timeout",
]  # fmt: skip
MEMBER_NAMES = ["NONE", "TRUE", "FALSE", "RED", "A", "NAME", "VALUE", "MRO", "ANY", "LIST"]
SCALARS = ["bool", "int", "float", "str", "bytes", "any"]

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def idl_string(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code in (0x85, 0x2028, 0x2029) or (0xD800 <= code <= 0xDFFF):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def idl_files(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=6, unique=True))
    n_enums = draw(st.integers(0, min(2, len(names) - 1)))
    enums = names[:n_enums]
    structs = names[n_enums:]
    members: dict[str, list[str]] = {}
    lines: list[str] = []

    def type_tree(depth: int, struct_index: int | None, required: bool) -> tuple[str, str]:
        """(IDL type, its kind for defaults)."""
        choice = draw(st.integers(0, 9 if depth < 3 else 5))
        if choice <= 3:
            return (s := draw(st.sampled_from(SCALARS))), s
        if choice == 4 and enums:
            return (e := draw(st.sampled_from(enums))), "enum:" + e
        if choice == 5 and structs:
            pick = draw(st.sampled_from(structs))
            index = structs.index(pick)
            # A struct may hold itself or a later one only where none is possible.
            if struct_index is not None and index >= struct_index and required:
                return f"{pick}?", "optional"
            return pick, "struct"
        if choice in (6, 7):
            inner, _ = type_tree(depth + 1, struct_index, False)
            return f"list<{inner}>", "list"
        if choice == 8:
            inner, _ = type_tree(depth + 1, struct_index, False)
            return f"map<str, {inner}>", "map"
        inner, kind = type_tree(depth + 1, struct_index, required)
        if inner.endswith("?"):
            return inner, kind
        return f"{inner}?", "optional:" + kind

    def default(kind: str, field: bool) -> str | None:
        if not draw(st.booleans()):
            return None
        base = kind.removeprefix("optional:")
        if kind.startswith("optional") and draw(st.booleans()):
            return "none"
        if base == "bool":
            return draw(st.sampled_from(["true", "false"]))
        if base == "int":
            return str(draw(st.integers(-(2**63), 2**64 - 1)))
        if base == "float":
            value = draw(
                st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
            )
            return repr(value)
        if base == "str":
            return idl_string(draw(TEXT))
        if base == "any":
            return draw(st.sampled_from(["none", "1", "-2.5", '"x\\ty"', "true"]))
        if base.startswith("enum:"):
            enum = base.removeprefix("enum:")
            return f"{enum}.{draw(st.sampled_from(members[enum]))}"
        if base == "list" and field:
            return "[]"
        if base == "map" and field:
            return "{}"
        return None

    for enum in enums:
        mem = draw(st.lists(st.sampled_from(MEMBER_NAMES), min_size=1, max_size=4, unique=True))
        values = draw(
            st.lists(
                st.integers(-(2**63), 2**64 - 1), min_size=len(mem), max_size=len(mem), unique=True
            )
        )
        members[enum] = mem
        lines.append(f"/// Enum {enum} with {idl_string(draw(TEXT))[1:-1]} in its doc.")
        lines.append(f"enum {enum} {{")
        lines += [f"    {m} = {v};" for m, v in zip(mem, values, strict=True)]
        lines.append("}")
    for index, struct in enumerate(structs):
        fields = draw(st.lists(st.sampled_from(LOWER_NAMES), max_size=5, unique=True))
        lines.append(f"struct {struct} {{")
        for f in fields:
            typ, kind = type_tree(0, index, True)
            d = default(kind, True)
            lines.append(f"    {f}: {typ}" + (f" = {d};" if d else ";"))
        lines.append("}")
    services = draw(
        st.lists(
            st.sampled_from(["Svc", "Api", "Ledger", "Fleet"]), min_size=1, max_size=2, unique=True
        )
    )
    for service in services:
        lines.append(f"/// {idl_string(draw(TEXT))[1:-1]}")
        lines.append(f"service {service} version {idl_string(draw(TEXT))} {{")
        methods = draw(
            st.lists(
                st.sampled_from([n for n in LOWER_NAMES if n not in ("self",)]),
                min_size=1,
                max_size=4,
                unique=True,
            )
        )
        for m in methods:
            kind = draw(st.sampled_from(["def", "async def", "stream", "oneway def"]))
            params = draw(st.lists(st.sampled_from(LOWER_NAMES), max_size=4, unique=True))
            rendered = []
            seen_default = False
            for p in params:
                typ, tkind = type_tree(0, None, True)
                d = default(tkind, False)
                if d is None and seen_default:
                    d = "none" if typ.endswith("?") else None
                    if d is None:
                        typ, d = f"{typ}?", "none"
                seen_default = seen_default or d is not None
                rendered.append(f"{p}: {typ}" + (f" = {d}" if d else ""))
            result = ""
            if kind == "stream" or (kind != "oneway def" and draw(st.booleans())):
                result = " -> " + type_tree(0, None, True)[0]
            doc = f"    /// {idl_string(draw(TEXT))[1:-1]}"
            lines += [doc, f"    {kind} {m}({', '.join(rendered)}){result};"]
        lines.append("}")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(170)
def test_random_idl_generates_lints_imports_and_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "idl"
    src.mkdir()
    made: list[tuple[str, str]] = []

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(idl_files())
    def check(text: str) -> None:
        name = f"rand{len(made)}"
        path = src / f"{name}.idl"
        path.write_text(text, encoding="utf-8")
        done = generate([path], out)
        made.append((name, text))
        assert done.returncode == 0, f"{text}\n{show(done)}"
        linted = ruff_defaults(out, name)
        assert linted.returncode == 0, f"{text}\n{show(linted)}"
        with importable(out):
            package: Any = importlib.import_module(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                problems = round_trip(package, seed=len(made))
        assert not problems, text + "\n" + "\n".join(problems)

    check()
    # mypy on a bounded sample, in one batch: keep the first 10 packages.
    for extra in sorted(p for p in out.iterdir() if p.is_dir())[10:]:
        import shutil

        shutil.rmtree(extra)
    checked = mypy_strict(out, tmp_path / "cache")
    assert checked.returncode == 0, show(checked) + "\n".join(t for _, t in made[:10])
