"""Point 2 of the typed-call contract: names chosen by the user (parameters, methods,
services, structs) never collide with names the generated code or the runtime rely on.
The generated code for them passes ruff and mypy --strict, and calls behave as point 1
says: by position and by name, through the generated and the untyped clients."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mprpcgen.cli import main
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import ParamError

from .kit import generate, new_server, package, served

ROOT = Path(__file__).resolve().parents[2]

# Names the brief lists, and the runtime's and the generated code's own words.
PARAM_NAMES = [
    "args", "kwargs", "f", "encode", "typed", "a0", "k0", "method", "timeout", "metadata",
    "id", "prefix", "cls", "sig", "reply", "options", "name", "wire", "schema", "result",
    "value", "v", "fn", "func", "kw", "k", "a", "params", "call", "rpc", "client", "server",
    "servicer", "ctx", "loop", "data", "stream", "decode", "fits", "check", "min", "max",
]  # fmt: skip
METHOD_NAMES = [
    "call", "delay", "notify", "method", "aclose", "reconnect", "connected", "server_info",
    "address", "timeout", "interceptors", "features", "services", "version", "register",
    "prefix", "methods", "service", "open_stream", "decode_result", "encode_args",
]  # fmt: skip
TYPE_NAMES = ["Any", "Signature", "Iterator", "AsyncIterator", "Coro", "Param", "Dict", "Server"]

KINDS40 = ["int", "list<map<str, Signature?>>", "bytes?", "map<str, list<float>>", "Coro"]
COLLIDING_IDL = (
    "\n".join(f"struct {t} {{ {t.lower()}_field: int; }}" for t in TYPE_NAMES)
    + "\nservice Signature2 {\n"
    + "    def everything("
    + ", ".join(f"{p}: int" for p in PARAM_NAMES)
    + ") -> list<int>;\n"
    + "".join(f"    def {m}(x: int) -> int;\n" for m in METHOD_NAMES)
    + "    def structs("
    + ", ".join(f"{t.lower()}_arg: {t}" for t in TYPE_NAMES)
    + ") -> Signature;\n"
    + "    stream items(it: Iterator) -> AsyncIterator;\n"
    + "    def nothing() -> int;\n"
    + "    def many("
    + ", ".join(f"p{i}: {KINDS40[i % len(KINDS40)]}" for i in range(40))
    + ") -> int;\n"
    + "}\n"
    + "service List { def list(args: Any) -> Any; }\n"
)


def make_servicer(mod: Any) -> Any:
    methods: dict[str, Any] = {
        m: (lambda self, x, _i=i: x + _i) for i, m in enumerate(METHOD_NAMES)
    }
    namespace: dict[str, Any] = {}
    exec(  # the handler's signature must be the IDL's: parameters are passed by name
        f"def everything(self, {', '.join(PARAM_NAMES)}):\n    return [{', '.join(PARAM_NAMES)}]\n",
        namespace,
    )
    methods["everything"] = namespace["everything"]
    methods["structs"] = lambda self, **kw: mod.Signature(signature_field=len(kw))

    async def items(self: Any, it: Any) -> Any:
        yield mod.AsyncIterator(asynciterator_field=it.iterator_field)

    methods["items"] = items
    methods["nothing"] = lambda self: 0
    methods["many"] = lambda self, **kw: len(kw)
    return type("Impl", (mod.Signature2Servicer,), methods)()


@pytest.fixture(scope="module")
def colliding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    directory = tmp_path_factory.mktemp("names")
    with package(COLLIDING_IDL, "names_attack", directory) as mod:
        server = new_server()
        mod.register_signature2(server, make_servicer(mod))
        list_impl = type(
            "ListImpl",
            (mod.ListServicer,),
            {"list": lambda self, args: mod.Any(any_field=-args.any_field)},
        )()
        mod.register_list(server, list_impl, prefix="list.")
        with served(server) as running:
            yield mod, running.url, directory


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.timeout(240)
def test_colliding_names_pass_ruff_and_mypy_strict(colliding: tuple[Any, str, Path]) -> None:
    _, _, directory = colliding
    project = ["--config", str(ROOT / "pyproject.toml"), "--config", "lint.extend-ignore=['D']"]
    _run([sys.executable, "-m", "ruff", "check", "--no-cache", *project, "names_attack"], directory)
    _run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "names_attack"],
        directory,
    )
    cache = ["--cache-dir", str(directory / ".mypy")]
    _run([sys.executable, "-m", "mypy", "--strict", *cache, "-p", "names_attack"], directory)


VALUES = list(range(len(PARAM_NAMES)))
BY_NAME = dict(zip(PARAM_NAMES, VALUES, strict=True))


def test_reserved_parameter_names_by_position_and_by_name(
    colliding: tuple[Any, str, Path],
) -> None:
    mod, url, _ = colliding
    with mod.Signature2Client(url) as client, RPC(url) as rpc:
        assert client.everything(*VALUES) == VALUES
        assert client.everything(**BY_NAME) == VALUES
        assert client.with_options(timeout=5).everything(**BY_NAME) == VALUES
        assert rpc.everything(*VALUES) == VALUES
        assert rpc.everything(**BY_NAME) == VALUES
        assert rpc.method("everything")(**BY_NAME) == VALUES
        for name in PARAM_NAMES:
            with pytest.raises(ParamError, match=rf"everything\(\): {name}: expected int"):
                rpc.everything(**{**BY_NAME, name: "x"})
            with pytest.raises(ParamError, match=rf"everything\(\): {name}: expected int"):
                client.everything(**{**BY_NAME, name: True})
            missing = {k: v for k, v in BY_NAME.items() if k != name}
            with pytest.raises(ParamError, match=rf"everything\(\): {name}\b"):
                rpc.everything(**missing)


def test_untyped_call_passes_a_parameter_named_method_by_name(
    colliding: tuple[Any, str, Path],
) -> None:
    _, url, _ = colliding
    with RPC(url) as rpc:
        assert rpc.call("everything", **BY_NAME) == VALUES


def test_async_untyped_call_passes_a_parameter_named_method_by_name(
    colliding: tuple[Any, str, Path],
) -> None:
    _, url, _ = colliding

    async def main() -> Any:
        async with AsyncRPC(url) as rpc:
            return await rpc.call("everything", **BY_NAME)

    assert asyncio.run(asyncio.wait_for(main(), 20)) == VALUES


def test_untyped_call_by_name_without_method(colliding: tuple[Any, str, Path]) -> None:
    _, url, _ = colliding
    with RPC(url) as rpc:
        assert rpc.call("timeout", x=1) == 1 + METHOD_NAMES.index("timeout")
        assert rpc.call("method", x=1) == 1 + METHOD_NAMES.index("method")


def test_method_names_of_the_runtime_call_the_service(colliding: tuple[Any, str, Path]) -> None:
    mod, url, _ = colliding

    async def via_async() -> list[int]:
        async with mod.AsyncSignature2Client(url) as client:
            got = [await getattr(client, m)(10) for m in METHOD_NAMES]
            got += [await getattr(client.with_options(timeout=5), m)(x=10) for m in METHOD_NAMES]
            return got

    want = [10 + i for i in range(len(METHOD_NAMES))]
    with mod.Signature2Client(url) as client:
        assert [getattr(client, m)(10) for m in METHOD_NAMES] == want
        assert [getattr(client, m)(x=10) for m in METHOD_NAMES] == want
        assert [getattr(client.with_options(timeout=5), m)(10) for m in METHOD_NAMES] == want
        assert client.everything(*VALUES) == VALUES  # the client still works after them
    assert asyncio.run(asyncio.wait_for(via_async(), 20)) == want * 2


def test_type_names_of_the_runtime_as_structs(colliding: tuple[Any, str, Path]) -> None:
    mod, url, _ = colliding
    structs = {f"{t.lower()}_arg": getattr(mod, t)(**{f"{t.lower()}_field": 1}) for t in TYPE_NAMES}
    with mod.Signature2Client(url) as client, mod.ListClient(url, prefix="list.") as list_client:
        assert client.structs(**structs) == mod.Signature(signature_field=len(TYPE_NAMES))
        assert list(client.items(mod.Iterator(iterator_field=3))) == [
            mod.AsyncIterator(asynciterator_field=3)
        ]
        assert list_client.list(mod.Any(any_field=4)) == mod.Any(any_field=-4)
    with RPC(url) as rpc:
        wrong = {k: {f"{k[:-4]}_field": 1} for k in structs}
        assert rpc.structs(**wrong) == {"signature_field": len(TYPE_NAMES)}
        wrong["coro_arg"] = {"coro_field": True}
        with pytest.raises(ParamError, match=r"structs\(\): coro_arg\.coro_field: expected int"):
            rpc.structs(**wrong)


@pytest.mark.parametrize("name", ["self", "_sig", "_args", "_reply", "MIN", "MAX"])
def test_names_the_idl_refuses_are_refused_with_a_message(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    idl = tmp_path / "refused.idl"
    idl.write_text(f"service S {{ def m({name}: int) -> int; }}\n")
    assert main([str(idl), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"'{name}'" in err and "refused.idl:1:" in err, err
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 40])
def test_many_parameters(tmp_path: Path, count: int) -> None:
    kinds = ["int", "float", "bool", "str", "bytes", "int?", "list<int>", "map<str, float>"]
    good = [-(2**63), 2, True, "s", b"b", None, [2**64 - 1], {"a": 1}]
    bad = [True, "x", 1, b"x", "x", 1.5, [False], {"a": "x"}]
    params = ", ".join(f"p{i}: {kinds[i % 8]}" for i in range(count))
    idl = f"service Many {{ def m({params}) -> list<any>; def ok() -> int; }}\n"
    values = [good[i % 8] for i in range(count)]
    echoed = [float(v) if kinds[i % 8] == "float" else v for i, v in enumerate(values)]
    echoed = [({"a": 1.0} if kinds[i % 8].startswith("map") else v) for i, v in enumerate(echoed)]
    names = [f"p{i}" for i in range(count)]
    namespace: dict[str, Any] = {}
    exec(f"def m(self, {', '.join(names)}): return [{', '.join(names)}]", namespace)
    with package(idl, f"many{count}_attack", tmp_path) as mod:
        impl = type("M", (mod.ManyServicer,), {"m": namespace["m"], "ok": lambda self: 1})()
        server = new_server()
        mod.register_many(server, impl)
        with served(server) as running, RPC(running.url) as rpc, mod.ManyClient(running.url) as c:
            assert rpc.m(*values) == echoed
            assert rpc.m(**dict(zip(names, values, strict=True))) == echoed
            assert c.m(*values) == echoed
            assert c.m(**dict(zip(names, values, strict=True))) == echoed
            for i in range(count):
                wrong = list(values)
                wrong[i] = bad[i % 8]
                for how in ("position", "name", "typed"):
                    with pytest.raises(ParamError, match=rf"m\(\): p{i}\b"):
                        if how == "position":
                            rpc.m(*wrong)
                        elif how == "name":
                            rpc.m(**dict(zip(names, wrong, strict=True)))
                        else:
                            c.m(*wrong)
            with pytest.raises(ParamError):
                rpc.m(*values, 1)
            if count:
                with pytest.raises(ParamError, match=rf"p{count - 1}\b"):
                    rpc.m(*values[:-1])
            assert rpc.ok() == 1


snake = st.sampled_from(PARAM_NAMES)
kinds = st.sampled_from(["int", "float", "bool", "str", "bytes", "int?", "list<int>"])
SAMPLE = {
    "int": 2**64 - 1,
    "float": 3,
    "bool": False,
    "str": "",
    "bytes": b"",
    "int?": None,
    "list<int>": [-(2**63)],
}
WRONG = {
    "int": True,
    "float": True,
    "bool": 0,
    "str": b"",
    "bytes": "",
    "int?": 0.5,
    "list<int>": [1.0],
}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=st.lists(st.tuples(snake, kinds), min_size=1, max_size=6, unique_by=lambda p: p[0]),
    method=st.sampled_from(METHOD_NAMES),
    service=st.sampled_from([*TYPE_NAMES, "List", "Rand"]),
    data=st.data(),
)
def test_random_signatures_of_reserved_names(
    params: list[tuple[str, str]], method: str, service: str, data: st.DataObject
) -> None:
    signature = ", ".join(f"{n}: {k}" for n, k in params)
    idl = f"service {service} {{ def {method}({signature}) -> list<any>; }}\n"
    names = [n for n, _ in params]
    namespace: dict[str, Any] = {}
    exec(f"def h(self, {', '.join(names)}): return [{', '.join(names)}]", namespace)
    values = [SAMPLE[k] for _, k in params]
    echoed = [float(v) if k == "float" else v for v, (_, k) in zip(values, params, strict=True)]
    wrong_at = data.draw(st.integers(0, len(params) - 1))
    with package(idl, "rand_attack") as mod:
        impl = type("R", (getattr(mod, f"{service}Servicer"),), {method: namespace["h"]})()
        server = new_server()
        snake_name = re.sub(r"(?<!^)(?=[A-Z])", "_", service).lower()
        getattr(mod, f"register_{snake_name}")(server, impl)
        client = getattr(mod, f"{service}Client")
        with served(server) as running, RPC(running.url) as rpc, client(running.url) as c:
            kw = dict(zip(names, values, strict=True))
            assert getattr(c, method)(*values) == echoed
            assert getattr(c, method)(**kw) == echoed
            assert rpc.method(method)(*values) == echoed
            assert rpc.method(method)(**kw) == echoed
            bad_name, bad_kind = params[wrong_at]
            for call in (getattr(c, method), rpc.method(method)):
                with pytest.raises(
                    ParamError, match=rf"{method}\(\): {bad_name}(\[0\])?: expected"
                ):
                    call(**{**kw, bad_name: WRONG[bad_kind]})


def test_generate_helper_writes_the_package(tmp_path: Path) -> None:
    generate("service Tiny { def ok() -> int; }\n", tmp_path, "tiny_attack")
    assert (tmp_path / "tiny_attack" / "client.py").is_file()


FIELD_NAMES = ["self", "cls", "args", "kwargs", "object", "field", "fields", "replace", "asdict"]


def test_struct_fields_and_enum_members_named_like_python_internals(tmp_path: Path) -> None:
    fields = "; ".join(f"{f}: int" for f in FIELD_NAMES)
    idl = (
        "enum E { MIN = 0; MAX = 1; NAME = 2; VALUE = 3; }\n"
        f"struct Odd {{ {fields}; e: E = E.MAX; }}\n"
        "service Fld { def take(o: Odd, e: E = E.MIN) -> list<any>; }\n"
    )
    with package(idl, "fld_attack", tmp_path) as mod:
        impl = type("F", (mod.FldServicer,), {"take": lambda self, o, e: [o.self, o.e, e]})()
        server = new_server()
        mod.register_fld(server, impl)
        values = {f: i for i, f in enumerate(FIELD_NAMES)}
        with served(server) as running, RPC(running.url) as rpc, mod.FldClient(running.url) as c:
            assert c.take(mod.Odd(**values)) == [0, 1, 0]
            assert c.take(mod.Odd(**values, e=mod.E.VALUE), mod.E.NAME) == [0, 3, 2]
            assert rpc.take(values, 0) == [0, 1, 0]  # e given: see test_defaults
            assert rpc.take(o=values, e=3) == [0, 1, 3]
            with pytest.raises(ParamError, match=r"take\(\): o\.self: expected int"):
                rpc.take({**values, "self": "x"}, 0)
            with pytest.raises(ParamError, match=r"take\(\): o\.e: 4 is not a E"):
                rpc.take({**values, "e": 4}, 0)


@pytest.mark.parametrize("kind", ["delay", "notify"])
def test_untyped_delay_and_notify_pass_a_parameter_named_method(
    colliding: tuple[Any, str, Path], kind: str
) -> None:
    _, url, _ = colliding
    with RPC(url) as rpc:
        if kind == "delay":
            assert rpc.system.getresult(rpc.delay("everything", **BY_NAME)) == VALUES
        else:
            rpc.notify("everything", **BY_NAME)
            assert rpc.everything(*VALUES) == VALUES


def test_method_signature_shows_the_idl_signature(colliding: tuple[Any, str, Path]) -> None:
    _, url, _ = colliding
    with RPC(url) as rpc:
        sig = rpc.system.methodSignature("everything")
        assert sig == "everything(" + ", ".join(f"{p}: int" for p in PARAM_NAMES) + ") -> list<int>"
        assert rpc.system.methodSignature("call") == "call(x: int) -> int"


def test_forty_parameters_of_nested_types_and_none(colliding: tuple[Any, str, Path]) -> None:
    mod, url, _ = colliding
    samples = [1, [{"k": None}], None, {"k": [1.5]}, mod.Coro(coro_field=1)]
    args = [samples[i % 5] for i in range(40)]
    with mod.Signature2Client(url) as client, RPC(url) as rpc:
        assert client.nothing() == 0
        assert client.many(*args) == 40
        assert client.many(**{f"p{i}": a for i, a in enumerate(args)}) == 40
        wire = [{"coro_field": 1} if isinstance(a, mod.Coro) else a for a in args]
        assert rpc.many(*wire) == 40
        with pytest.raises(ParamError, match=r"many\(\): p36\[0\]\['k'\]\.signature_field"):
            rpc.many(*wire[:36], [{"k": {"signature_field": "x"}}], *wire[37:])
        with pytest.raises(ParamError, match=r"nothing\(\)"):
            rpc.nothing(1)
