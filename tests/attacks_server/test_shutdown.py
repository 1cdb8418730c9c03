"""Graceful shutdown under hostile conditions completes within the grace period."""

from __future__ import annotations

import socket
import time

import pytest

from .kit import Raw, Srv, code

pytestmark = pytest.mark.timeout(60)


def _stop_within(s: Srv, limit: float) -> float:
    took, rc = s.stop(timeout=12)
    assert rc is not None, "server did not exit within 12 s"
    assert took < limit, f"shutdown took {took:.1f}s"
    return took


def test_shutdown_with_nonreading_stream_client() -> None:
    with Srv(grace_period=1) as s:
        c = Raw(s.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.login()
        c.call("s", "bigstream")
        time.sleep(0.5)
        _stop_within(s, 4)
        c.close()


def test_shutdown_with_nonreading_big_results_client() -> None:
    with Srv(grace_period=1) as s:
        c = Raw(s.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.login()
        for i in range(20):
            c.call(f"b{i}", "big", 1 << 20)
        time.sleep(0.5)
        _stop_within(s, 4)
        c.close()


def test_shutdown_with_slowloris_and_unauth_peers() -> None:
    with Srv(grace_period=1, auth_timeout=0, idle_timeout=0) as s:
        socks = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(50)]
        for k in socks[:25]:
            k.sendall(b"\x82")
        _stop_within(s, 4)
        for k in socks:
            k.close()


def test_calls_during_drain_get_503() -> None:
    with Srv(grace_period=2) as s, Raw(s.port, timeout=5) as c:
        c.login()
        c.call("long", "asleep", 1.0)
        time.sleep(0.2)
        s.proc.send_signal(15)
        time.sleep(0.3)
        c.call("late", "echo", 1)
        got = {}
        for _ in range(2):
            r = c.recv()
            got[r["MESSAGE"]["ID"]] = code(r)
        assert got == {"late": 503, "long": 200}, got
        s.proc.wait(8)


def test_shutdown_cancel_negotiated_gets_407_and_kept_503_or_407() -> None:
    with Srv(grace_period=0.5) as s, Raw(s.port, timeout=5) as c:
        c.login(features=["length-framing", "cancel"])
        c.call("n", "never")
        time.sleep(0.2)
        s.proc.send_signal(15)
        r = c.recv()
        assert code(r) == 407 and r["MESSAGE"]["ID"] == "n", r
        s.proc.wait(8)


def test_shutdown_with_generator_ignoring_exit_and_disconnected_client() -> None:
    with Srv(grace_period=1) as s:
        c = Raw(s.port)
        c.login(features=["length-framing", "cancel"])
        c.call("g", "agen_ignore_exit")
        c.recv()
        c.close()
        time.sleep(0.3)
        _stop_within(s, 4)
