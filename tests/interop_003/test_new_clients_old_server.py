"""Today's clients (`pymprpc.client.RPC`, `AsyncRPC`) against the REAL pymprpc 0.0.3
server.

0.0.3's server does not serve on Python 3.8+ (pinned below); it runs unmodified on the
legacy venv (Python 3.6, else 3.7), in a subprocess (old_server_driver.py).

0.0.3's server answers a call only if the request says `"RETURN": true`
(`with_return = request.get("RETURN")`; absent means "keep the result for getresult").
Today's clients send it on every call to a peer that negotiated nothing (they left it
out before: no call was ever answered).
"""

from __future__ import annotations

import asyncio
import time
import warnings

import msgpack
import pytest

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import (
    ConnectionLostError,
    DeadlineExceeded,
    LocalProtocolError,
    LoginError,
    NotFindError,
    ParamError,
    RemoteProtocolError,
    RPCRuntimeError,
    UnsupportSysMethodError,
)
from pymprpc.services import list_services

pytestmark = pytest.mark.timeout(60)


def test_003_server_cannot_serve_on_modern_python(modern):
    """0.0.3 limitation. On Python 3.8+ its protocol class (a StreamReaderProtocol
    subclass) sets `self._stream_reader = None`, now a read-only property: every accepted
    connection fails in the protocol factory and is reset (asyncio reports that only in
    debug mode). Also, without `func_executor=` it passes None to
    `loop.set_default_executor`, which 3.11 refuses."""
    default = modern.run_server_driver({"probe_protocol": True})
    assert "TypeError: executor must be ThreadPoolExecutor instance" in default.stderr
    threads = modern.run_server_driver({"probe_protocol": True, "executor": "thread"})
    assert threads.stdout.startswith("PROTOCOL FAILED"), threads.stdout + threads.stderr
    assert "self._stream_reader = None" in threads.stdout
    assert "AttributeError: property '_stream_reader'" in threads.stdout


def test_003_server_on_modern_python_resets_connections(modern, old_server):
    server = old_server(venv=modern, executor="thread")
    with pytest.raises(ConnectionLostError, match=r"lost|closed"):
        RPC(server.url(), connect_timeout=5).connect()


# ------------------------- RETURN: true, which 0.0.3's server needs -------------------------


def test_call_is_answered(old_server):
    server = old_server()
    with RPC(server.url(), timeout=2) as rpc:
        assert rpc.testfunc(1, 2) == 3


def test_stream_is_answered(old_server):
    server = old_server()
    with RPC(server.url(), timeout=2) as rpc:
        assert list(rpc.testcorogen(1, 2)) == list(range(3, 13))


def test_async_call_is_answered(old_server):
    server = old_server()

    async def main() -> int:
        async with AsyncRPC(server.url(), timeout=2) as rpc:
            return await rpc.testcoro(1, 2)

    assert asyncio.run(main()) == 3


def test_call_is_answered_with_features_off(old_server):
    """features=() (exactly 0.0.3's auth request): calls carry RETURN too."""
    server = old_server()
    with RPC(server.url(), timeout=2, features=()) as rpc:
        assert rpc.testfunc(1, 2) == 3


def _raw_call(port: int, call: dict) -> object:
    """Log in as admin and send one call by hand; the reply, or "no reply"."""
    import socket

    sep = b"##PRO-END##"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        buf = b""

        def send(msg: dict) -> None:
            sock.sendall(msgpack.packb(msg, use_bin_type=True) + sep)

        def recv() -> object:
            nonlocal buf
            while sep not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            frame, _, buf = buf.partition(sep)
            return msgpack.unpackb(frame, raw=False)

        send({"MPRPC": "0.1", "AUTH": {"USERNAME": "admin", "PASSWORD": "admin"}})
        assert recv()["CODE"] == 100
        send({"MPRPC": "0.1", "ID": "x-1", **call})
        sock.settimeout(1.5)
        try:
            return recv()
        except TimeoutError:
            return "no reply"


def test_003_server_needs_return_true(old_server):
    """Why the clients send RETURN: true to a peer that negotiated nothing (it pins 0.0.3's
    server)."""
    server = old_server()
    without = _raw_call(server.port, {"METHOD": "testfunc", "ARGS": [1, 2]})
    assert without == "no reply"
    with_return = _raw_call(server.port, {"METHOD": "testfunc", "ARGS": [1, 2], "RETURN": True})
    assert with_return["CODE"] == 200 and with_return["MESSAGE"]["RESULT"] == 3


# --------------------------------- login (no calls needed) ------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [("admin", "wrong"), (None, None)],
    ids=["wrong-password", "no-credentials"],
)
def test_login_refused(old_server, user, password):
    server = old_server()
    with pytest.raises(LoginError, match="authentication failed"):
        RPC(server.url(user, password), connect_timeout=5).connect()


def test_login_accepted(old_server):
    server = old_server()
    with RPC(server.url()) as rpc:
        assert rpc.connected


def test_anonymous_login_to_an_anonymous_003_server_hangs(old_server):
    """0.0.3 limitation: with no account configured (auth=[]) its server never answers an
    anonymous login; the client gives up after connect_timeout."""
    server = old_server(auth=[])
    started = time.monotonic()
    with pytest.raises(ConnectionLostError):
        RPC(server.url(None), connect_timeout=1).connect()
    assert time.monotonic() - started >= 0.9


def test_no_welcome_reply_is_not_reported_as_could_not_connect(old_server):
    server = old_server(auth=[])
    with pytest.raises(ConnectionLostError) as caught:
        RPC(server.url(None), connect_timeout=1).connect()
    assert "could not connect" not in str(caught.value), str(caught.value)


# --------------------------------- beyond the RETURN bug --------------------------------


@pytest.mark.parametrize(
    ("server_options", "client_options"),
    [
        ({}, {}),
        ({"debug": True}, {"debug": True}),
        ({"compreser": "zlib"}, {"compression": "zlib"}),
        ({"compreser": "bz2", "debug": True}, {"compreser": "bz2", "debug": True}),
        ({"compreser": "lzma"}, {"compression": "lzma"}),
    ],
    ids=["msgpack", "json", "zlib", "bz2-json", "lzma"],
)
def test_usage_page_blocking_example(old_server, server_options, client_options):
    """The usage page's blocking example; 0.0.3's server is configured for one encoding
    and compression, and the client must match it (it does not detect)."""
    server = old_server(**server_options)
    with RPC(server.url(), timeout=10, **client_options) as rpc:
        assert "testclasscorogen" in rpc.system.listMethods()
        assert rpc.system.methodSignature("testclassmethod") == "(a, b)"
        assert rpc.system.methodHelp("testfunc") == "有help"
        assert rpc.system.methodHelp("nosuch") == ""  # 0.0.3: no error for unknown names
        assert rpc.system.lenConnections() >= 1
        assert rpc.system.lenUndoneTasks() >= 1
        assert rpc.testclassmethod(1, 2) == 3
        assert rpc.testclasscoro(2, 3) == 5
        assert rpc.testcoro(5, 6) == 11
        assert rpc.testfunc(5, 4) == 9
        assert list(rpc.testcorogen(1, 2)) == list(range(3, 13))
        assert list(rpc.testclasscorogen(1, 2)) == list(range(3, 13))


def test_usage_page_async_example(old_server):
    server = old_server()

    async def main() -> None:
        async with AsyncRPC(server.url(), timeout=10, heart_beat=40) as rpc:
            assert "testclasscorogen" in await rpc.system.listMethods()
            assert await rpc.system.methodSignature("testclassmethod") == "(a, b)"
            assert await rpc.system.methodHelp("testfunc") == "有help"
            assert await rpc.testclassmethod(1, 2) == 3
            assert await rpc.testclasscoro(2, 3) == 5
            assert await rpc.testcoro(5, 6) == 11
            assert await rpc.testfunc(5, 4) == 9
            assert [i async for i in await rpc.testcorogen(1, 2)] == list(range(3, 13))
            many = await asyncio.gather(*(rpc.testcoro(i, 1) for i in range(50)))
            assert many == [i + 1 for i in range(50)]

    asyncio.run(main())


def test_arguments_and_values(old_server):
    server = old_server()
    values = [
        "héllo wörld ✓ 中文 😀",
        "",
        {"a": [1, {"b": [None, True, False]}], "e": {}},
        [1, "two", 3.5, None],
        None,
        True,
        0.1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0,
        -1,
        list(range(20)),
    ]
    with RPC(server.url(), timeout=10) as rpc:
        assert [rpc.kw(1), rpc.kw(1, b=5), rpc.kw(a=1, c=9)] == [[1, 2, 3], [1, 5, 3], [1, 2, 9]]
        for value in values:
            assert rpc.echo(value) == value
        assert sum(rpc.testfunc(i, 1) for i in range(300)) == sum(i + 1 for i in range(300))


def test_str_and_bytes(old_server):
    """0.0.3 limitations: its server receives bytes as bytes (bin) but packs every bytes
    result as raw (no bin type in msgpack < 1's default), so bytes come back as str; and
    bytes that are not UTF-8 cannot be read back at all: the client drops the connection
    with RemoteProtocolError (0.0.3's own clients fail to decode it as well)."""
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        assert rpc.typeof(b"abc") == ["bytes", "abc"]
        assert rpc.echo(b"abc") == "abc"
        assert rpc.make_bytes("abc") == "abc"
        with pytest.raises(RemoteProtocolError, match="utf-8"):
            rpc.echo(b"\x00\xff")
        with pytest.raises(ConnectionLostError, match="not connected"):
            rpc.testfunc(1, 2)


def test_call_errors(old_server):
    """0.0.3's server names its own exception class in EXCEPTION ("<class
    'pymprpc.errors.RPCRuntimeError'>") and the method's exception only in MESSAGE; the
    codes map to the same exception classes."""
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        with pytest.raises(RPCRuntimeError, match="Error:ValueError happend in method boom"):
            rpc.boom("kaput")
        with pytest.raises(NotFindError, match='method "nosuch" is not supported'):
            rpc.nosuch(1)
        with pytest.raises(ParamError, match="args can not bind to method testfunc"):
            rpc.testfunc(1)
        # 0.0.3's server has no 406: an unknown system.* name is 401 like any other.
        with pytest.raises(NotFindError, match=r"system\.nosuch"):
            rpc.system.nosuch()
        assert rpc.testfunc(1, 2) == 3


def test_list_services_on_a_003_server_raises_unsupported(old_server):
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc, pytest.raises(UnsupportSysMethodError):
        list_services(rpc)


def test_delay_notify_and_deadlines(old_server):
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        assert rpc.system.getresult(rpc.delay("testcoro", 1, 2)) == 3
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert rpc.notify("testcoro", 1, 2) is None  # RETURN false: nothing comes back
        # No `deadline` feature: enforced locally, the server's call runs on.
        with pytest.raises(DeadlineExceeded):
            rpc.sleep.with_options(timeout=0.3)(2)
        assert rpc.testfunc(1, 2) == 3


def test_stream_that_fails_runs_into_the_deadline(old_server):
    """0.0.3 limitation: its server sends nothing when a generator raises part-way; only
    the client's deadline ends the wait. The connection goes on."""
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        got = []
        with pytest.raises(DeadlineExceeded):
            for item in rpc.slow_count_then_fail.with_options(timeout=1)(3):
                got.append(item)
        assert got == [0, 1, 2]
        assert rpc.testfunc(1, 2) == 3


def test_big_values(old_server):
    """A 1 MB result works. 0.0.3 limitation: its server reads with an asyncio
    StreamReader's default 64 KiB limit: a longer request kills its reader for that
    connection, and only deadlines end the client's waits."""
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        assert len(rpc.big(1_000_000)) == 1_000_000
        assert rpc.size("y" * 60_000) == 60_000
        with pytest.raises(DeadlineExceeded):
            rpc.size.with_options(timeout=1)("y" * 70_000)
        with pytest.raises(DeadlineExceeded):
            rpc.testfunc.with_options(timeout=1)(1, 2)


def test_separator_in_values(old_server):
    """The client refuses to send an argument holding ##PRO-END## (LocalProtocolError).
    0.0.3 limitation: its server frames a result holding it as is; the client sees
    garbage and drops the connection (RemoteProtocolError)."""
    server = old_server()
    with RPC(server.url(), timeout=10) as rpc:
        with pytest.raises(LocalProtocolError, match="separator"):
            rpc.echo("a##PRO-END##b")
        assert rpc.testfunc(1, 2) == 3
        with pytest.raises(RemoteProtocolError):
            rpc.with_separator()


@pytest.mark.parametrize("heart_beat", [None, 0.3], ids=["reconnects", "heartbeat"])
def test_idle_timeout(old_server, heart_beat):
    """0.0.3's server closes an idle connection (504); without heart_beat the next call
    connects again transparently, with it the connection stays open."""
    server = old_server(timeout=1)

    async def main() -> list[int]:
        async with AsyncRPC(server.url(), timeout=10, heart_beat=heart_beat) as rpc:
            first = await rpc.testcoro(1, 2)
            await asyncio.sleep(2)
            return [first, await rpc.testcoro(2, 3), await rpc.testcoro(3, 4)]

    assert asyncio.run(main()) == [3, 5, 7]
    closed = server.stderr().count("KeepAlive Timeout")
    assert closed == (1 if heart_beat is None else 0), server.stderr()[-2000:]
