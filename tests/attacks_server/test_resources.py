"""Contract 1: what a hostile peer makes the server hold is bounded and released (RSS)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from .kit import SEP, Raw, Srv, code, pack

pytestmark = pytest.mark.timeout(90)
MiB = 1 << 20


def settle(s: Srv, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return s.rss()


def settle_below(s: Srv, limit: int, within: float = 5.0) -> int:
    """RSS once it is below `limit`, or after `within` seconds (then the caller's
    assertion reports it): memory freed by the server, waited for as state."""
    end = time.monotonic() + within
    rss = s.rss()
    while rss >= limit and time.monotonic() < end:
        time.sleep(0.1)
        rss = s.rss()
    return rss


def undone(port: int) -> int:
    with Raw(port) as c:
        c.login()
        return int(c.rpc("system.lenUndoneTasks")["MESSAGE"]["RESULT"]) - 1


def test_unauth_partial_frames_bounded_and_released() -> None:
    """40 unauthenticated peers each send max_message_size-1 bytes with no separator."""
    with Srv(max_message_size=2 * MiB, auth=[["u", "p"]]) as s:
        base = settle(s, 0.5)
        socks = []
        chunk = b"\x81" + b"a" * (2 * MiB - 2)
        for _ in range(40):
            k = socket.create_connection(("127.0.0.1", s.port))
            # The server may cut a peer off before it has sent it all (then it holds
            # nothing of it): what is measured is what it holds of those it keeps.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                k.sendall(chunk)
            socks.append(k)
        peak = settle(s, 1.0)
        for k in socks:
            k.close()
        after = settle_below(s, base + 20 * MiB)
        print(
            f"base {base / MiB:.0f} MiB peak {peak / MiB:.0f} MiB after close {after / MiB:.0f} MiB"
        )
        assert peak - base < 40 * 2 * MiB * 2, "more than 2x the bytes held per peer"
        assert after - base < 20 * MiB, f"not released: +{(after - base) / MiB:.0f} MiB after close"


def test_connection_flood_limit_and_fd_release() -> None:
    with Srv(max_connections=50) as s:
        with Raw(s.port) as w:
            w.login()
            w.rpc("echo", 1)
        time.sleep(0.3)
        fds0 = s.fds()
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(80)]
        refused = 0
        for k in socks[50:]:
            k.settimeout(3)
            data = b""
            try:
                while SEP not in data:
                    d = k.recv(100)
                    if not d:
                        break
                    data += d
            except TimeoutError:
                pass
            if data.startswith(pack({"MPRPC": "0.1", "CODE": 503})[:1]) and b"\xcd\x01\xf7" in data:
                refused += 1
        assert refused == 30, refused
        for k in socks:
            k.close()
        time.sleep(1)
        assert s.fds() <= fds0 + 2, (fds0, s.fds())
        with Raw(s.port) as c:
            assert code(c.login()) == 100


def test_unread_big_results_bounded() -> None:
    """A peer pipelines calls with big results and never reads: the server should stop
    reading (backpressure) rather than buffer every result."""
    with Srv(max_message_size=1 * MiB) as s:
        base = settle(s, 0.5)
        c = Raw(s.port, timeout=5)
        c.login(features=["length-framing"])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        n = 200
        data = b"".join(
            c.frame(pack({"MPRPC": "0.1", "ID": f"b{i}", "METHOD": "big", "ARGS": [512 * 1024]}))
            for i in range(n)
        )
        sender = threading.Thread(target=lambda: _try_send(c.sock, data), daemon=True)
        sender.start()
        time.sleep(2.0)
        peak = s.rss()
        c.close()
        after = settle_below(s, base + 20 * MiB)
        print(
            f"unread results: base {base / MiB:.0f} peak {peak / MiB:.0f}"
            f" after {after / MiB:.0f} MiB"
        )
        assert peak - base < 48 * MiB, (
            f"server buffered {(peak - base) / MiB:.0f} MiB of unread results"
        )
        assert after - base < 20 * MiB


def _try_send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_inflight_tasks_released_after_close() -> None:
    # EOF = half-close or gone (TCP cannot tell): calls then run half_close_timeout at most.
    with Srv(max_inflight=100, half_close_timeout=0.5) as s:
        c = Raw(s.port)
        c.login()
        for i in range(150):
            c.call(f"n{i}", "never")
        rs = [c.recv() for _ in range(50)]
        assert all(code(r) == 503 for r in rs), {code(r) for r in rs}
        assert undone(s.port) == 100
        c.close()
        t0 = time.monotonic()
        while undone(s.port) and time.monotonic() - t0 < 5:
            time.sleep(0.1)
        assert undone(s.port) == 0


def test_anonymous_detached_return_false_bounded() -> None:
    """RETURN false 'never' calls from closed anonymous connections: at most kept_results run."""
    with Srv(kept_results=10) as s:
        for _ in range(3):
            c = Raw(s.port)
            c.login()
            for i in range(20):
                c.call(f"d{i}", "never", RETURN=False)
            c.rpc("echo", 1, id="sync")
            c.close()
        time.sleep(0.5)
        assert undone(s.port) <= 10, undone(s.port)


def test_anonymous_kept_results_released_after_close() -> None:
    with Srv() as s:
        base = settle(s, 0.5)
        for _ in range(3):
            c = Raw(s.port)
            c.login()
            for i in range(15):
                c.call(f"k{i}", "big", 1 * MiB, RETURN=False)
            c.rpc("echo", 1, id="sync")
            c.close()
        after = settle_below(s, base + 20 * MiB)
        print(f"anon kept: base {base / MiB:.0f} after {after / MiB:.0f} MiB")
        assert after - base < 20 * MiB, (
            f"kept results of closed anonymous conns held: +{(after - base) / MiB:.0f} MiB"
        )


def test_many_connect_close_cycles_no_growth() -> None:
    with Srv() as s:
        for _ in range(100):
            with Raw(s.port) as c:
                c.login()
                c.rpc("echo", "x" * 1000)
        base = settle(s, 0.5)
        fds0 = s.fds()
        for _i in range(150):
            with Raw(s.port) as c:
                c.login(features=["length-framing", "cancel", "deadline"])
                c.call("a", "agen_raise", 2)
                c.call("b", "abase")
                c.call("c", "never")
                c.call("d", "aendless")
                c.recv()
        after = settle_below(s, base + 8 * MiB)
        print(f"cycles: base {base / MiB:.1f} after {after / MiB:.1f} MiB")
        t0 = time.monotonic()  # the last connections' calls are being cancelled
        while undone(s.port) and time.monotonic() - t0 < 5:
            time.sleep(0.1)
        assert undone(s.port) == 0
        assert s.fds() <= fds0 + 2
        assert after - base < 8 * MiB, f"+{(after - base) / MiB:.1f} MiB after 150 connections"


def test_unauth_idle_connections_closed_by_auth_timeout() -> None:
    with Srv(auth_timeout=0.5) as s:
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(100)]
        closed = 0
        for k in socks:
            k.settimeout(3)  # the first waits out auth_timeout; by then all are closed
            try:
                buf = b""
                while True:
                    d = k.recv(1000)
                    if not d:
                        closed += 1
                        break
                    buf += d
            except (TimeoutError, ConnectionResetError):
                pass
            k.close()
        assert closed == 100


def test_abandoned_calls_do_not_accumulate_across_connections() -> None:
    """Peers that send never-ending calls and leave: the server must cancel them (after
    half_close_timeout: their EOF may be a half-close)."""
    with Srv(half_close_timeout=0.5) as s:
        base = settle(s, 0.5)
        for _ in range(10):
            c = Raw(s.port)
            c.login()
            for i in range(100):
                c.call(f"n{i}", "never")
            c.call("sync", "echo", 1)
            while c.recv()["MESSAGE"]["ID"] != "sync":
                pass
            c.close()
        t0 = time.monotonic()  # half_close_timeout, then the calls are cancelled
        while undone(s.port) and time.monotonic() - t0 < 5:
            time.sleep(0.1)
        left = undone(s.port)
        print(f"abandoned: {left} calls still running, +{(s.rss() - base) / MiB:.1f} MiB")
        assert left == 0, f"{left} calls of closed connections still running"


def test_closed_peers_with_running_calls_do_not_use_up_connection_slots() -> None:
    """Connect, start a never-ending call, close; repeat past max_connections. The server
    keeps the handler (CLOSE-WAIT) as if half-closed: new clients are refused, unless
    half-closed connections are bounded in time (half_close_timeout)."""
    with Srv(max_connections=20, half_close_timeout=0.3) as s:
        for _ in range(25):
            c = Raw(s.port)
            c.login()
            c.call("n", "never")
            c.rpc("echo", 1, id="s")
            c.close()
        time.sleep(1)
        with Raw(s.port, timeout=5) as c:
            r = c.login()
            assert code(r) == 100, f"new client refused after peers left: {r}"
