"""0.0.3 servers, deprecation warnings, odd addresses, IPv6, ports, TLS mismatches."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from .fake import HANG, FakeServer, Peer, both, both_at, echo_server

sys.path.insert(0, str(Path(__file__).parent.parent))


def old_server(peer: Peer) -> None:
    """A 0.0.3 server: no FEATURES, separator framing; s(n) streams, bad() is 404,
    old() is a deprecated 300 result, olds() a deprecated 301 stream."""
    if peer.login(features="old") is None:
        return
    while (call := peer.next_call()) is not None:
        cid, m = call["ID"], call["METHOD"]
        if m in ("s", "olds"):
            peer.send({"MPRPC": "0.1", "CODE": 201 if m == "s" else 301, "MESSAGE": {"ID": cid}})
            for i in range(call["ARGS"][0]):
                peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": cid, "RESULT": i}})
            peer.send({"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": cid}})
        elif m == "bad":
            peer.send(
                {
                    "MPRPC": "0.1",
                    "CODE": 404,
                    "MESSAGE": {"ID": cid, "EXCEPTION": "ZeroDivisionError", "MESSAGE": "boom"},
                }
            )
        elif m == "old":
            peer.reply(call, 7, code=300)
        else:
            peer.reply(call, call.get("ARGS"))


@pytest.mark.timeout(40)
def test_old_server_works() -> None:
    def sync(rpc: Any) -> Any:
        out: list[Any] = [rpc.f(1), list(rpc.s(3))]
        try:
            rpc.bad()
        except Exception as e:  # noqa: BLE001
            out.append((type(e).__name__, getattr(e, "exception", None)))
        out.append(rpc.f.with_options(timeout=2)(2))
        return out

    async def act(rpc: Any) -> Any:
        out: list[Any] = [await rpc.f(1), [i async for i in await rpc.s(3)]]
        try:
            await rpc.bad()
        except Exception as e:  # noqa: BLE001
            out.append((type(e).__name__, getattr(e, "exception", None)))
        out.append(await rpc.f.with_options(timeout=2)(2))
        return out

    a, b = both(old_server, sync, act, limit=8)
    assert a == ("ok", [[1], [0, 1, 2], ("RPCRuntimeError", "ZeroDivisionError"), [2]]), a
    assert b == a, (a, b)


@pytest.mark.timeout(40)
def test_deprecation_warnings_point_at_user_line() -> None:
    here = __file__

    def sync(rpc: Any) -> Any:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            rpc.old()  # LINE-SYNC-300
            list(rpc.olds(1))  # LINE-SYNC-301
        return [(x.category.__name__, Path(x.filename).name, x.lineno) for x in w]

    async def act(rpc: Any) -> Any:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            await rpc.old()  # LINE-ASYNC-300
            [i async for i in await rpc.olds(1)]  # LINE-ASYNC-301
        return [(x.category.__name__, Path(x.filename).name, x.lineno) for x in w]

    src = Path(here).read_text().splitlines()
    line = {
        tag: n + 1
        for n, t in enumerate(src)
        for tag in ["LINE-SYNC-300", "LINE-SYNC-301", "LINE-ASYNC-300", "LINE-ASYNC-301"]
        if t.rstrip().endswith("# " + tag)
    }
    a, b = both(old_server, sync, act, limit=8)
    name = Path(here).name
    assert a == (
        "ok",
        [
            ("ExpireWarning", name, line["LINE-SYNC-300"]),
            ("ExpireStreamWarning", name, line["LINE-SYNC-301"]),
        ],
    ), a
    assert b == (
        "ok",
        [
            ("ExpireWarning", name, line["LINE-ASYNC-300"]),
            ("ExpireStreamWarning", name, line["LINE-ASYNC-301"]),
        ],
    ), b


CREDS = [
    ("at", "a%40b:p%40ss", ("a@b", "p@ss")),
    ("colon", "u%3Ax:p%3Aw", ("u:x", "p:w")),
    ("percent", "u%25:p%25", ("u%", "p%")),
    ("unicode", "%C3%BCser:p%C3%A4ss", ("üser", "päss")),
    ("raw-unicode", "üser:päss", ("üser", "päss")),
    ("raw-colon-in-password", "u:p:w", ("u", "p:w")),
    ("raw-at-in-password", "u:p@ss", ("u", "p@ss")),
    ("empty-password", "u:", ("u", "")),
    ("user-only", "u", ("u", None)),
]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("userinfo,expected", [c[1:] for c in CREDS], ids=[c[0] for c in CREDS])
def test_odd_credentials_reach_server_intact(userinfo: str, expected: Any) -> None:
    with FakeServer(echo_server()) as s:
        a, b = both_at(s.url(userinfo + "@"), limit=6)
        seen = [
            (p.received[0]["AUTH"]["USERNAME"], p.received[0]["AUTH"]["PASSWORD"])
            for p in s.peers
            if p.received
        ]
    assert a == b, (a, b)
    if a[0] == "ok":
        assert seen == [expected, expected], seen
    else:  # refused: must be a clear ValueError-like error before connecting
        assert isinstance(a, tuple) and a[0] not in ("TypeError", "KeyError", "IndexError"), a
        assert not seen, seen


@pytest.mark.timeout(40)
def test_ipv6_loopback() -> None:
    try:
        s = FakeServer(echo_server(), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with s:

        async def act(rpc: Any) -> Any:
            return await rpc.f(1)

        for url in (s.url(), s.url("u:p@")):
            a, b = both_at(url, lambda rpc: rpc.f(1), act, limit=6)
            assert a == ("ok", [1]) and b == a, (url, a, b)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("port", ["70000", "65536", "-1", "abc", "", "0", "1.5"])
def test_bad_ports_clear_and_same(port: str) -> None:
    a, b = both_at(f"tcp://127.0.0.1:{port}", limit=6, connect_timeout=2)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] not in ("OverflowError", "TypeError", "KeyError", "IndexError", "gaierror"), a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_refused_connection_same() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    a, b = both_at(f"tcp://127.0.0.1:{port}", limit=6)
    assert a[0] == "ConnectionLostError", a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_tls_client_to_plain_server() -> None:
    """A TLS client reaching a plain MPRPC server that answers garbage and closes."""

    def script(peer: Peer) -> None:
        peer.sock.settimeout(3)
        try:
            peer.sock.recv(4096)  # the ClientHello
        except OSError:
            return
        peer.send_raw(b"\x83\xa5MPRPC\xa30.1" + b"##PRO-END##")

    with FakeServer(script) as s:
        a, b = both_at(s.url().replace("tcp://", "tls://"), limit=6, connect_timeout=2)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] == "ConnectionLostError", a
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_tls_client_to_silent_plain_server() -> None:
    """The plain server just waits for a separator that never comes."""

    def script(peer: Peer) -> None:
        peer.recv(timeout=8)

    with FakeServer(script) as s:
        t0 = time.monotonic()
        a, b = both_at(s.url().replace("tcp://", "tls://"), limit=6, connect_timeout=1)
        took = time.monotonic() - t0
    assert a != HANG and b != HANG, (a, b)
    assert a[0] == "ConnectionLostError" and b[0] == "ConnectionLostError", (a, b)
    assert took < 6, took


@pytest.mark.timeout(60)
def test_plain_client_to_tls_server(tmp_path: Path) -> None:
    from helpers import tls_contexts

    server_ctx, _ = tls_contexts(tmp_path)

    def tls_server(peer: Peer) -> None:
        """Expects a TLS handshake: the plain client's auth request is no ClientHello."""
        peer.sock.settimeout(3)
        with contextlib.suppress(OSError):  # ssl.SSLError too: the handshake fails
            server_ctx.wrap_socket(peer.sock, server_side=True)

    a, b = both(tls_server, limit=8, connect_timeout=2)
    assert a != HANG and b != HANG, (a, b)
    assert a[0] in ("ConnectionLostError", "ProtocolSyntaxException", "ProtocolException"), a
    assert a == b, (a, b)
