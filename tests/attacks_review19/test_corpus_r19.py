"""Review 19: a corpus of realistic IDL files generates code that type-checks, lints,
imports and round-trips edge values through a served servicer with both clients."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pymprpc import schema

from .r19_util import (
    VALID,
    generate,
    importable,
    mypy_strict,
    packages,
    ruff_defaults,
    ruff_format,
    ruff_project,
    same,
    sample,
    services,
    serving,
    show,
    signatures,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("r19corpus")
    done = generate(VALID, directory)
    assert done.returncode == 0, show(done)
    return directory


def test_corpus_is_broad() -> None:
    assert len(VALID) >= 25
    assert any(p.parent.name != "valid" for p in VALID)  # files in subfolders


def test_one_package_per_file(out: Path) -> None:
    assert packages(out) == sorted(p.stem for p in VALID)
    assert not (out / "__init__.py").exists()


def test_mypy_strict(out: Path, tmp_path: Path) -> None:
    done = mypy_strict(out, tmp_path / "cache")
    assert done.returncode == 0, show(done)


def test_ruff_project_rules(out: Path) -> None:
    done = ruff_project(out)
    assert done.returncode == 0, show(done)


def test_ruff_defaults(out: Path) -> None:
    done = ruff_defaults(out)
    assert done.returncode == 0, show(done)


def test_ruff_format(out: Path) -> None:
    done = ruff_format(out)
    assert done.returncode == 0, show(done)


def test_regenerating_is_a_no_op(out: Path) -> None:
    before = {p: p.read_bytes() for p in out.rglob("*.py")}
    done = generate(VALID, out)
    assert done.returncode == 0, show(done)
    assert "unchanged" in done.stdout + done.stderr
    assert {p: p.read_bytes() for p in out.rglob("*.py")} == before
    check = generate(VALID, out, "--check")
    assert check.returncode == 0, show(check)


@pytest.fixture(scope="module")
def imported(out: Path) -> Iterator[Path]:
    with importable(out):
        yield out


@pytest.mark.parametrize("name", sorted(p.stem for p in VALID))
def test_imports_and_exports(imported: Path, name: str) -> None:
    package = importlib.import_module(name)
    for module in ("types", "server", "client"):
        if (imported / name / f"{module}.py").is_file():
            importlib.import_module(f"{name}.{module}")
    for exported in package.__all__:
        assert getattr(package, exported) is not None


def test_docs_kept_exactly(imported: Path) -> None:
    docs = importlib.import_module("docs_odd")
    doc = inspect.getdoc(docs.Document)
    assert doc is not None
    assert doc.startswith("Starts with a tab.\n        Indented        with    tabs.\n")
    assert 'Triple quotes: """ and \'\'\' and a lone " at the end"' in doc
    assert "backslashes: \\ \\\\ \\n \\t \\x00 \\u1234 \\N{BULLET} \\\n" in doc
    assert "{} {0} {name} %s %(name)s %d {{}} $x ${x}" in doc
    assert "Comment look-alikes: */ /* // /// #" in doc
    assert "RTL: עברית \u200fmixed\u200f العربية" in doc
    assert "🚀🔥👍🏽👨‍👩‍👧‍👦🏳️‍🌈" in doc
    assert "a\u200bb\u200cc\u200dd" in doc
    assert "Trailing spaces follow:\n" in doc
    assert " ".join(["lorem"] * 60) in doc
    assert inspect.getdoc(docs.DocsServicer.get) == 'Method doc ending with a quote"'
    assert inspect.getdoc(docs.DocsClient.status) == "Method doc ending with a backslash\\"
    assert inspect.getdoc(docs.DocsServicer.all) == 'Only a triple quote:\n"""'
    cms = importlib.import_module("cms")
    page = inspect.getdoc(cms.Page)
    assert page is not None
    assert "C:\\Users\\admin\\new and \\\\server\\share" in page
    assert 'A docstring terminator """ inside' in page


def test_defaults_exact(imported: Path) -> None:
    types = importlib.import_module("defaults_edge.types")
    d = types.Defaults()
    assert same(d.i_min, -(2**63)) and same(d.i_max, 2**64 - 1)
    assert same(d.f_negzero, -0.0) and same(d.f_int, -7.0) and same(d.f_tiny, 5e-324)
    assert same(d.f_max, 1e308) and same(d.f_exp, 2.5e10)
    assert d.s_escapes == 'tab\tnl\ncr\rbs\\q"nul\x00bell\a\u00e9\U0001f600'
    assert d.s_named == "\N{BULLET} \N{GREEK SMALL LETTER ALPHA} \N{EURO SIGN}"
    assert d.s_unicode == "Grüße, 日本語, עברית, العربية, 🎉"
    assert d.s_braces == "{} {0} {{x}} %s %%"
    assert d.s_triple == "\"\"\" and '''"
    assert d.s_backslash_end == "ends\\"
    assert d.s_octal == "AB"
    assert d.o_enum is types.Edge.MAX and d.e_min is types.Edge.MIN
    assert d.l_empty == [] and d.l_empty is not types.Defaults().l_empty
    crlf = importlib.import_module("windows_notes.types")
    assert crlf.Note().text == "line1\r\nline2"
    assert inspect.getdoc(crlf.Note) == "A note.\nSecond line."
    mac = importlib.import_module("classic_mac")
    assert inspect.getdoc(mac.SettingsServicer.read) == "Read a setting.\nSecond doc line."


def test_version_strings(imported: Path) -> None:
    v = importlib.import_module("versions")
    assert v.AlphaClient.VERSION == "0.0.0-alpha.1+sha.5114f85"
    assert v.BetaServicer.VERSION == '1.0 "beta" {x} \\ ünï'
    assert v.GammaClient.VERSION == ""
    assert v.NoVersionClient.VERSION is None
    assert hasattr(v, "register_http_gateway") and hasattr(v, "register_o_auth2_provider")


# -- generic round trip over every service ----------------------------------------------------


def _recording(
    servicer: type, methods: type, seen: list[tuple[str, dict[str, Any]]], k: int
) -> Any:
    body: dict[str, Any] = {}
    for name, sig in signatures(methods).items():
        body[name] = _method(getattr(servicer, name), sig, seen, k)
    return type(f"Rec{servicer.__name__}", (servicer,), body)()


def _method(abstract: Any, sig: schema.Signature[Any], seen: list[Any], k: int) -> Any:
    names = [p.name for p in sig.params]
    result = sample(sig.result, 0, k)

    def record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((sig.name, dict(zip(names, args, strict=False)) | kwargs))

    if inspect.isasyncgenfunction(abstract):

        async def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            record(args, kwargs)
            yield result
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


def _wait_seen(seen: list[Any], n: int) -> None:
    end = time.monotonic() + 10
    while len(seen) < n:
        assert time.monotonic() < end, "servicer never called"
        time.sleep(0.005)


SERVING = sorted(
    p.stem
    for p in VALID
    if any(
        line.lstrip().startswith("service ")
        for line in p.read_text(encoding="utf-8-sig").splitlines()
    )
)
# @executor(process) methods run on a copy of the servicer: their calls are not recorded here.
IN_WORKER = {"gc_content"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", SERVING)
def test_round_trip_both_clients(imported: Path, name: str) -> None:
    package = importlib.import_module(name)
    client_mod = importlib.import_module(f"{name}.client")
    found = services(package)
    assert found
    for k in (0, 1):
        seen: list[tuple[str, dict[str, Any]]] = []
        regs = [(reg, _recording(cls, methods, seen, k)) for _, cls, reg, methods in found]
        with serving(*regs, prefixed=True) as addr, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for service, _, _, methods in found:
                sigs = signatures(methods)
                blocking = getattr(client_mod, f"{service}Client")
                asyncc = getattr(client_mod, f"Async{service}Client")
                with blocking(addr, prefix=f"{service}.") as client:
                    for mname, sig in sigs.items():
                        _check_blocking(client, mname, sig, seen, k)
                asyncio.run(
                    asyncio.wait_for(_check_async(asyncc, addr, service, sigs, seen, k), 60)
                )


def _call_args(sig: schema.Signature[Any], k: int, full: bool) -> tuple[list[Any], dict[str, Any]]:
    args = [sample(p.schema, 0, k) for p in sig.params if full or p.required]
    expected = {
        p.name: sample(p.schema, 0, k) if full or p.required else p.default for p in sig.params
    }
    return args, expected


def _check_blocking(
    client: Any, mname: str, sig: schema.Signature[Any], seen: list[Any], k: int
) -> None:
    method = getattr(client, mname)
    expected_result = sample(sig.result, 0, k)
    for full in (True, False):
        args, expected = _call_args(sig, k, full)
        before = len(seen)
        got = method(*args)
        if sig.stream:
            got = list(got)
            assert same(got, [expected_result, expected_result]), (mname, got)
        else:
            assert same(got, expected_result) or got is None, (mname, got, expected_result)
        if mname in IN_WORKER:
            continue
        _wait_seen(seen, before + 1)
        assert seen[before][0] == sig.name
        assert same(seen[before][1], expected), (mname, seen[before][1], expected)


async def _check_async(
    cls: Any, addr: str, service: str, sigs: dict[str, Any], seen: list[Any], k: int
) -> None:
    async with cls(addr, prefix=f"{service}.") as client:
        for mname, sig in sigs.items():
            method = getattr(client, mname)
            expected_result = sample(sig.result, 0, k)
            args, expected = _call_args(sig, k, full=True)
            before = len(seen)
            if sig.stream:
                got = [x async for x in method(*args)]
                assert same(got, [expected_result, expected_result]), (mname, got)
            else:
                got = await method(*args)
                assert same(got, expected_result) or got is None, (mname, got)
            if mname in IN_WORKER:
                continue
            for _ in range(1000):
                if len(seen) > before:
                    break
                await asyncio.sleep(0.005)
            assert same(seen[before][1], expected), (mname, seen[before][1], expected)


def test_threads_left_alone() -> None:
    # The servers above are stopped: no stray non-daemon threads keep the process alive.
    assert all(t.daemon or t is threading.main_thread() for t in threading.enumerate())
