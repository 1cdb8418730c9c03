"""The process-pool path (`@executor(process)` in the IDL, or `Server(executor="process")`
for every plain method) must answer wrong results exactly like the thread pool: 404,
`EXCEPTION` `ValidationError`, the message naming the method; good results (dataclasses,
enum members) come back typed; wrong arguments are 402 before any worker runs."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_typed.kit import new_server, package, served

from pymprpc.client import RPC
from pymprpc.errors import MPRPCError, ParamError

IDL = """
enum Color { RED = 1; GREEN = 2; }
struct Pt { x: float; y: int = 0; }
service Pool {
    @executor(process) def p_int(k: str) -> int;
    @executor(process) def p_color(k: str) -> Color;
    @executor(process) def p_pts(k: str) -> list<Pt?>;
    def t_int(k: str) -> int;
    def t_color(k: str) -> Color;
    def t_pts(k: str) -> list<Pt?>;
    @executor(process) def p_arg(p: Pt) -> float;
}
"""


def value(mod: Any, key: str) -> Any:
    """Built inside the handler, so a worker process returns its own."""
    return {
        "str": "x",
        "bool": True,
        "big": 2**64,
        "three": 3,
        "map": {"x": 1.0},
        "pts": [None, mod.Pt(x=1)],
        "badpts": [None, {"x": 1.0}],
        "red": mod.Color.RED,
        "one": 1,
        "lock": threading.Lock(),
        "lambda": lambda: 1,
        "generator": (i for i in range(2)),
    }[key]


@pytest.fixture(scope="module", params=["idl", "server-wide"])
def pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """`idl`: p_* run in the process pool, t_* in threads; `server-wide`: every one does."""
    with package(IDL, "pool_attack2", tmp_path_factory.mktemp("pool")) as mod:
        handler = lambda self, k: value(mod, k)  # noqa: E731
        methods = {m: handler for m in ("p_int", "p_color", "p_pts", "t_int", "t_color", "t_pts")}
        methods["p_arg"] = lambda self, p: p.x + p.y
        options = {"executor": "process"} if request.param == "server-wide" else {}
        server = new_server(max_workers=1, **options)
        mod.register_pool(server, type("P", (mod.PoolServicer,), methods)())
        with served(server) as running:
            yield mod, running.url


def outcome(call: Any) -> tuple[str, Any, str]:
    try:
        return "ok", call(), ""
    except MPRPCError as exc:
        return type(exc).__name__, exc.exception, str(exc)


CASES = [
    ("int", "str", "expected int, got str"),
    ("int", "bool", "expected int, got bool"),
    ("int", "big", "64-bit"),
    ("int", "map", "expected int, got map"),
    ("color", "three", "3 is not a Color"),
    ("color", "bool", "expected Color, got bool"),
    ("pts", "badpts", r"\[1\]: expected Pt, got map"),
    ("pts", "str", "expected list<Pt\\?>, got str"),
]


@pytest.mark.parametrize(("kind", "key", "why"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_process_and_thread_pools_refuse_the_same_results(
    pool: tuple[Any, str], kind: str, key: str, why: str
) -> None:
    mod, url = pool
    with mod.PoolClient(url) as client, RPC(url) as rpc:
        for method in (f"p_{kind}", f"t_{kind}"):
            for caller in (client, rpc):
                got = outcome(lambda c=caller, m=method: getattr(c, m)(key))
                assert got[:2] == ("RPCRuntimeError", "ValidationError"), (method, got)
                assert got[2].startswith(f"ValidationError: {method}()"), got
                assert re.search(why, got[2]), got


def test_good_results_from_a_worker_come_back_typed(pool: tuple[Any, str]) -> None:
    mod, url = pool
    with mod.PoolClient(url) as client:
        for prefix in ("p", "t"):
            assert getattr(client, f"{prefix}_int")("one") == 1
            red = getattr(client, f"{prefix}_color")("red")
            assert red is mod.Color.RED
            assert getattr(client, f"{prefix}_color")("one") is mod.Color.RED
            assert getattr(client, f"{prefix}_pts")("pts") == [None, mod.Pt(x=1.0)]
        assert client.p_arg(mod.Pt(x=1.5, y=2)) == 3.5


def test_wrong_arguments_to_a_process_method_are_402(pool: tuple[Any, str]) -> None:
    mod, url = pool
    with mod.PoolClient(url) as client, RPC(url) as rpc:
        with pytest.raises(ParamError, match=r"^p_arg\(\): p\.y: expected int, got float"):
            client.p_arg(mod.Pt(x=1, y=1.0))
        with pytest.raises(ParamError, match=r"^p_arg\(\): p\.y: expected int, got float"):
            rpc.p_arg({"x": 1, "y": 1.0})
        with pytest.raises(ParamError, match=r"^p_arg\(\): p: expected Pt, got int"):
            rpc.p_arg(1)
        assert client.p_arg(mod.Pt(x=1)) == 1.0


@pytest.mark.parametrize("key", ["lock", "lambda"])
def test_an_unpicklable_wrong_result_is_a_validation_error_like_on_threads(
    pool: tuple[Any, str], key: str
) -> None:
    mod, url = pool
    with mod.PoolClient(url) as client:
        got = outcome(lambda: client.p_int(key))
        assert client.p_int("one") == 1
    assert got[:2] == ("RPCRuntimeError", "ValidationError"), got
    assert got[2].startswith("ValidationError: p_int(): expected int, got "), got


@pytest.mark.parametrize("method", ["t_int", "p_int"])
def test_a_generator_returned_for_an_int_is_a_validation_error(
    pool: tuple[Any, str], method: str
) -> None:
    mod, url = pool
    with mod.PoolClient(url) as client:
        got = outcome(lambda: getattr(client, method)("generator"))
    assert got[:2] == ("RPCRuntimeError", "ValidationError"), got
    assert got[2].startswith(f"ValidationError: {method}(): expected int"), got
