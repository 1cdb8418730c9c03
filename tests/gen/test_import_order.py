"""Property: the generator's import blocks are in ruff's order for any names, checked
against ruff itself. Hypothesis makes many random import blocks (IDL-shaped names with
digit runs, leading zeros, underscores and every casing, plus the names the generator
adds itself), each is written to a file of its own, and one ruff run (isort I001 and
RUF022) checks them all; a failure names the blocks ruff would reorder."""

from __future__ import annotations

import keyword
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mprpcgen.layout import (
    Call,
    after_imports,
    all_key,
    from_import,
    import_block,
    isort_key,
    lay_out,
)
from mprpcgen.naming import STDLIB_MODULES

# The generator's own names beside IDL-shaped ones: aliases, Methods classes, clients.
OWN_NAMES = [
    "Type_1", "Type_2", "Type_9", "Type_10", "Type_11", "_SMethods", "_S1Methods",
    "AsyncSClient", "SClient", "SServicer", "register_s", "Any", "Iterator", "AsyncIterator",
]  # fmt: skip
# The IDL's identifiers are ASCII (`CNAME`); digits 0, 1 and 9 and case pairs make
# the interesting comparisons likely.
name = st.one_of(
    st.sampled_from(OWN_NAMES),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
    st.from_regex(r"[aAbB_][aAbB019_]{0,7}", fullmatch=True),
    # Shared stems and digit runs, so that names differ only in digits or case.
    st.tuples(
        st.sampled_from(["a", "A", "Part", "PART", "_p", "_P", "x_"]),
        st.sampled_from(["", "0", "1", "9", "00", "01", "010", "02", "10", "11"]),
        st.sampled_from(["", "a", "B", "_", "0", "_1"]),
    ).map("".join),
).filter(lambda n: not keyword.iskeyword(n) and n != "_")
names = st.lists(name, min_size=1, max_size=8, unique=True)
# Module paths that ruff files as third-party (not stdlib, not a file of the run).
module = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}(\.[a-zA-Z_][a-zA-Z0-9_]{0,4}){0,2}", fullmatch=True),
    # Long enough that one name overflows the narrow width (ruff then wraps it).
    st.from_regex(r"[a-z][a-z0-9_]{6,14}(\.[a-zA-Z_][a-zA-Z0-9_]{3,12}){1,3}", fullmatch=True),
)
module = module.filter(
    lambda m: (
        m.split(".")[0] not in STDLIB_MODULES  # (ruff's list: see naming.STDLIB_MODULES)
        and not m.startswith("case_")
        and not any(keyword.iskeyword(part) for part in m.split("."))
    )
)
WIDTHS = (40, 100)  # one-line and one-name-per-line `from` imports
BODIES = [
    "",
    "X: int = 1\n",
    "Type_1 = dict[str, int]\n",
    "class A:\n    pass\n",
    "@decorator\nclass A:\n    pass\n",
    "def f() -> None:\n    pass\n",
    "async def f() -> None:\n    pass\n",
    "print(1)\n",
]


@st.composite
def import_files(draw: st.DrawFn) -> tuple[int, str]:
    """One module: a section of `import m as _m` / `from m import ...` statements sorted
    by `isort_key`, a relative `from .types import ...`, `__all__`, then a body."""
    width = draw(st.sampled_from(WIDTHS))
    statements = []
    for mod in draw(st.lists(module, max_size=4, unique=True)):
        if draw(st.booleans()):
            statements.append(f"import {mod} as _{mod.replace('.', '_')}")
        else:
            statements.append(from_import(mod, draw(names), width))
    local = draw(names)
    sections = [sorted(statements, key=isort_key), [from_import(".types", local, width)]]
    imports = import_block(*sections)
    exported = sorted(local, key=all_key)
    body = lay_out(Call("__all__ = [", [f'"{n}"' for n in exported], "]"), "", width) + "\n"
    if draw(st.booleans()):
        body = draw(st.sampled_from(BODIES))
    return width, f'"""A module."""\n\n{after_imports(imports, body)}'


@pytest.mark.timeout(120)
def test_import_blocks_are_in_ruffs_order(tmp_path: Path) -> None:
    files: list[tuple[int, str]] = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(import_files())
    def collect(case: tuple[int, str]) -> None:
        files.append(case)

    collect()
    for index, (width, source) in enumerate(files):
        folder = tmp_path / f"width{width}"
        folder.mkdir(exist_ok=True)
        (folder / f"case_{index}.py").write_text(source, encoding="utf-8")
    ruff = [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated"]
    ruff += ["--select", "I,RUF022", "--output-format", "concise", "."]
    for width in WIDTHS:
        folder = tmp_path / f"width{width}"
        done = subprocess.run(
            [*ruff, "--line-length", str(width)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        bad = sorted({line.split(":")[0] for line in done.stdout.splitlines() if ".py:" in line})
        shown = "\n\n".join(f"{b}:\n{(folder / b).read_text()}" for b in bad[:5])
        assert done.returncode == 0, f"ruff reorders {len(bad)} blocks:\n{shown}{done.stderr}"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("a01b", "a1a"),  # a leading zero compares digit by digit: 0 < 1
        ("a010", "a02"),
        ("a0", "a00"),  # then the shorter run first
        ("a9", "a10"),  # otherwise as numbers
        ("a1", "a1a"),
        ("a1", "a_"),  # digits before every other identifier character
        ("Type_9", "Type_10"),
    ],
)
def test_natural_order_examples(left: str, right: str) -> None:
    assert from_import("m", [right, left], 100) == f"from m import {left}, {right}"
