"""Review 20: values nested too deep (405 alike on every executor, the process pool
included) and MPRPC 0.1 separator framing (nothing sent that the separator would cut
short). Real servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from attacks_review18.test_review18 import Raw, recording, serving

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import MPRPCError

from . import r20_funcs as f

pytestmark = pytest.mark.timeout(60)

EXECUTORS = ["thread", "inline", "process", "coro"]
TOO_DEEP = "nests deeper than MessagePack's 1024 levels"
SEP = f.SEP


def new_server(**options: Any) -> Server:
    options.setdefault("grace_period", 1.0)
    options.setdefault("max_workers", 2)
    server = Server(("127.0.0.1", 0), **options)
    for e in EXECUTORS:
        if e == "coro":
            server.register_function("d_coro")(f.adeep)
        else:
            server.register_function(f"d_{e}", executor=e)(f.deep)
    server.register_function("ping")(f.ping)
    server.register_function("ping_process", executor="process")(f.ping)
    server.register_function("depth_process", executor="process")(f.echo_depth)
    server.register_function("depth_thread", executor="thread")(f.echo_depth)
    return server


def outcome(call: Any, method: str) -> tuple[Any, ...]:
    try:
        value = call()
    except MPRPCError as exc:
        return (exc.code, type(exc).__name__, str(exc).replace(method, "M"), exc.data)
    return ("value", f.echo_depth(value))


@contextlib.contextmanager
def deep_server(**options: Any) -> Iterator[tuple[Any, Any]]:
    server = new_server(**options)
    with recording() as codes, serving(server) as running:
        yield running, codes


def per_executor(kind: str, levels: int) -> tuple[dict[str, Any], list[str]]:
    with deep_server() as (running, codes):
        with RPC(running.url, timeout=20) as rpc:
            got = {
                e: outcome(lambda e=e: rpc.method(f"d_{e}")(kind, levels), f"d_{e}")
                for e in EXECUTORS
            }
            assert rpc.ping() == "pong"
            assert rpc.ping_process() == "pong"
        refusals = list(codes.refusals)
        assert codes.errors == [], codes.errors
    return got, refusals


# == A. too deep, every executor alike =====================================================


@pytest.mark.parametrize(
    ("kind", "levels"),
    [
        ("list", 1023),
        ("list", 1024),
        ("list", 5000),
        ("dict", 1100),
        ("mix", 1100),
        ("tuple", 1100),
        ("wide", 1100),
        ("self", 0),
        ("selfdict", 0),
        ("bytesub", 1100),
        pytest.param(
            "memoryview",
            1100,
            marks=pytest.mark.xfail(
                sys.version_info >= (3, 13),
                strict=False,
                reason="3.13 pickles a deep list, then fails on the memoryview in it: 404",
            ),
        ),
    ],
)
def test_too_deep_is_405_alike_on_every_executor(kind: str, levels: int) -> None:
    got, refusals = per_executor(kind, levels)
    first = got["thread"]
    assert first[:2] == (405, "ResultLimitError"), first
    assert TOO_DEEP in first[2], first
    assert first[3] is None
    for e in EXECUTORS:
        assert got[e] == first, (e, got[e], first)
    assert len(refusals) == len(EXECUTORS), refusals
    for line in refusals:
        assert "cannot be sent, answered 405" in line and TOO_DEEP in line, line


@pytest.mark.parametrize(
    "kind",
    [
        "list",
        "bytesub",
        pytest.param(
            "memoryview",
            marks=pytest.mark.xfail(
                sys.version_info >= (3, 13),
                strict=False,
                reason="3.13 pickles a deep list, then fails on the memoryview in it: 404",
            ),
        ),
        "mix",
    ],
)
def test_at_the_limit_is_delivered_on_every_executor(kind: str) -> None:
    got, refusals = per_executor(kind, 1022)
    assert refusals == []
    for e in EXECUTORS:
        assert got[e][0] == "value", (e, got[e])


def test_deep_dataclass_result_alike_on_the_pool() -> None:
    got, _ = per_executor("dataclass", 1100)
    assert got["thread"][:2] == (405, "ResultLimitError")
    assert got["process"] == got["thread"], got


@pytest.mark.xfail(
    strict=False,
    reason="a deep tuple map key: thread says 'recursion limit exceeded.' "
    "instead of 'nests deeper than MessagePack's 1024 levels'",
)
def test_deep_tuple_key_message_names_the_limit_on_thread() -> None:
    got, _ = per_executor("tuplekey", 1100)
    assert got["thread"][:2] == (405, "ResultLimitError")
    assert TOO_DEEP in got["thread"][2], got["thread"]


def test_deep_tuple_key_alike_on_the_pool() -> None:
    got, _ = per_executor("tuplekey", 1100)
    assert got["process"][:2] == got["thread"][:2] == (405, "ResultLimitError"), got


def test_tuple_key_at_the_limit_delivered_or_refused_and_connection_kept() -> None:
    # Was read with a recursive key conversion past Python's recursion limit: the client
    # took it for invalid MessagePack and lost the connection (codec._hashable_nested).
    with deep_server() as (running, _), RPC(running.url, timeout=20) as rpc:
        try:
            value = rpc.d_thread("tuplekey", 1022)
        except MPRPCError as exc:
            assert exc.code == 405, repr(exc)
        else:
            assert isinstance(value, dict)
        assert rpc.ping() == "pong"


def delayed(kind: str) -> dict[str, Any]:
    with deep_server() as (running, codes):
        with RPC(running.url, timeout=20) as rpc:
            got = {}
            for e in EXECUTORS:
                id = rpc.delay(f"d_{e}", kind, 1100)
                got[e] = outcome(lambda id=id: rpc.system.getresult(id), f"d_{e}")
            assert rpc.ping_process() == "pong"
        assert codes.errors == [], codes.errors
    return got


POOL_GETRESULT = (
    "getresult of a kept too-deep result: the pool's 405 says 'M(): result not "
    "delivered: ... nests deeper ...', thread/inline/coro say 'the result cannot be "
    "encoded as MessagePack (recursion limit exceeded.)'"
)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("list", marks=pytest.mark.xfail(strict=False, reason=POOL_GETRESULT)),
        "self",
        pytest.param("memoryview", marks=pytest.mark.xfail(strict=False, reason=POOL_GETRESULT)),
    ],
)
def test_delay_then_getresult_gets_the_405_alike(kind: str) -> None:
    got = delayed(kind)
    for e in EXECUTORS:
        assert got[e][:2] == (405, "ResultLimitError"), (e, got[e])
    assert len({g[2] for g in got.values()}) == 1, got
    data = {re.sub(r"'[0-9a-f-]{36}'", "ID", repr(g[3])) for g in got.values()}
    assert len(data) == 1, data


@pytest.mark.xfail(
    strict=True,
    reason="getresult of a kept too-deep result: the 405's DATA is the getresult "
    "call's {'METHOD': 'system.getresult', 'ARGS': [id]}, not None as a direct call's",
)
def test_delay_then_getresult_405_data_is_none() -> None:
    got = delayed("list")
    assert got["thread"][3] is None, got["thread"]


def test_delay_then_getresult_405_names_the_depth_limit() -> None:
    got = delayed("list")
    assert TOO_DEEP in got["thread"][2], got["thread"]


def test_notify_deep_breaks_nothing() -> None:
    with deep_server() as (running, codes):
        with RPC(running.url, timeout=20) as rpc:
            for _ in range(3):
                for e in EXECUTORS:
                    rpc.notify(f"d_{e}", "list", 1100)
            time.sleep(0.5)
            assert rpc.ping_process() == "pong"
            assert rpc.depth_process([[[]]]) == 2
        assert codes.errors == [], codes.errors


def test_pool_keeps_serving_after_many_deep_results() -> None:
    with deep_server() as (running, _), RPC(running.url, timeout=20) as rpc:
        for _ in range(6):
            with pytest.raises(MPRPCError) as info:
                rpc.d_process("self", 0)
            assert info.value.code == 405
        assert [rpc.ping_process() for _ in range(4)] == ["pong"] * 4
        assert f.echo_depth(rpc.d_process("list", 1022)) == 1021


@pytest.mark.parametrize("method", ["depth_process", "depth_thread"])
@pytest.mark.parametrize("levels", [1021, 1022, 1023])
def test_raw_deep_argument_alike_on_pool_and_thread(method: str, levels: int) -> None:
    """A raw 0.1 peer sends an argument nested `levels` deep (the call map and ARGS
    add two): each call gets one reply, the pool and thread alike, and the connection
    and the pool serve on (or the connection closes, alike)."""
    results = {}
    for m in ("depth_process", "depth_thread"):
        with deep_server() as (running, codes):
            raw = Raw(running.server.port)
            try:
                raw.call("a", m, f.nest(levels))
                try:
                    reply = raw.recv()
                    results[m] = (reply.get("RESULT"), (reply.get("ERROR") or {}).get("CODE"))
                except EOFError:
                    results[m] = ("closed",)
            finally:
                raw.close()
            with RPC(running.url, timeout=20) as rpc:
                assert rpc.ping_process() == "pong"
            del codes
    assert results["depth_process"] == results["depth_thread"], results


# -- values deep (or not) in ways only the pool's pickling sees ---------------------------


def per_executor2(kind: str, levels: int) -> dict[str, Any]:
    server = Server(("127.0.0.1", 0), grace_period=1.0, max_workers=2)
    server.register_function("d_thread", executor="thread")(f.deep2)
    server.register_function("d_process", executor="process")(f.deep2)
    server.register_function("d_coro")(f.adeep2)
    server.register_function("ping_process", executor="process")(f.ping)
    got = {}
    with recording(), serving(server) as running, RPC(running.url, timeout=20) as rpc:
        for e in ("thread", "process", "coro"):
            m = f"d_{e}"
            try:
                value = rpc.method(m)(kind, levels)
                got[e] = ("value", f.echo_depth(value))
            except MPRPCError as exc:
                data = exc.data
                if isinstance(data, dict) and "d" in data:
                    data = {"d": f.echo_depth(data["d"])}
                elif isinstance(data, dict) and data.get("METHOD") == m:
                    data = {**data, "METHOD": "M"}
                got[e] = (exc.code, type(exc).__name__, str(exc).replace(m, "M"), data)
        assert rpc.ping_process() == "pong"
    return got


@pytest.mark.logs_errors
def test_list_subclass_within_the_limit_is_delivered_by_the_pool() -> None:
    got = per_executor2("listsub", 1000)
    assert got["thread"] == ("value", 999)
    assert got["process"] == got["thread"], got


def test_list_subclass_too_deep_is_405_alike() -> None:
    got = per_executor2("listsub", 1100)
    assert got["thread"][:2] == (405, "ResultLimitError")
    assert got["process"] == got["thread"] == got["coro"], got


@pytest.mark.xfail(
    strict=True,
    reason="a result deep only once unpickled (__reduce__ builds a 1,100-level list): "
    "the pool says 'nests deeper than ...', thread/coro 'MESSAGE.RESULT is a Lazy'",
)
def test_deep_only_after_pickling_answers_alike() -> None:
    got = per_executor2("lazy", 0)
    assert got["thread"][:2] == (405, "ResultLimitError")
    assert got["process"] == got["thread"], got


@pytest.mark.logs_errors
@pytest.mark.parametrize(
    "levels",
    [
        1019,
        pytest.param(
            1100,
            marks=pytest.mark.xfail(
                strict=False,
                reason="a handler's RPCRuntimeError with DATA too deep to send: thread/coro "
                "send no DATA at all, the pool sends {'METHOD', 'ARGS', 'KWARGS'} (its DATA "
                "could not cross, the call's description then fits)",
            ),
        ),
    ],
)
def test_exception_data_deep_alike_on_the_pool(levels: int) -> None:
    got = per_executor2("exc_data", levels)
    assert got["thread"] == got["coro"]
    assert got["process"] == got["thread"], got


@pytest.mark.logs_errors
def test_exception_data_not_a_map_alike_on_the_pool() -> None:
    got = per_executor2("exc_notdict", 0)
    assert got["thread"] == got["coro"]
    assert got["process"] == got["thread"], got


@pytest.mark.logs_errors
def test_deep_exception_argument_alike() -> None:
    got = per_executor2("exc_arg", 1100)
    assert got["thread"][0] == 404
    assert got["process"] == got["thread"] == got["coro"], got


@pytest.mark.logs_errors
def test_exception_data_shallow_kept_by_the_pool() -> None:
    server = Server(("127.0.0.1", 0), grace_period=1.0, max_workers=2)
    server.register_function("t", executor="thread")(f.raise_shallow_data)
    server.register_function("p", executor="process")(f.raise_shallow_data)
    with recording(), serving(server) as running, RPC(running.url, timeout=20) as rpc:
        data = {}
        for m in ("t", "p"):
            with pytest.raises(MPRPCError) as info:
                rpc.method(m)()
            data[m] = {k: v for k, v in (info.value.data or {}).items() if k != "METHOD"}
    assert data["t"].get("d") == 1
    assert data["p"] == data["t"], data


def test_async_client_gets_the_same_405(loop: str) -> None:
    from review_fixtures import client_run

    async def main(url: str) -> dict[str, Any]:
        got = {}
        async with AsyncRPC(url, timeout=20) as rpc:
            for e in EXECUTORS:
                try:
                    await rpc.method(f"d_{e}")("mix", 1100)
                except MPRPCError as exc:
                    got[e] = (exc.code, str(exc).replace(f"d_{e}", "M"), exc.data)
            assert await rpc.ping_process() == "pong"
        return got

    with deep_server() as (running, _):
        got = client_run(loop, main(running.url))
    assert len(got) == len(EXECUTORS)
    assert len(set(map(repr, got.values()))) == 1, got
    assert got["process"][0] == 405 and TOO_DEEP in got["process"][1]


@pytest.mark.parametrize("levels", [1022, 1023, 1100])
def test_deep_stream_item(levels: int) -> None:
    server = new_server()
    server.register_function("st")(f.deep_stream)
    with recording() as codes, serving(server) as running, RPC(running.url, timeout=20) as rpc:
        items: list[Any] = []
        error = None
        try:
            for item in rpc.st(levels):
                items.append(item)
        except MPRPCError as exc:
            error = exc
        assert rpc.ping() == "pong"
        refusals = list(codes.refusals)
    if levels <= 1022:
        assert error is None and len(items) == 3, (items, error)
    else:
        assert items == [1] and error is not None and error.code == 405, (items, error)
        assert TOO_DEEP in str(error)
        assert len(refusals) == 1, refusals


@pytest.mark.parametrize("levels", [1021, 1022, 1023])
def test_length_framed_raw_deep_argument_alike(levels: int) -> None:
    results = {}
    for m in ("depth_process", "depth_thread"):
        with deep_server() as (running, _):
            raw = Raw(running.server.port, features=["length-framing"])
            assert raw.length
            try:
                raw.call("a", m, f.nest(levels))
                try:
                    reply = raw.recv()
                    msg = reply.get("MESSAGE") or {}
                    results[m] = (reply.get("CODE"), msg.get("RESULT"), msg.get("EXCEPTION"))
                    raw.call("b", "ping")
                    assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
                except EOFError:
                    results[m] = ("closed",)
            finally:
                raw.close()
            with RPC(running.url, timeout=20) as rpc:
                assert rpc.ping_process() == "pong"
    assert results["depth_process"] == results["depth_thread"], results


@pytest.mark.logs_errors
def test_deep_response_metadata_refused_alike() -> None:
    server = Server(("127.0.0.1", 0), grace_period=1.0, max_workers=2)
    server.register_function("m_thread", executor="thread")(f.meta_deep)
    server.register_function("m_process", executor="process")(f.meta_deep)
    server.register_function("m_coro")(f.ameta_deep)
    got = {}
    with recording(), serving(server) as running, RPC(running.url, timeout=20) as rpc:
        for e in ("thread", "process", "coro"):
            m = f"m_{e}"
            with pytest.raises(MPRPCError) as info:
                rpc.method(m).call_with_metadata()
            got[e] = (info.value.code, str(info.value).replace(m, "M"))
    assert got["process"] == got["thread"] == got["coro"], got
