"""Review 20, part B: MPRPC 0.1 separator framing. Nothing whose encoding holds the
separator, or ends with a prefix of it that the appended separator completes, is sent:
the server answers 405, clients raise LocalProtocolError before sending."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from attacks_review18.test_review18 import Raw, recording, serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import LocalProtocolError, MPRPCError

from . import r20_funcs as f

pytestmark = pytest.mark.timeout(60)

SEP = f.SEP
BANG = SEP.replace("#", "!")  # "!!PRO-END!!": the handler turns "!" into "#"
TAILS = [BANG[:k] for k in range(1, 11)] + [BANG, BANG + "x", "!!PRO-END!!!"]
EXECUTORS = ["thread", "process", "coro"]


def framing_ok(encoded: bytes) -> bool:
    return (encoded + SEP.encode()).find(SEP.encode()) == len(encoded)


def new_server(**options: Any) -> Server:
    options.setdefault("grace_period", 1.0)
    options.setdefault("max_workers", 2)
    server = Server(("127.0.0.1", 0), **options)
    for e in ("thread", "process"):
        server.register_function(f"text_{e}", executor=e)(f.tail_text)
        server.register_function(f"err_{e}", executor=e)(f.raise_bang)
        server.register_function(f"errdata_{e}", executor=e)(f.raise_bang_data)
    server.register_function("text_coro")(f.tail_text)
    server.register_function("stream")(f.astream_tail)
    server.register_function("ping")(f.ping)
    server.register_function("echo")(f.text)
    server.register_function("rand", executor="thread")(f.random_with_sep)
    return server


@contextlib.contextmanager
def running_server(**options: Any) -> Iterator[Any]:
    server = new_server(**options)
    with recording() as codes, serving(server) as running:
        yield running, codes


def raw_reply_ok(reply: dict[str, Any], expected: Any) -> None:
    if reply["CODE"] != 200:
        assert reply["CODE"] == 405, reply
    else:
        assert reply["MESSAGE"]["RESULT"] == expected, reply


def rid(reply: dict[str, Any]) -> str:
    return reply["MESSAGE"]["ID"]


@pytest.mark.parametrize("debug", [False, True])
def test_raw_peer_results_ending_with_a_separator_prefix(debug: bool) -> None:
    with running_server(debug=debug) as (running, codes):
        raw = Raw(running.server.port)
        try:
            n = 0
            for e in ("thread", "process"):
                for tail in TAILS:
                    n += 1
                    raw.call(f"c{n}", f"text_{e}", tail)
                    reply = raw.recv()
                    assert rid(reply) == f"c{n}", reply
                    expected = "x" + tail.replace("!", "#")
                    if framing_ok(expected.encode()) and SEP not in expected:
                        assert reply["CODE"] == 200 and reply["MESSAGE"]["RESULT"] == expected
                    else:
                        assert reply["CODE"] == 405, (tail, reply)
            raw.call("last", "ping")
            assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
        finally:
            raw.close()
        assert codes.errors == [], codes.errors


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("kind", ["err", "errdata"])
def test_raw_peer_error_replies_with_separator_tails_arrive_whole(debug: bool, kind: str) -> None:
    with running_server(debug=debug) as (running, _):
        raw = Raw(running.server.port)
        try:
            n = 0
            for e in ("thread", "process"):
                for tail in TAILS:
                    n += 1
                    raw.call(f"c{n}", f"{kind}_{e}", tail)
                    reply = raw.recv()
                    assert rid(reply) == f"c{n}", (tail, reply)
                    assert reply["CODE"] in (404, 405), (tail, reply)
            raw.call("last", "ping")
            assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
        finally:
            raw.close()


def test_raw_peer_stream_item_with_separator_tail() -> None:
    with running_server() as (running, _):
        raw = Raw(running.server.port)
        try:
            for i, tail in enumerate(TAILS):
                raw.call(f"s{i}", "stream", tail)
                expected = "x" + tail.replace("!", "#")
                codes = []
                while True:
                    reply = raw.recv()
                    assert rid(reply) == f"s{i}", reply
                    codes.append(reply["CODE"])
                    if reply["CODE"] == 202 and reply["MESSAGE"]["RESULT"] == 3:
                        continue
                    if reply["CODE"] == 202 and reply["MESSAGE"]["RESULT"] == expected:
                        assert SEP not in expected and framing_ok(expected.encode()), reply
                    if reply["CODE"] not in (201, 202):
                        break
                assert codes[-1] in (206, 405), (tail, codes)
            raw.call("last", "ping")
            assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
        finally:
            raw.close()


@pytest.mark.parametrize("client", ["sync", "async"])
def test_separator_clients_get_405_or_value_and_stay_usable(client: str, loop: str) -> None:
    calls = [(f"text_{e}", t) for e in EXECUTORS for t in TAILS]
    with running_server() as (running, _):
        if client == "sync":
            out = []
            with RPC(running.url, timeout=20, features=()) as rpc:
                for m, t in calls:
                    try:
                        out.append(("value", rpc.method(m)(t)))
                    except MPRPCError as exc:
                        out.append((exc.code, type(exc).__name__))
                assert rpc.ping() == "pong"
        else:

            async def main() -> list[Any]:
                res = []
                async with AsyncRPC(running.url, timeout=20, features=()) as rpc:
                    for m, t in calls:
                        try:
                            res.append(("value", await rpc.method(m)(t)))
                        except MPRPCError as exc:
                            res.append((exc.code, type(exc).__name__))
                    assert await rpc.ping() == "pong"
                return res

            from review_fixtures import client_run

            out = client_run(loop, main())
    for (m, t), o in zip(calls, out, strict=True):
        expected = "x" + t.replace("!", "#")
        if SEP in expected or not framing_ok(msgpack.packb({"RESULT": expected})):
            assert o == (405, "ResultLimitError"), (m, t, o)
        else:
            assert o == ("value", expected), (m, t, o)


ARG_TAILS = ["##PRO-END", "##PRO-END#", "##PRO-END##", "a##PRO-END##b", "#"]


@pytest.mark.parametrize("where", ["arg", "kwarg", "method", "metadata_value", "metadata_key"])
def test_sync_client_refuses_to_send_separator_tails(where: str) -> None:
    with running_server() as (running, _), RPC(running.url, timeout=10, features=()) as rpc:
        for tail in ARG_TAILS:
            try:
                if where == "arg":
                    got = rpc.echo(tail)
                elif where == "kwarg":
                    got = rpc.echo(s=tail)
                elif where == "method":
                    got = rpc.method("echo" + tail)("x")
                elif where == "metadata_value":
                    got = rpc.echo.with_options(metadata={"k": tail})("x")
                else:
                    got = rpc.echo.with_options(metadata={tail: "v"})("x")
            except LocalProtocolError:
                assert tail != "#", where
            except MPRPCError as exc:
                # sent whole and answered (an unknown method)
                assert where == "method" and exc.code in (401, 402), (tail, exc)
            else:
                assert got in (tail, "x"), (where, tail, got)
            assert rpc.ping() == "pong"


@pytest.mark.parametrize("where", ["arg", "kwarg", "method"])
def test_async_client_refuses_to_send_separator_tails(where: str, loop: str) -> None:
    from review_fixtures import client_run

    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10, features=()) as rpc:
            for tail in ARG_TAILS:
                try:
                    if where == "arg":
                        got = await rpc.echo(tail)
                    elif where == "kwarg":
                        got = await rpc.echo(s=tail)
                    else:
                        got = await rpc.method("echo" + tail)("x")
                except LocalProtocolError:
                    assert tail != "#", where
                except MPRPCError as exc:
                    assert where == "method" and exc.code in (401, 402), (tail, exc)
                else:
                    assert got in (tail, "x"), (where, tail, got)
                assert await asyncio.wait_for(rpc.ping(), 10) == "pong"

    with running_server() as (running, _):
        client_run(loop, main(running.url))


@pytest.mark.parametrize("user", ["u##PRO-END", "u##PRO-END#", "u"])
@pytest.mark.parametrize("password", ["p##PRO-END", "p##PRO-END#", "p"])
def test_login_with_separator_tails(user: str, password: str) -> None:
    from urllib.parse import quote

    with running_server(auth=[(user, password)]) as (running, _):
        cred = f"{quote(user, safe='')}:{quote(password, safe='')}"
        url = f"tcp://{cred}@127.0.0.1:{running.server.port}"
        try:
            with RPC(url, timeout=10, features=()) as rpc:
                assert rpc.ping() == "pong"
        except LocalProtocolError:
            assert (user, password) != ("u", "p")
        except MPRPCError as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.sampled_from(["!", "!!", "PRO", "-", "END", "!!PRO-END", "!!PRO-END!!", "x", "P"]),
        max_size=8,
    ).map("".join)
)
def test_hypothesis_raw_results_from_separator_pieces(piece: str) -> None:
    global _SHARED
    running = _SHARED
    raw = Raw(running.server.port)
    try:
        raw.call("h", "text_thread", piece)
        reply = raw.recv()
        expected = "x" + piece.replace("!", "#")
        assert rid(reply) == "h"
        if reply["CODE"] != 200:
            assert reply["CODE"] == 405, reply
            assert SEP in expected or not framing_ok(expected.encode()), reply
        else:
            assert reply["MESSAGE"]["RESULT"] == expected
        raw.call("p", "ping")
        assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
    finally:
        raw.close()


_SHARED: Any = None


@pytest.fixture(autouse=True, scope="module")
def shared_server() -> Iterator[None]:
    global _SHARED
    server = new_server()
    with serving(server) as running:
        _SHARED = running
        yield


@pytest.mark.parametrize("tail", TAILS)
def test_json_debug_client_with_separator_framing(tail: str) -> None:
    """`RPC(..., debug=True, features=())`: JSON payloads, separator framing."""
    expected = "x" + tail.replace("!", "#")
    with (
        running_server() as (running, _),
        RPC(running.url, timeout=10, features=(), debug=True) as rpc,
    ):
        try:
            got = rpc.text_thread(tail)
        except MPRPCError as exc:
            assert exc.code == 405, repr(exc)
            assert SEP in expected, expected
        else:
            assert got == expected
        # JSON closes the string, then the map: only a whole separator is refused
        assert rpc.echo("##PRO-END") == "##PRO-END"
        with pytest.raises(LocalProtocolError):
            rpc.echo("a##PRO-END##b")
        assert rpc.ping() == "pong"


@pytest.mark.parametrize("compression", ["zlib", "bz2", "lzma"])
def test_compressed_separator_framing_both_ways(compression: str) -> None:
    """Incompressible bytes with the separator inside stay raw in the compressed
    payload: the client refuses to send them, the server answers 405."""
    with (
        running_server() as (running, codes),
        RPC(running.url, timeout=10, features=(), compression=compression) as rpc,
    ):
        for seed in range(3):
            for tail_only in (False, True):
                value = f.random_with_sep(seed, tail_only)
                with contextlib.suppress(LocalProtocolError):
                    assert rpc.echo(value) == value
                try:
                    assert rpc.rand(seed, tail_only) == value
                except MPRPCError as exc:
                    assert exc.code == 405, repr(exc)
                assert rpc.ping() == "pong"
        assert codes.errors == [], codes.errors


@pytest.mark.parametrize("id", ["s##PRO-END", "s##PRO-END#"])
def test_stream_call_id_ending_with_separator_prefix_is_405(id: str) -> None:
    with running_server() as (running, _):
        raw = Raw(running.server.port)
        try:
            raw.call(id, "stream", "ab")
            reply = raw.recv()
            assert rid(reply) == id
            raw.call("p", "ping")
            assert raw.recv()["MESSAGE"]["RESULT"] == "pong"
        finally:
            raw.close()
        assert (reply["CODE"], reply["MESSAGE"].get("EXCEPTION")) == (405, "ResultLimitError"), (
            reply
        )


@pytest.mark.parametrize("id", ["d##PRO-END", "d##PRO-END#"])
def test_plain_call_ids_ending_with_separator_prefix_are_answered(id: str) -> None:
    with running_server() as (running, _):
        raw = Raw(running.server.port)
        try:
            raw.call(id, "text_thread", "x")
            assert raw.recv()["MESSAGE"] == {"ID": id, "RESULT": "xx"}
            raw.call(id, "err_thread", "x")
            assert raw.recv()["CODE"] == 404
            raw.call(id, "ping", RETURN=False)
            raw.call("g", "system.getresult", id, KWARGS={})
            assert raw.recv()["MESSAGE"] == {"ID": "g", "RESULT": "pong"}
        finally:
            raw.close()


@pytest.mark.parametrize("client", ["sync", "async"])
def test_separator_clients_stream_items_with_tails(client: str, loop: str) -> None:
    from review_fixtures import client_run

    def expect(tail: str, got: Any) -> None:
        item = "x" + tail.replace("!", "#")
        if SEP in item or not framing_ok(msgpack.packb(item)):
            assert got[0] == [1] and got[1] == 405, (tail, got)
        else:
            assert got == ([1, item, 3], None), (tail, got)

    with running_server() as (running, _):
        if client == "sync":
            with RPC(running.url, timeout=20, features=()) as rpc:
                for tail in TAILS:
                    items: list[Any] = []
                    code = None
                    try:
                        for item in rpc.stream(tail):
                            items.append(item)
                    except MPRPCError as exc:
                        code = exc.code
                    expect(tail, (items, code))
                assert rpc.ping() == "pong"
            return

        async def main() -> None:
            async with AsyncRPC(running.url, timeout=20, features=()) as rpc:
                for tail in TAILS:
                    items: list[Any] = []
                    code = None
                    try:
                        async for item in await rpc.stream(tail):
                            items.append(item)
                    except MPRPCError as exc:
                        code = exc.code
                    expect(tail, (items, code))
                assert await rpc.ping() == "pong"

        client_run(loop, main())
