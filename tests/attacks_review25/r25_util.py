"""Review 25's kit: run mprpcgen, lint and type-check its output, serve a generated
service with a servicer built from its declared signatures, and call it with both clients."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import math
import subprocess
import sys
import threading
import time
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
PY = sys.executable
ENV_PATH = f"{ROOT / 'runtime'}:{ROOT}"


def run(
    args: list[str], cwd: Path | None = None, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = ENV_PATH
    env["MYPYPATH"] = str(ROOT / "runtime")
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def generate(files: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([PY, "-m", "mprpcgen", *map(str, files), "-o", str(out), *extra], cwd=ROOT)


def gen_text(
    tmp: Path, name: str, text: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Write `text` as tmp/idl/<name>.idl and generate it into tmp/out."""
    src = tmp / "idl"
    src.mkdir(exist_ok=True)
    path = src / f"{name}.idl"
    path.write_text(text, encoding="utf-8")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    return generate([path], out, *extra), out


def packages(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if (p / "__init__.py").is_file())


def mypy_strict(out: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    pkgs = [a for p in packages(out) for a in ("-p", p)]
    config = ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)]
    return run([PY, "-m", "mypy", "--strict", *config, *pkgs], cwd=out, timeout=170)


def ruff_defaults(out: Path, target: str = ".") -> subprocess.CompletedProcess[str]:
    args = ["check", "--no-cache", "--isolated", "--line-length", "100", target]
    return run([PY, "-m", "ruff", *args], cwd=out)


def ruff_project(out: Path) -> subprocess.CompletedProcess[str]:
    config = ["--config", str(ROOT / "pyproject.toml"), "--config", "lint.extend-ignore=['D']"]
    return run([PY, "-m", "ruff", "check", "--no-cache", *config, "."], cwd=out)


def show(done: subprocess.CompletedProcess[str]) -> str:
    return f"rc={done.returncode}\n{done.stdout[-5000:]}\n{done.stderr[-3000:]}"


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
        importlib.invalidate_caches()


@contextlib.contextmanager
def serving(*registrations: tuple[Callable[..., None], Any]) -> Iterator[str]:
    server = Server(("127.0.0.1", 0))
    for register, servicer in registrations:
        register(server, servicer)
    running = RunningServer(server)
    running.start()
    try:
        yield f"tcp://127.0.0.1:{server.port}"
    finally:
        running.stop()


def same(a: Any, b: Any) -> bool:
    """Equality telling int from float from bool, -0.0 from 0.0, enum from int, and
    comparing dataclasses field by field with their types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    fields = getattr(type(a), "__dataclass_fields__", None)
    if fields is not None:
        return all(same(getattr(a, f), getattr(b, f)) for f in fields)
    return bool(a == b)


INTS = [2**64 - 1, -(2**63), 0, 7, -1]
FLOATS = [-0.0, 1e308, 5e-324, 2.5, -1.5]
STRS = ["q\"'\\ {x} %s", "", "🎉\x00\u2028", "é漢", '"""']


def sample(s: schema.Schema[Any], k: int = 0, depth: int = 0) -> Any:
    """A value of schema `s` (bounded for recursive structs); `k` varies it."""
    if isinstance(s, schema.Optional):
        return None if depth > 2 or k % 3 == 1 else sample(s.inner, k, depth + 1)
    if isinstance(s, schema.List):
        return [] if depth > 2 else [sample(s.item, k + i, depth + 1) for i in range(2)]
    if isinstance(s, schema.Map):
        return {} if depth > 2 else {f"k{k}\u00e9": sample(s.value, k + 1, depth + 1)}
    if isinstance(s, schema.Enum):
        members = list(s.cls)
        return members[k % len(members)]
    if isinstance(s, schema.Struct):
        return s.cls(
            **{n: sample(f, k + i, depth + 1) for i, (n, f) in enumerate(s.fields.items())}
        )
    name = s.name
    if name == "bool":
        return k % 2 == 0
    if name == "int":
        return INTS[k % len(INTS)]
    if name == "float":
        return FLOATS[k % len(FLOATS)]
    if name == "str":
        return STRS[k % len(STRS)]
    if name == "bytes":
        return bytes(range(k % 5, 40))
    if name == "any":
        return {"a": [1, "x", None, 2.5, True]}
    if name == "none":
        return None
    raise AssertionError(f"unknown schema {s!r}")


def signatures(methods: type) -> dict[str, schema.Signature[Any]]:
    return {n: s for n, s in vars(methods).items() if isinstance(s, schema.Signature)}


def services(package: ModuleType) -> list[tuple[str, type, Callable[..., None], Any, Any, type]]:
    """(service, servicer class, register, client class, async client class, methods class)."""
    types = importlib.import_module(f"{package.__name__}.types")
    found = []
    for name in package.__all__:
        if name.endswith("Servicer") and name not in ("Servicer",):
            service = name.removesuffix("Servicer")
            methods = getattr(types, f"_{service}Methods", None)
            if methods is None:
                continue
            found.append(
                (
                    service,
                    getattr(package, name),
                    getattr(
                        package,
                        next(
                            r
                            for r in package.__all__
                            if r.startswith("register_")
                            and r.replace("_", "").lower() == f"register{service.lower()}"
                        ),
                    ),
                    getattr(package, f"{service}Client"),
                    getattr(package, f"Async{service}Client"),
                    methods,
                )
            )
    return found


def build_servicer(base: type, methods: type, seed: int) -> Any:
    """A concrete subclass of `base` whose methods record their arguments and answer a
    sample of their declared result (streams: two items), keeping `base`'s signatures."""
    sigs = signatures(methods)
    ns: dict[str, Any] = {"_sample": sample, "_sigs": sigs, "_seed": seed, "_time": time}
    lines = ["class Impl(_base):"]
    lines.append(
        "    def __init__(self):\n        self.calls = {}\n        self.seen = _threading.Event()"
    )
    for name, sig in sigs.items():
        abstract = getattr(base, name)
        params = inspect.signature(abstract)
        header = str(params).split(" -> ")[0]
        header = header.replace("'", "")  # string annotations -> drop
        args = ", ".join(p for p in params.parameters if p != "self")
        # Build a parameter list without annotations (defaults kept by repr).
        plist = ["self"]
        for p in list(params.parameters.values())[1:]:
            plist.append(
                p.name
                if p.default is inspect.Parameter.empty
                else f"{p.name}=_defaults[{name!r}][{p.name!r}]"
            )
        rec = (
            f"self.calls[{name!r}] = {{"
            + ", ".join(f"{a!r}: {a}" for a in params.parameters if a != "self")
            + "}"
        )
        if sig.stream:
            lines.append(f"    async def {name}({', '.join(plist)}):")
            lines.append(f"        {rec}")
            lines.append(
                "        for _i in range(2):\n"
                f"            yield _sample(_sigs[{name!r}].result, _seed + _i)"
            )
        else:
            kw = "async def" if inspect.iscoroutinefunction(abstract) else "def"
            lines.append(f"    {kw} {name}({', '.join(plist)}):")
            lines.append(f"        {rec}")
            lines.append("        self.seen.set()")
            lines.append(f"        return _sample(_sigs[{name!r}].result, _seed)")
        del args, header
    ns["_base"] = base
    ns["_threading"] = threading
    ns["_defaults"] = {
        n: {p.name: p.default for p in inspect.signature(getattr(base, n)).parameters.values()}
        for n in sigs
    }
    exec("\n".join(lines), ns)
    return ns["Impl"]()


def round_trip(package: ModuleType, seed: int = 0) -> list[str]:
    """Call every method of every service of `package` with both clients; problems found."""
    problems: list[str] = []
    for service, base, register, client_cls, async_cls, methods in services(package):
        impl = build_servicer(base, methods, seed)
        sigs = signatures(methods)
        with serving((register, impl)) as addr:
            with client_cls(addr) as client:
                for name, sig in sigs.items():
                    args = [sample(p.schema, seed + i) for i, p in enumerate(sig.params)]
                    got = getattr(client, name)(*args)
                    problems += _check(service, name, sig, impl, args, got, seed, "sync")

            problems += asyncio.run(
                asyncio.wait_for(_async_calls(service, async_cls, addr, sigs, impl, seed), 60)
            )
    return problems


async def _async_calls(
    service: str, async_cls: Any, addr: str, sigs: dict[str, Any], impl: Any, seed: int
) -> list[str]:
    found: list[str] = []
    async with async_cls(addr) as aclient:
        for name, sig in sigs.items():
            args = [sample(p.schema, seed + 1 + i) for i, p in enumerate(sig.params)]
            call = getattr(aclient, name)(*args)
            got = [x async for x in call] if sig.stream else await call
            found += _check(service, name, sig, impl, args, got, seed, "async")
    return found


def _check(
    service: str,
    name: str,
    sig: schema.Signature[Any],
    impl: Any,
    args: list[Any],
    got: Any,
    seed: int,
    how: str,
) -> list[str]:
    where = f"{service}.{name} ({how})"
    if sig.stream:
        got = list(got)
        expected: Any = [sample(sig.result, seed + i) for i in range(2)]
    elif isinstance(sig.result, schema._None) and got is None:
        expected = None
    else:
        expected = sample(sig.result, seed)
    problems = []
    deadline = time.monotonic() + 5
    while name not in impl.calls and time.monotonic() < deadline:  # oneway: no reply
        time.sleep(0.01)
    received = impl.calls.pop(name, None)
    sent = {p.name: a for p, a in zip(sig.params, args, strict=True)}
    if received is None or not all(same(sent[k], received[k]) for k in sent):
        problems.append(f"{where}: servicer got {received!r}, sent {sent!r}")
    if not same(expected, got):
        problems.append(f"{where}: got {got!r}, expected {expected!r}")
    return problems
