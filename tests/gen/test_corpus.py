"""The generator tested as a compiler is: a corpus of interface files written as users
write them (tests/gen/corpus/).

valid/: every file generates code that compiles, imports, passes ruff (ruff's defaults and
this project's rules) and `ruff format --check` at line lengths 88 and 100, and
`mypy --strict`, and whose clients round-trip values with a real server on 127.0.0.1.
The checkers run once over the whole corpus output, not per file.

invalid/: every file is refused with exit status 1 and the positioned error its first line
announces (`// error: LINE:COL: text`, or `// error: FILE:LINE:COL: text` for an error
in an imported file), no traceback and no output.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import ServerThread, arun, on_sys_path
from mprpcgen.cli import main
from mprpcgen.naming import snake_case
from pymprpc import schema
from pymprpc.server import Server

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
VALID = sorted((CORPUS / "valid").rglob("*.idl"))
INVALID = sorted((CORPUS / "invalid").glob("*.idl"))
LINE_LENGTHS = (88, 100)


def test_the_corpus_is_broad() -> None:
    assert len(VALID) >= 30
    assert len(INVALID) >= 60


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Line length -> a directory with the whole valid corpus generated in one run."""
    outs = {}
    for length in LINE_LENGTHS:
        out = tmp_path_factory.mktemp(f"corpus{length}")
        assert main([*map(str, VALID), "-o", str(out), "--line-length", str(length)]) == 0
        outs[length] = out
    return outs


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


RUFF = [sys.executable, "-m", "ruff"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("length", LINE_LENGTHS)
def test_ruff_with_project_rules(generated: dict[int, Path], length: int) -> None:
    # As the project applies them to generated code: pydocstyle (D) is off there.
    config = ["--config", str(ROOT / "pyproject.toml"), "--config", f"line-length={length}"]
    config += ["--config", "lint.extend-ignore=['D']"]
    _run([*RUFF, "check", "--no-cache", *config, "."], generated[length])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("length", LINE_LENGTHS)
def test_ruff_with_its_defaults(generated: dict[int, Path], length: int) -> None:
    isolated = ["--isolated", "--line-length", str(length)]
    _run([*RUFF, "check", "--no-cache", *isolated, "."], generated[length])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("length", LINE_LENGTHS)
def test_ruff_format(generated: dict[int, Path], length: int) -> None:
    isolated = ["--isolated", "--line-length", str(length)]
    _run([*RUFF, "format", "--check", "--no-cache", *isolated, "."], generated[length])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("length", LINE_LENGTHS)
def test_mypy_strict(generated: dict[int, Path], length: int, tmp_path: Path) -> None:
    out = generated[length]
    packages = sorted(p.name for p in out.iterdir() if (p / "__init__.py").is_file())
    cache = ["--cache-dir", str(tmp_path / "mypy")]
    args = [sys.executable, "-m", "mypy", "--strict", *cache]
    _run([*args, *(a for p in packages for a in ("-p", p))], out)


# -- round trips ---------------------------------------------------------------------------


def sample(s: schema.Schema[Any], depth: int = 0) -> Any:
    """A value of every declared type, bounded in depth for recursive structs."""
    if isinstance(s, schema.Optional):
        return None if depth > 1 else sample(s.inner, depth + 1)
    if isinstance(s, schema.List):
        return [] if depth > 1 else [sample(s.item, depth + 1), sample(s.item, depth + 1)]
    if isinstance(s, schema.Map):
        return {} if depth > 1 else {'ключ "k"': sample(s.value, depth + 1)}
    if isinstance(s, schema.Enum):
        return list(s.cls)[-1]
    if isinstance(s, schema.Struct):
        return s.cls(**{name: sample(f, depth + 1) for name, f in s.fields.items()})
    return {
        "bool": True,
        "int": -(2**62) + 7,
        "float": -1.25,
        "str": 'héllo "q" \\ ☃\n',
        "bytes": b"\x00\xff",
        "any": {"k": [1, "x", None, 2.5]},
        "none": None,
    }[s.name]


@pytest.fixture(scope="module")
def importable(generated: dict[int, Path]) -> Iterator[Path]:
    out = generated[100]
    with on_sys_path(out, *(p.name for p in out.iterdir())):
        yield out


def test_every_package_compiles_and_imports(importable: Path) -> None:
    for package in sorted(p.name for p in importable.iterdir() if p.is_dir()):
        for module in ("", ".types", ".server", ".client"):
            if module and not (importable / package / f"{module[1:]}.py").is_file():
                continue
            importlib.import_module(package + module)


def _implementation(servicer: type, methods: type) -> Any:
    """A servicer whose every method checks its arguments and answers a sample result."""
    body: dict[str, Callable[..., Any]] = {}
    for name, sig in vars(methods).items():
        if not isinstance(sig, schema.Signature):
            continue
        body[name] = _method(getattr(servicer, name), sig)
    return type(f"Sample{servicer.__name__}", (servicer,), body)()


def _method(abstract: Any, sig: schema.Signature[Any]) -> Callable[..., Any]:
    names = [p.name for p in sig.params]
    expected = {p.name: sample(p.schema) for p in sig.params}
    result = sample(sig.result)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        got = dict(zip(names, args, strict=False)) | kwargs
        assert got == expected, (sig.name, got, expected)

    if inspect.isasyncgenfunction(abstract):

        async def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            yield result
            yield result

        return stream
    if inspect.iscoroutinefunction(abstract):

        async def coroutine(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return result

        return coroutine

    def function(self: Any, *args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return result

    return function


def _services(package: ModuleType, types: ModuleType) -> list[tuple[str, type, type]]:
    found = []
    for name in package.__all__:
        if name.endswith("Servicer"):
            service = name.removesuffix("Servicer")
            found.append((service, getattr(package, name), getattr(types, f"_{service}Methods")))
    return found


SERVING = [p.stem for p in VALID if re.search(r"^\s*service\s+\w+", p.read_text(), re.M)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("package", SERVING)
def test_round_trip_over_both_clients(importable: Path, package: str) -> None:
    module = importlib.import_module(package)
    types = importlib.import_module(f"{package}.types")
    server_module = importlib.import_module(f"{package}.server")
    services = _services(module, types)
    assert services
    for service, servicer, methods in services:
        register = getattr(server_module, f"register_{snake_case(service)}")
        _round_trip(module, service, servicer, methods, register)


def _round_trip(
    module: ModuleType, service: str, servicer: type, methods: type, register: Any
) -> None:
    server = Server(("127.0.0.1", 0))
    register(server, _implementation(servicer, methods))
    signatures = {n: s for n, s in vars(methods).items() if isinstance(s, schema.Signature)}
    with ServerThread(server) as thread, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated methods warn; tested elsewhere
        with getattr(module, f"{service}Client")(thread.url) as client:
            for name, sig in signatures.items():
                _check_sync(getattr(client, name), sig)

        async def run_async() -> None:
            async with getattr(module, f"Async{service}Client")(thread.url) as client:
                for name, sig in signatures.items():
                    await _check_async(getattr(client, name), sig)

        arun(run_async())


def _check_sync(call: Callable[..., Any], sig: schema.Signature[Any]) -> None:
    args = [sample(p.schema) for p in sig.params]
    got = call(*args)
    if isinstance(got, Iterator):
        assert list(got) == [sample(sig.result)] * 2, sig.name
    else:
        assert got == sample(sig.result), sig.name


async def _check_async(call: Callable[..., Any], sig: schema.Signature[Any]) -> None:
    args = [sample(p.schema) for p in sig.params]
    got = call(*args)
    if inspect.isawaitable(got):
        assert await got == sample(sig.result), sig.name
    else:  # a stream: iterated directly, no await
        items = [item async for item in got]
        assert items == [sample(sig.result)] * 2, sig.name


# -- invalid files -------------------------------------------------------------------------


def _expectation(path: Path) -> tuple[Path, str, str]:
    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    assert first.startswith("// error: "), f"{path.name}: first line must announce the error"
    spec = first.removeprefix("// error: ")
    where, text = spec.split(" ", 1)
    parts = where.rstrip(":").split(":")
    file = path if len(parts) == 2 else path.parent / parts[0]
    return file, ":".join(parts[-2:]), text


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_file_is_refused_with_a_positioned_error(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file, where, text = _expectation(path)
    out = tmp_path / "out"
    assert main([str(path), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{file}:{where}: error: " in captured.err, captured.err
    assert text in captured.err, captured.err
    assert not out.exists()
    assert captured.out == ""
