"""Helpers for review 19: run mprpcgen, lint/type-check its output, serve servicers."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pymprpc import schema
from pymprpc.server import Server
from pymprpc.testing import RunningServer

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
VALID = sorted((CORPUS / "valid").rglob("*.idl"))
VENV_BIN = Path(sys.executable).parent
MPRPCGEN = [sys.executable, "-m", "mprpcgen"]


def run(
    args: list[str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def generate(files: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([*MPRPCGEN, *map(str, files), "-o", str(out), *extra])


def packages(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if (p / "__init__.py").is_file())


def mypy_strict(out: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    pkgs = [a for p in packages(out) for a in ("-p", p)]
    args = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *pkgs]
    return run(args, cwd=out, timeout=240)


def ruff_project(out: Path, length: int = 100) -> subprocess.CompletedProcess[str]:
    config = ["--config", str(ROOT / "pyproject.toml"), "--config", f"line-length={length}"]
    config += ["--config", "lint.extend-ignore=['D']"]
    return run([sys.executable, "-m", "ruff", "check", "--no-cache", *config, "."], cwd=out)


def ruff_defaults(out: Path, length: int = 100) -> subprocess.CompletedProcess[str]:
    args = ["check", "--no-cache", "--isolated", "--line-length", str(length), "."]
    return run([sys.executable, "-m", "ruff", *args], cwd=out)


def ruff_format(out: Path, length: int = 100) -> subprocess.CompletedProcess[str]:
    args = ["format", "--check", "--no-cache", "--isolated", "--line-length", str(length), "."]
    return run([sys.executable, "-m", "ruff", *args], cwd=out)


def show(done: subprocess.CompletedProcess[str]) -> str:
    return f"rc={done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"


@contextlib.contextmanager
def importable(out: Path) -> Iterator[Path]:
    names = set(packages(out))
    sys.path.insert(0, str(out))
    try:
        yield out
    finally:
        sys.path.remove(str(out))
        for key in [k for k in sys.modules if k.split(".")[0] in names]:
            del sys.modules[key]


@contextlib.contextmanager
def serving(
    *registrations: tuple[Callable[..., None], Any], prefixed: bool = False
) -> Iterator[str]:
    """Serve servicers (register function, servicer) on 127.0.0.1; yields the address.
    `prefixed`: each under the prefix "<ServicerClass>." (see `prefix_of`)."""
    server = Server(("127.0.0.1", 0))
    for register, servicer in registrations:
        if prefixed:
            register(server, servicer, prefix=prefix_of(type(servicer)))
        else:
            register(server, servicer)
    running = RunningServer(server)
    running.start()
    try:
        yield f"tcp://127.0.0.1:{server.port}"
    finally:
        running.stop()


def prefix_of(servicer: type) -> str:
    for base in servicer.__mro__[1:]:
        if base.__name__.endswith("Servicer"):
            return base.__name__.removesuffix("Servicer") + "."
    raise AssertionError(servicer)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0, int from float, bool from int, and compares
    dataclasses field by field (types included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    slots = getattr(type(a), "__dataclass_fields__", None)
    if slots is not None:
        return all(same(getattr(a, f), getattr(b, f)) for f in slots)
    return bool(a == b)


# -- sample values of a schema, at the edges ------------------------------------------------

EDGE_INTS = [2**64 - 1, -(2**63), 0, 2**63 - 1, -1]
EDGE_FLOATS = [-0.0, 1e308, 5e-324, -1.7976931348623157e308, 0.1]
EDGE_STRS = ['héllo "q" \\ ☃\n', "", "שלום 🎉\x00", "{} %s {0}", "\N{BULLET}\t"]


def sample(s: schema.Schema[Any], depth: int = 0, k: int = 0) -> Any:
    """A value of the declared type, bounded in depth for recursive structs; `k` varies it."""
    if isinstance(s, schema.Optional):
        return None if depth > 1 or k % 3 == 2 else sample(s.inner, depth + 1, k)
    if isinstance(s, schema.List):
        if depth > 1:
            return []
        return [sample(s.item, depth + 1, k + i) for i in range(2)]
    if isinstance(s, schema.Map):
        return {} if depth > 1 else {'ключ "k" 🔑': sample(s.value, depth + 1, k)}
    if isinstance(s, schema.Enum):
        members = list(s.cls)
        return members[k % len(members)]
    if isinstance(s, schema.Struct):
        return s.cls(**{n: sample(f, depth + 1, k + 1) for n, f in s.fields.items()})
    name = s.name
    if name == "bool":
        return k % 2 == 0
    if name == "int":
        return EDGE_INTS[k % len(EDGE_INTS)]
    if name == "float":
        return EDGE_FLOATS[k % len(EDGE_FLOATS)]
    if name == "str":
        return EDGE_STRS[k % len(EDGE_STRS)]
    if name == "bytes":
        return bytes(range(256))[k:]
    if name == "any":
        return {"k": [1, "x", None, 2.5, 2**64 - 1]}
    if name == "none":
        return None
    raise AssertionError(f"unknown schema {s!r}")


def signatures(methods: type) -> dict[str, schema.Signature[Any]]:
    return {n: s for n, s in vars(methods).items() if isinstance(s, schema.Signature)}


def services(package: ModuleType) -> list[tuple[str, type, Callable[..., None], type]]:
    """(service, servicer class, register function, methods class) of a generated package."""
    types = importlib.import_module(f"{package.__name__}.types")
    found = []
    for name in package.__all__:
        if name.endswith("Servicer"):
            service = name.removesuffix("Servicer")
            servicer = getattr(package, name)
            register = next(
                getattr(package, r)
                for r in package.__all__
                if r.startswith("register_")
                and inspect.signature(getattr(package, r)).parameters["servicer"].annotation
                in (name, servicer)
            )
            found.append((service, servicer, register, getattr(types, f"_{service}Methods")))
    return found
