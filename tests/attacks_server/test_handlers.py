"""Contract 2: no handler can take the server down or wedge it."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest

from .kit import Raw, Srv, code

pytestmark = pytest.mark.timeout(60)

NASTY = [
    "sysexit",
    "sysexit_inline",
    "kbint",
    "kbint_inline",
    "akbint",
    "asysexit",
    "acancel",
    "tcancel",
    "abase",
    "tbase",
    "agenexit",
    "ret_set",
    "ret_dt",
    "ret_obj",
    "ret_rec",
    "ret_bigint",
]


@pytest.fixture(scope="module")
def srv():
    with Srv() as s:
        yield s


@pytest.mark.parametrize("method", NASTY)
def test_nasty_handler_fails_only_its_call(srv: Srv, method: str) -> None:
    with Raw(srv.port) as c, Raw(srv.port) as other:
        assert code(c.login()) == 100
        assert code(other.login()) == 100
        c.call("n1", method)
        r = c.recv()
        assert 400 <= code(r) < 500, r
        assert r["MESSAGE"]["ID"] == "n1"
        assert r["MESSAGE"].get("EXCEPTION"), r
        # same connection still works
        assert c.rpc("echo", 7, id="n2")["MESSAGE"]["RESULT"] == 7
        assert other.rpc("echo", 8, id="o1")["MESSAGE"]["RESULT"] == 8
    assert srv.alive()


@pytest.mark.parametrize("method", ["acancel", "tcancel"])
def test_stray_cancellederror_is_407_with_cancel(srv: Srv, method: str) -> None:
    with Raw(srv.port) as c:
        c.login(features=["cancel", "length-framing"])
        c.call("c1", method)
        r = c.recv()
        assert code(r) in (404, 407), r
        # ID free again
        assert c.rpc("echo", 1, id="c1")["MESSAGE"]["RESULT"] == 1


def test_agen_raises_mid_stream(srv: Srv) -> None:
    with Raw(srv.port) as c:
        c.login()
        c.call("s1", "agen_raise", 3)
        codes = [code(c.recv()) for _ in range(5)]
        assert codes == [201, 202, 202, 202, 404], codes
        assert c.rpc("echo", 1, id="s2")["MESSAGE"]["RESULT"] == 1


def test_agen_sysexit_mid_stream(srv: Srv) -> None:
    with Raw(srv.port) as c:
        c.login()
        c.call("s1", "agen_sysexit", 2)
        codes = [code(c.recv()) for _ in range(4)]
        assert codes == [201, 202, 202, 404], codes
        assert c.rpc("echo", 1, id="s2")["MESSAGE"]["RESULT"] == 1
    assert srv.alive()


def test_agen_unencodable_item(srv: Srv) -> None:
    with Raw(srv.port) as c:
        c.login()
        c.call("s1", "agen_bad_item", 1)
        rs = [c.recv() for _ in range(3)]
        codes = [code(r) for r in rs]
        assert codes[:2] == [201, 202], rs
        assert 400 <= codes[2] < 500 and rs[2]["MESSAGE"]["ID"] == "s1", rs
        assert c.rpc("echo", 1, id="s2")["MESSAGE"]["RESULT"] == 1


def test_nan_in_json_mode_is_valid_json_or_error(srv: Srv) -> None:
    """A JSON (debug) client must never receive non-JSON (NaN/Infinity literals)."""
    for m in ("ret_nan", "ret_inf"):
        with Raw(srv.port, enc="json") as c:
            assert code(c.login()) == 100
            c.call("j1", m)
            raw = c.recv_frame()

            def bad(x: str, raw: bytes = raw) -> None:
                raise ValueError(f"non-JSON constant {x} in reply {raw!r}")

            r = json.loads(raw, parse_constant=bad)
            assert code(r) in (200, 404, 405) or 400 <= code(r) < 500


def test_bytes_in_json_mode(srv: Srv) -> None:
    with Raw(srv.port, enc="json") as c:
        c.login()
        c.call("j1", "ret_bytes")
        r = c.recv()
        assert 400 <= code(r) < 500 and r["MESSAGE"]["ID"] == "j1", r
        assert c.rpc("echo", 1, id="j2")["MESSAGE"]["RESULT"] == 1


def test_generator_ignoring_generatorexit_cancel_then_connection_works(srv: Srv) -> None:
    with Raw(srv.port) as c:
        c.login(features=["cancel", "length-framing"])
        c.call("g1", "agen_ignore_exit")
        assert code(c.recv()) == 201
        c.recv()
        c.send({"MPRPC": "0.1", "ID": "g1", "CANCEL": True})
        c.call("e1", "echo", 5)
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "echo never answered after cancel"
            r = c.recv()
            if r["MESSAGE"]["ID"] == "e1":
                assert r["MESSAGE"]["RESULT"] == 5
                break
    # another client still fine
    with Raw(srv.port) as o:
        o.login()
        assert o.rpc("echo", 2)["MESSAGE"]["RESULT"] == 2


def _start(port: int, method: str, *args: object, features: list[str] | None = None) -> Raw:
    c = Raw(port)
    c.login(features=features)
    c.call("w1", method, *args)
    return c


@pytest.mark.parametrize(
    "method,args",
    [("never", ()), ("never_shielded", ()), ("agen_ignore_exit", ()), ("aendless", ())],
)
def test_graceful_shutdown_within_grace(method: str, args: tuple) -> None:
    with Srv(grace_period=1) as s:
        c = _start(s.port, method, *args)
        time.sleep(0.3)
        took, rc = s.stop(timeout=10)
        assert rc is not None, "server did not exit within 10 s (grace 1 s)"
        assert took < 4, f"shutdown took {took:.1f}s with grace 1s"
        c.close()
        if method == "never_shielded":
            assert "abandoning 1 call(s) that ignored cancellation" in s.stderr()


def test_shutdown_with_thread_call_stops_serving() -> None:
    """A thread-pool call can't be interrupted, but the server must stop serving in time."""
    with Srv(grace_period=1) as s:
        c = _start(s.port, "tsleep", 3)  # outlasts grace 1 s and the checks below
        time.sleep(0.3)
        t0 = time.monotonic()
        s.proc.send_signal(15)
        # the caller must be answered (503) or the connection closed within grace + slack
        c.sock.settimeout(4)
        try:
            r = c.recv()
            assert code(r) == 503, r
        except EOFError:
            pass
        assert time.monotonic() - t0 < 4
        # not accepting any more
        time.sleep(0.5)
        with pytest.raises(OSError):
            x = socket.create_connection(("127.0.0.1", s.port), timeout=1)
            x.settimeout(1)
            x.sendall(b"\x80" + b"##PRO-END##")
            if x.recv(10) == b"":
                raise OSError("closed")
        c.close()
        s.proc.wait(10)


def test_many_nasty_calls_pipelined_then_server_ok(srv: Srv) -> None:
    with Raw(srv.port) as c:
        c.login()
        for i, m in enumerate(NASTY * 5):
            c.call(f"p{i}", m)
        got = {}
        for _ in range(len(NASTY) * 5):
            r = c.recv()
            got[r["MESSAGE"]["ID"]] = code(r)
        assert len(got) == len(NASTY) * 5
        assert all(400 <= v < 500 for v in got.values()), got
        assert c.rpc("echo", 1, id="z")["MESSAGE"]["RESULT"] == 1
    assert srv.alive()
    assert not math.isnan(0.0)


def test_real_client_survives_odd_map_keys(srv: Srv) -> None:
    """A handler returning {1: .., (1, 2): ..} must not kill the client's connection."""
    from pymprpc.client import RPC

    with RPC(addr=f"tcp://127.0.0.1:{srv.port}", timeout=5) as rpc:
        try:
            rpc.ret_intkey()
        except Exception as exc:  # noqa: BLE001
            assert type(exc).__module__.startswith("pymprpc"), repr(exc)
        assert rpc.echo(3) == 3


def test_delay_baseexception_getresult_does_not_hang(srv: Srv) -> None:
    with Raw(srv.port, timeout=5) as c:
        c.login()
        c.call("k1", "abase", RETURN=False)
        time.sleep(0.3)
        c.call("g", "system.getresult", "k1")
        r = c.recv()  # TimeoutError here == getresult hangs
        assert 400 <= code(r) < 500, r
