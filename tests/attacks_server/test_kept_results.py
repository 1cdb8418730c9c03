"""Contract 3: kept results isolated per account, bounded, getresult never hangs."""

from __future__ import annotations

import time

import pytest

from .kit import Raw, Srv, code

pytestmark = pytest.mark.timeout(60)
AUTH = [["alice", "pa"], ["bob", "pb"]]


@pytest.fixture(scope="module")
def srv():
    with Srv(auth=AUTH, kept_results=5, kept_results_bytes=1 << 20, login_backoff=0) as s:
        yield s


def conn(port: int, user: str | None, pw: str | None, **kw: object) -> Raw:
    c = Raw(port, timeout=4)
    r = c.login(user, pw, **kw)  # type: ignore[arg-type]
    assert code(r) == 100, r
    return c


def getresult(c: Raw, id: str, gid: str = "g") -> dict:
    c.call(gid, "system.getresult", id)
    return c.recv()


def test_other_account_cannot_read_or_claim(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a, conn(srv.port, "bob", "pb") as b:
        a.call("K", "echo", "alice-secret", RETURN=False)
        time.sleep(0.2)
        r = getresult(b, "K")
        assert code(r) == 400, r
        b.call("K", "echo", "bob", RETURN=False)  # same ID, other account: allowed
        time.sleep(0.2)
        assert getresult(b, "K")["MESSAGE"]["RESULT"] == "bob"
        assert getresult(a, "K")["MESSAGE"]["RESULT"] == "alice-secret"


def test_other_account_cannot_evict(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a, conn(srv.port, "bob", "pb") as b:
        a.call("A1", "echo", 1, RETURN=False)
        time.sleep(0.1)
        for i in range(20):
            b.call(f"B{i}", "echo", i, RETURN=False)
        b.rpc("echo", 0, id="sync")
        assert getresult(a, "A1")["MESSAGE"]["RESULT"] == 1


def test_count_quota_evicts_oldest_finished(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        for i in range(8):
            a.call(f"C{i}", "echo", i, RETURN=False)
            a.rpc("echo", 0, id="sync")
            time.sleep(0.05)
        assert code(getresult(a, "C0")) == 400
        assert getresult(a, "C7", "g2")["MESSAGE"]["RESULT"] == 7


def test_count_quota_all_running_405(srv: Srv) -> None:
    with conn(srv.port, "bob", "pb", features=["length-framing", "cancel"]) as b:
        for i in range(5):
            b.call(f"R{i}", "never", RETURN=False)
        b.call("R5", "never", RETURN=False)
        r = b.recv()
        assert code(r) == 405 and r["MESSAGE"]["ID"] == "R5", r
        for i in range(5):
            b.send({"MPRPC": "0.1", "ID": f"R{i}", "CANCEL": True})
        time.sleep(0.2)
        r = getresult(b, "R0")
        assert code(r) == 407, r


def test_byte_quota(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        a.call("BIG", "big", 2 << 20, RETURN=False)
        a.rpc("echo", 0, id="sync")
        r = getresult(a, "BIG")
        assert code(r) == 405, r


def test_byte_quota_many_medium(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        for i in range(4):
            a.call(f"M{i}", "big", 400 * 1024, RETURN=False)
        a.rpc("echo", 0, id="sync")
        codes = [code(getresult(a, f"M{i}", f"g{i}")) for i in range(4)]
        assert codes.count(200) <= 2, codes  # 1 MiB quota cannot hold 4 x 400 KiB
        assert 200 in codes, codes


def test_anonymous_isolated_per_connection() -> None:
    with Srv() as s, Raw(s.port) as a, Raw(s.port) as b:
        a.login()
        b.login()
        a.call("X", "echo", "a", RETURN=False)
        a.rpc("echo", 0, id="sync")
        assert code(getresult(b, "X")) == 400
        assert getresult(a, "X")["MESSAGE"]["RESULT"] == "a"


def test_getresult_after_disconnect_same_account(srv: Srv) -> None:
    a = conn(srv.port, "alice", "pa")
    a.call("D1", "asleep", 0.5, RETURN=False)
    a.rpc("echo", 0, id="sync")
    a.close()
    with conn(srv.port, "alice", "pa") as a2:
        t0 = time.monotonic()
        r = getresult(a2, "D1")
        assert r["MESSAGE"]["RESULT"] == 0.5 and time.monotonic() - t0 < 3, r


def test_getresult_of_handler_raising_baseexception(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        for m in ("abase", "agenexit", "tbase"):
            a.call("E" + m, m, RETURN=False)
        a.rpc("echo", 0, id="sync")
        time.sleep(0.3)
        for m in ("abase", "agenexit", "tbase"):
            r = getresult(a, "E" + m, "g" + m)  # TimeoutError here means it hangs
            assert 400 <= code(r) < 500, (m, r)


def test_getresult_during_shutdown_does_not_hang() -> None:
    with Srv(auth=AUTH, grace_period=1) as s:
        a = conn(s.port, "alice", "pa")
        a.call("S1", "never", RETURN=False)
        w = conn(s.port, "alice", "pa")
        w.call("g", "system.getresult", "S1")
        time.sleep(0.3)
        t0 = time.monotonic()
        s.proc.send_signal(15)
        try:
            r = w.recv()
            assert code(r) in (503, 407), r
        except EOFError:
            pass
        assert time.monotonic() - t0 < 3.5
        s.proc.wait(10)


def test_getresult_waiter_twice_same_id(srv: Srv) -> None:
    """Two waiters on the same running kept call: one gets it, the other 400, none hangs."""
    with conn(srv.port, "alice", "pa") as a, conn(srv.port, "alice", "pa") as a2:
        a.call("W1", "asleep", 0.4, RETURN=False)
        a.rpc("echo", 0, id="sync")
        a.call("g1", "system.getresult", "W1")
        a2.call("g2", "system.getresult", "W1")
        r1, r2 = a.recv(), a2.recv()
        assert sorted([code(r1), code(r2)]) == [200, 400], (r1, r2)


def test_getresult_bad_args(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        for i, args in enumerate([[], [1], [None], [["x"]], ["a", "b"], [{"a": 1}]]):
            a.call(f"b{i}", "system.getresult", *args)
            r = a.recv()
            assert 400 <= code(r) < 500, (args, r)


def test_kept_stream(srv: Srv) -> None:
    with conn(srv.port, "alice", "pa") as a:
        a.call("ST", "count", 3, RETURN=False)
        a.rpc("echo", 0, id="sync")
        a.call("g", "system.getresult", "ST")
        codes = [code(a.recv()) for _ in range(5)]
        assert codes == [201, 202, 202, 202, 206], codes


def test_kept_endless_stream_bounded(srv: Srv) -> None:
    """An endless stream with RETURN false must hit the byte quota, not grow forever."""
    with conn(srv.port, "alice", "pa", features=["length-framing", "cancel"]) as a:
        rss0 = srv.rss()
        a.call("EN", "bigstream", RETURN=False)
        time.sleep(2)
        grown = srv.rss() - rss0
        assert grown < 32 << 20, f"+{grown >> 20} MiB"
        a.call("g", "system.getresult", "EN")
        r = a.recv()
        assert code(r) in (201, 405), r
