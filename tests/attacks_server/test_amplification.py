"""Decoding bombs: deep nesting and memory amplification, before and after auth."""

from __future__ import annotations

import contextlib
import socket
import time
import zlib

import msgpack
import pytest

from .kit import SEP, Raw, Srv, code, pack

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20


def still_serves(port: int) -> None:
    with Raw(port, timeout=5) as c:
        assert code(c.login()) == 100
        assert c.rpc("echo", 1)["MESSAGE"]["RESULT"] == 1


@pytest.mark.parametrize("enc", ["msgpack", "json"])
@pytest.mark.parametrize("when", ["pre_auth", "post_auth"])
def test_deep_nesting(enc: str, when: str) -> None:
    depth = 200_000
    if enc == "json":
        args = b"[" * depth + b"]" * depth
        msg = b'{"MPRPC":"0.1","ID":"d","METHOD":"echo","ARGS":[' + args + b"]}"
        auth = b'{"MPRPC":"0.1","AUTH":{"USERNAME":null,"PASSWORD":null},"X":' + args + b"}"
    else:
        args = b"\x91" * depth + b"\x90"
        msg = pack({"MPRPC": "0.1", "ID": "d", "METHOD": "echo"})[: -0 or None]
        msg = (
            b"\x84"
            + pack("MPRPC")
            + pack("0.1")
            + pack("ID")
            + pack("d")
            + pack("METHOD")
            + pack("echo")
        )
        msg += pack("ARGS") + b"\x91" + args
        auth = (
            b"\x83"
            + pack("MPRPC")
            + pack("0.1")
            + pack("AUTH")
            + pack({"USERNAME": None, "PASSWORD": None})
        )
        auth += pack("X") + args
    with Srv(max_message_size=4 * MiB) as s, Raw(s.port, timeout=10, enc=enc) as c:
        if when == "pre_auth":
            c.send_raw(auth + SEP)
        else:
            c.login()
            c.send_raw(msg + SEP)
        try:
            r = c.recv()
            assert code(r) in (400, 402, 404, 405, 505, 506, 100), r
        except EOFError:
            pytest.fail("connection dropped without an answer")
        assert s.alive(), "server process died"
        still_serves(s.port)


def test_unauth_memory_amplification() -> None:
    """One unauthenticated peer sends an auth message padded with 4 million small ints: the
    server should not decode what it cannot use into many times max_message_size."""
    limit = 4 * MiB
    n = limit - 200
    pad = b"\xdd" + n.to_bytes(4, "big") + b"\x00" * n  # array32 of n fixint zeros
    auth = (
        b"\x83"
        + pack("MPRPC")
        + pack("0.1")
        + pack("AUTH")
        + pack({"USERNAME": None, "PASSWORD": None})
    )
    auth += pack("X") + pad
    assert len(auth) <= limit
    with Srv(max_message_size=limit) as s:
        time.sleep(0.5)
        base = s.hwm()
        socks = []
        for _ in range(1):
            k = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            # The server may refuse the message (over max_auth_message_size) and close
            # before it is all sent: a reset here is that refusal, not a failure.
            with contextlib.suppress(OSError):
                k.sendall(auth + SEP)
            socks.append(k)
        for k in socks:
            k.settimeout(10)
            with contextlib.suppress(OSError):
                k.recv(100)
            k.close()
        grown = s.hwm() - base
        print(f"1 unauth peer x {limit / MiB:.0f} MiB messages: peak RSS +{grown / MiB:.0f} MiB")
        assert grown < limit * 4, (
            f"amplification {grown / limit:.1f}x max_message_size for one peer"
        )
        still_serves(s.port)


def test_zlib_bomb_after_auth() -> None:
    with Srv(max_message_size=1 * MiB) as s, Raw(s.port, timeout=10) as c:
        comp = zlib.compress
        c.encode = lambda m: comp(pack(m))  # type: ignore[method-assign]
        c.decode = lambda b: msgpack.unpackb(zlib.decompress(b), raw=False)  # type: ignore[method-assign]
        assert code(c.login()) == 100
        bomb = pack({"MPRPC": "0.1", "ID": "b", "METHOD": "echo", "ARGS": ["a" * (50 * MiB)]})
        c.send_raw(zlib.compress(bomb, 9) + SEP)
        r = c.recv()
        assert code(r) == 505, r
        still_serves(s.port)
