"""Server states a client can reach: shutdown (503 while draining, 407/503 when the grace
period ends), idle and authentication timeouts (504), connection limit (503), encoding
detection (506), kept-result quotas and a cancelled kept call."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc.testing import RunningServer

from .conftest import FRAMINGS
from .wire import SEPARATOR, Wire, bare, new_id, ok

pytestmark = pytest.mark.timeout(60)

OLD, NEW = FRAMINGS["separator"], FRAMINGS["length"]


def result(wire: Wire, method: str, *args: Any) -> Any:
    reply = wire.call(method, *args)
    assert reply["CODE"] == 200, reply
    return reply["MESSAGE"]["RESULT"]


def test_shutdown_drains_then_cancels(serve: Callable[..., RunningServer]) -> None:
    running = serve(grace_period=3)
    port = running.server.address[1]
    ka, kb = new_id(), new_id()
    with Wire(port, **NEW) as a, Wire(port, **OLD) as b:
        a.send(a.request("block", ka, id="a-block"))
        b.send(b.request("block", kb, id="b-block"))
        assert result(a, "wait_event", "started:" + ka) and result(a, "wait_event", "started:" + kb)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        # Health is answered while draining; wait (bounded) until it says so.
        for _ in range(500):
            if result(a, "system.health") == "NOT_SERVING":
                break
        else:
            pytest.fail("the server never reported NOT_SERVING")
        assert result(b, "system.health", "anything") == "NOT_SERVING"
        a.send(a.request("add", 1, 2, id="late"))
        late = a.recv()
        assert late["CODE"] == 503 and late["MESSAGE"]["ID"] == "late"
        assert late["MESSAGE"]["EXCEPTION"] == "RpcUnavailableException"
        got_a = a.recv_until_closed()
        got_b = b.recv_until_closed()
        stopper.join(30)
        assert [(m["CODE"], m["MESSAGE"]["ID"]) for m in got_a] == [(407, "a-block")]
        assert [(m["CODE"], m["MESSAGE"]["ID"]) for m in got_b] == [(503, "b-block")]


def test_shutdown_lets_running_calls_finish_within_grace(
    serve: Callable[..., RunningServer],
) -> None:
    running = serve(grace_period=20)
    port = running.server.address[1]
    with Wire(port, **NEW) as a:
        a.send(a.request("sleep", 1.0, id="finishing"))
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        for _ in range(500):
            if result(a, "system.health") == "NOT_SERVING":
                break
        assert a.recv_until_closed() == [ok("finishing", 1.0)]
        stopper.join(30)
        assert not stopper.is_alive()


def test_idle_timeout_504(serve: Callable[..., RunningServer]) -> None:
    port = serve(idle_timeout=0.3).server.address[1]
    with Wire(port, **NEW) as w:
        assert w.welcome is not None and w.welcome["TIMEOUT"] == 0.3
        assert w.recv_until_closed() == [bare(504)]


def test_a_running_call_keeps_its_connection_open(serve: Callable[..., RunningServer]) -> None:
    port = serve(idle_timeout=0.3).server.address[1]
    key = new_id()
    with Wire(port, **NEW) as w, Wire(port, **NEW) as observer:
        w.send(w.request("block", key, id="long"))
        # Time passes on the server (0.8 s > idle timeout) while the call runs; the
        # observer keeps itself busy with that very call.
        assert result(observer, "wait_event", "never:" + key, 0.8) is False
        result(observer, "release", key)
        assert w.recv() == ok("long", key)


def test_auth_timeout_504(serve: Callable[..., RunningServer]) -> None:
    port = serve(auth_timeout=0.3).server.address[1]
    w = Wire(port, login=False)
    assert w.recv_until_closed() == [bare(504)]
    w.close()


def test_max_connections_503(serve: Callable[..., RunningServer]) -> None:
    port = serve(max_connections=2).server.address[1]
    with Wire(port) as a, Wire(port) as b:
        assert result(a, "add", 1, 2) == 3 and result(b, "add", 1, 2) == 3
        c = Wire(port, login=False)
        assert c.recv_until_closed() == [bare(503)]
        c.close()
        assert result(a, "add", 1, 2) == 3


def test_undetectable_first_payload_506(port: int) -> None:
    w = Wire(port, login=False)
    w.send_raw(b"\x01\x02\x03" + SEPARATOR)
    assert w.recv_until_closed() == [bare(506)]
    w.close()


def test_json_detected_after_leading_whitespace(port: int) -> None:
    w = Wire(port, login=False, json_mode=True)
    w.send_raw(b' \n{"MPRPC":"0.1","AUTH":{"USERNAME":null,"PASSWORD":null}}' + SEPARATOR)
    welcome = w.recv()
    assert welcome["CODE"] == 100 and welcome["DEBUG"] is True
    w.send(w.request("add", 1, 2, id="j"))
    assert w.recv() == ok("j", 3)
    w.close()


def test_first_message_refused_answered_in_json_for_a_json_client(
    serve: Callable[..., RunningServer],
) -> None:
    port = serve().server.address[1]
    w = Wire(port, login=False, json_mode=True)
    w.send({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}, "PAD": "p" * 70000})
    assert w.recv_until_closed() == [bare(505)]
    w.close()


def test_kept_results_count_quota(serve: Callable[..., RunningServer]) -> None:
    port = serve(kept_results=1).server.address[1]
    with Wire(port, **NEW) as w:
        w.send(w.request("add", 1, 1, id="k1", RETURN=False))
        assert result(w, "system.getresult", "k1") == 2  # finished, and fetched
        w.send(w.request("add", 1, 2, id="k2", RETURN=False))
        assert result(w, "add", 0, 0) == 0
        w.send(w.request("add", 1, 3, id="k3", RETURN=False))  # the oldest finished goes
        assert w.call("system.getresult", "k2")["CODE"] == 400
        assert result(w, "system.getresult", "k3") == 4
        key = new_id()
        w.send(w.request("block", key, id="k4", RETURN=False))
        assert result(w, "wait_event", "started:" + key)
        w.send(w.request("add", 1, 4, id="k5", RETURN=False))  # all kept ones still run
        refused = w.recv()
        assert refused["CODE"] == 405 and refused["MESSAGE"]["ID"] == "k5"
        result(w, "release", key)
        assert result(w, "system.getresult", "k4") == key


def test_cancelled_kept_call_keeps_407(serve: Callable[..., RunningServer]) -> None:
    port = serve().server.address[1]
    key = new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("block", key, id="kc", RETURN=False))
        assert result(w, "wait_event", "started:" + key)
        w.send({"MPRPC": "0.1", "ID": "kc", "CANCEL": True})
        reply = w.call("system.getresult", "kc")
        assert reply["CODE"] == 407 and reply["MESSAGE"]["EXCEPTION"] == "CancelledError"


def test_kept_results_belong_to_the_account(serve: Callable[..., RunningServer]) -> None:
    port = serve(auth=[("alice", "a-pw"), ("bob", "b-pw")]).server.address[1]
    with Wire(port, user="alice", password="a-pw") as a1:
        a1.send(a1.request("add", 2, 2, id="acct", RETURN=False))
        assert result(a1, "add", 0, 0) == 0
    with Wire(port, user="bob", password="b-pw") as bob:
        assert bob.call("system.getresult", "acct")["CODE"] == 400
    with Wire(port, user="alice", password="a-pw") as a2:
        assert result(a2, "system.getresult", "acct") == 4


def test_partial_frame_bytes_do_not_reset_the_idle_timer(
    serve: Callable[..., RunningServer],
) -> None:
    port = serve(idle_timeout=0.5).server.address[1]
    with Wire(port, **NEW) as w:
        w.send_raw(b"\x00\x00\x01\x00")  # a length prefix for 256 bytes, then a trickle
        w.sock.settimeout(0.1)
        deadline = time.monotonic() + 10
        closed: list[Any] | None = None
        while closed is None and time.monotonic() < deadline:
            try:
                w.send_raw(b"\x81")
                w.sock.recv(1, socket.MSG_PEEK)
                closed = []
            except TimeoutError:
                continue
            except OSError:
                closed = []
        w.sock.settimeout(5)
        assert closed is not None, "the server never closed the trickling connection"
        assert w.recv_until_closed() == [bare(504)]


def test_pings_keep_a_connection_open(serve: Callable[..., RunningServer]) -> None:
    port = serve(idle_timeout=1.0).server.address[1]
    with Wire(port, **NEW) as w:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:  # pings for longer than the idle timeout
            assert w.ping() == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}
            time.sleep(0.2)
        assert result(w, "add", 1, 2) == 3


def test_kept_results_byte_quota_keeps_a_405(serve: Callable[..., RunningServer]) -> None:
    port = serve(kept_results_bytes=1000).server.address[1]
    with Wire(port, **NEW) as w:
        w.send(
            w.request("blob", 5000, id="big", RETURN=False),
            w.request("blob", 10, id="small", RETURN=False),
        )
        big = w.call("system.getresult", "big")
        assert big["CODE"] == 405 and big["MESSAGE"]["EXCEPTION"] == "ResultLimitError"
        assert result(w, "system.getresult", "small") == b"x" * 10


def test_kept_results_expire_after_their_ttl(serve: Callable[..., RunningServer]) -> None:
    port = serve(kept_results_ttl=0.2).server.address[1]
    with Wire(port, **NEW) as w:
        w.send(w.request("add", 1, 2, id="old", RETURN=False))
        assert result(w, "wait_event", "never:" + new_id(), 0.6) is False  # time passes
        assert w.call("system.getresult", "old")["CODE"] == 400


def test_len_undone_tasks_counts_running_calls(serve: Callable[..., RunningServer]) -> None:
    port = serve().server.address[1]
    k1, k2 = new_id(), new_id()
    with Wire(port, **NEW) as w, Wire(port) as other:
        w.send(w.request("block", k1, id="u1"), w.request("block", k2, id="u2"))
        assert result(other, "wait_event", "started:" + k1) and result(
            other, "wait_event", "started:" + k2
        )
        assert result(other, "system.lenUndoneTasks") == 3
        assert result(other, "system.lenConnections") == 2
        result(other, "release", k1)
        result(other, "release", k2)
        assert sorted(m["MESSAGE"]["ID"] for m in w.recv_n(2)) == ["u1", "u2"]
        # A task may outlive the write of its reply by a loop pass: wait, bounded.
        counts = [result(other, "system.lenUndoneTasks") for _ in range(3)]
        for _ in range(200):
            if counts[-1] == 1:
                break
            counts.append(result(other, "system.lenUndoneTasks"))
        assert counts[-1] == 1, counts
