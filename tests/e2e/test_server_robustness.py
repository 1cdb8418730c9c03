"""Hostile and unlucky handlers and peers: no handler stops the server, accounts are
isolated, RETURN-false calls survive their client, half-closed clients get every reply."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from helpers import RawClient, ServerThread, pack, unpack, wait_for
from pymprpc.server import Server

V = {"MPRPC": "0.1"}
USERS = [("admin", "s3cret"), ("bob", "hunter2")]


class Gate:
    """Handlers block on it; tests open it."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.finished: list[str] = []


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def build(gate: Gate, **options: Any) -> Server:
    options.setdefault("auth", USERS)
    server = Server(("127.0.0.1", 0), executor="thread", **options)

    @server.register_function()
    async def add(a: int, b: int) -> int:
        return a + b

    @server.register_function()
    async def exit_coro() -> None:
        sys.exit(3)

    @server.register_function()
    async def exit_unprintable() -> None:
        sys.exit(_BadRepr())  # its argument's repr raises: the reply must still be made

    @server.register_function()
    async def interrupt_coro() -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    @server.register_function()
    def exit_thread() -> None:
        sys.exit("from a thread")

    @server.register_function()
    def interrupt_thread() -> None:
        raise KeyboardInterrupt

    @server.register_function()
    async def exit_stream() -> AsyncIterator[int]:
        yield 1
        raise SystemExit(0)

    @server.register_function()
    async def inner_cancelled() -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        inner.cancel()
        await inner  # raises CancelledError: this call itself was not cancelled

    @server.register_function()
    async def wait_gate(tag: str) -> str:
        gate.entered.set()
        while not gate.opened.is_set():
            await asyncio.sleep(0.01)
        gate.finished.append(tag)
        return tag

    @server.register_function()
    async def blob(size: int) -> bytes:
        return b"x" * size

    @server.register_function()
    async def sleep(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    return server


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def start(gate: Gate) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def run(**options: Any) -> ServerThread:
        thread = ServerThread(build(gate, **options)).__enter__()
        started.append(thread)
        return thread

    yield run
    for thread in started:
        thread.__exit__(None, None, None)


def login(
    srv: ServerThread, user: str | None = "admin", password: str | None = "s3cret", **kw: Any
) -> RawClient:
    c = RawClient(srv.port, **kw)
    reply = c.login(user, password)
    assert reply["CODE"] == 100, reply
    return c


def call(c: RawClient, id: str, method: str, *args: Any, **fields: Any) -> None:
    c.send({**V, "ID": id, "METHOD": method, "ARGS": list(args), **fields})


def still_serving(srv: ServerThread) -> None:
    with login(srv) as c:
        call(c, "ok", "add", 20, 22)
        assert c.recv()["MESSAGE"] == {"ID": "ok", "RESULT": 42}


# -- a handler must never take the server down ---------------------------------------


@pytest.mark.parametrize(
    "method", ["exit_coro", "interrupt_coro", "exit_thread", "interrupt_thread", "exit_unprintable"]
)
def test_system_exit_and_keyboard_interrupt_fail_only_that_call(
    start: Callable[..., ServerThread], method: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = start()
    with login(srv) as c:
        call(c, "x", method)
        reply = c.recv()
        assert reply["CODE"] == 404, reply
        assert reply["MESSAGE"]["EXCEPTION"] in {"SystemExit", "KeyboardInterrupt"}
        call(c, "y", "add", 1, 2)  # the same connection goes on
        assert c.recv()["MESSAGE"]["RESULT"] == 3
    still_serving(srv)
    assert any("the server keeps serving" in r.getMessage() for r in caplog.records)


def test_system_exit_in_a_stream_fails_only_that_stream(
    start: Callable[..., ServerThread],
) -> None:
    srv = start()
    with login(srv) as c:
        call(c, "s", "exit_stream")
        codes = [c.recv()["CODE"] for _ in range(3)]
        assert codes == [201, 202, 404]
    still_serving(srv)


@pytest.mark.parametrize(("features", "code"), [([], 404), (["cancel"], 407)])
def test_a_handler_raising_cancelled_error_is_answered_and_its_id_freed(
    start: Callable[..., ServerThread], features: list[str], code: int
) -> None:
    srv = start()
    with RawClient(srv.port) as c:
        c.send({**V, "AUTH": {"USERNAME": "admin", "PASSWORD": "s3cret"}, "FEATURES": features})
        assert c.recv()["CODE"] == 100
        call(c, "c", "inner_cancelled")
        reply = c.recv()
        assert reply["CODE"] == code, reply
        call(c, "c", "add", 1, 1)  # the ID is free again: not a 400 duplicate
        assert c.recv()["MESSAGE"] == {"ID": "c", "RESULT": 2}
        assert srv.server.running_call_count == 0


# -- kept results: scoped, bounded ----------------------------------------------------


def getresult(c: RawClient, id: str, of: str) -> Any:
    call(c, id, "system.getresult", of)
    return c.recv()


def test_kept_results_belong_to_the_account_that_made_the_call(
    start: Callable[..., ServerThread], gate: Gate
) -> None:
    srv = start()
    with login(srv) as admin, login(srv, "bob", "hunter2") as bob:
        # bob claims admin's next ID in advance: admin is not affected.
        call(bob, "k1", "add", 0, 0, RETURN=False)
        call(admin, "k1", "add", 1, 1, RETURN=False)
        call(admin, "k2", "blob", 3, RETURN=False)
        # bob cannot read admin's result (his own k1 is his to fetch)...
        assert getresult(bob, "g1", "k2")["CODE"] == 400
        assert getresult(bob, "g2", "k1")["MESSAGE"]["RESULT"] == 0
        # ...and admin gets his own, from another connection of the same account too.
        assert getresult(admin, "g3", "k1")["MESSAGE"]["RESULT"] == 2
        with login(srv) as admin2:
            assert getresult(admin2, "g4", "k2")["MESSAGE"]["RESULT"] == b"xxx"


def test_anonymous_kept_results_belong_to_their_connection(
    start: Callable[..., ServerThread],
) -> None:
    srv = start(auth=None)
    with login(srv, None, None) as one, login(srv, None, None) as two:
        call(one, "k", "add", 2, 2, RETURN=False)
        assert getresult(two, "g", "k")["CODE"] == 400
        assert getresult(one, "g", "k")["MESSAGE"]["RESULT"] == 4


def test_flooding_kept_results_evicts_only_the_floods_own(
    start: Callable[..., ServerThread],
) -> None:
    srv = start(kept_results=5)
    with login(srv) as admin, login(srv, "bob", "hunter2") as bob:
        call(admin, "mine", "add", 1, 2, RETURN=False)
        for i in range(50):
            call(bob, f"f{i}", "add", i, 0, RETURN=False)
        assert getresult(bob, "g", "f49")["MESSAGE"]["RESULT"] == 49
        assert getresult(admin, "g", "mine")["MESSAGE"]["RESULT"] == 3


def test_a_server_keeping_no_results_says_so(start: Callable[..., ServerThread]) -> None:
    # kept_results=0: a RETURN-false call is refused, and getresult explains why it finds
    # nothing, rather than "N calls are already running" or "unknown ID".
    srv = start(kept_results=0)
    with login(srv) as c:
        call(c, "k", "add", 1, 2, RETURN=False)
        refused = c.recv()
        assert refused["CODE"] == 405
        assert "kept_results=0" in refused["MESSAGE"]["MESSAGE"]
        assert "already running" not in refused["MESSAGE"]["MESSAGE"]
        missing = getresult(c, "g", "k")
        assert missing["CODE"] == 400
        assert "kept_results=0" in missing["MESSAGE"]["MESSAGE"]


def test_kept_results_are_bounded_by_bytes(start: Callable[..., ServerThread]) -> None:
    mib = 1024 * 1024
    srv = start(kept_results_bytes=4 * mib)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with login(srv) as c:
            for i in range(40):  # 40 MiB of results asked for
                call(c, f"k{i}", "blob", mib, RETURN=False)
            assert getresult(c, "g", "k39")["MESSAGE"]["RESULT"] == b"x" * mib
            held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 12 * mib, held
    assert srv.call_in_loop(lambda: srv.server._core.kept.bytes_held()) <= 4 * mib


# -- lifecycle -------------------------------------------------------------------------


def test_a_return_false_call_outlives_its_client(
    start: Callable[..., ServerThread], gate: Gate
) -> None:
    srv = start()
    with login(srv) as c:
        call(c, "k", "wait_gate", "done", RETURN=False)
        assert gate.entered.wait(10)
    wait_for(lambda: srv.server.connection_count == 0)  # the client is gone
    with login(srv) as c:
        call(c, "g", "system.getresult", "k")  # waits for the call, which still runs
        gate.opened.set()
        assert c.recv()["MESSAGE"] == {"ID": "g", "RESULT": "done"}
    assert gate.finished == ["done"]


def test_return_false_calls_of_gone_anonymous_clients_are_bounded(
    start: Callable[..., ServerThread], gate: Gate
) -> None:
    srv = start(auth=None, kept_results=2)
    for _ in range(3):  # each connection within its own quota; together beyond the bound
        with login(srv, None, None) as c:
            call(c, "k1", "wait_gate", "a", RETURN=False)
            call(c, "k2", "wait_gate", "b", RETURN=False)
            call(c, "sync", "add", 0, 0)
            assert c.recv()["MESSAGE"]["RESULT"] == 0
    wait_for(lambda: srv.server.connection_count == 0)
    wait_for(lambda: srv.server.running_call_count == 2)  # the others were cancelled
    gate.opened.set()
    wait_for(lambda: srv.server.running_call_count == 0)
    assert sorted(gate.finished) == ["a", "b"]


def test_getresult_of_a_cancelled_return_false_call_does_not_hang(
    start: Callable[..., ServerThread], gate: Gate
) -> None:
    srv = start()
    with RawClient(srv.port) as c:
        c.send({**V, "AUTH": {"USERNAME": "admin", "PASSWORD": "s3cret"}, "FEATURES": ["cancel"]})
        assert c.recv()["CODE"] == 100
        call(c, "k", "wait_gate", "never", RETURN=False)
        assert gate.entered.wait(10)
        c.send({**V, "ID": "k", "CANCEL": True})
        reply = getresult(c, "g", "k")
        assert reply["CODE"] == 407, reply
    assert gate.finished == []


def test_a_half_closed_client_gets_every_reply(start: Callable[..., ServerThread]) -> None:
    srv = start()
    with login(srv) as c:
        for i in range(5):
            call(c, f"s{i}", "sleep", 0.01 * i)
        c.sock.shutdown(socket.SHUT_WR)
        replies = {}
        for _ in range(5):
            reply = c.recv()
            replies[reply["MESSAGE"]["ID"]] = reply["CODE"]
        assert replies == {f"s{i}": 200 for i in range(5)}
        assert c.at_eof()  # then the server closes


@pytest.mark.parametrize("how", ["half-close", "close"])
def test_calls_after_an_eof_run_at_most_half_close_timeout(
    start: Callable[..., ServerThread], gate: Gate, how: str
) -> None:
    """An EOF may be a half-close or a client that is gone (TCP cannot tell): its calls
    are answered while they finish within half_close_timeout, then cancelled and the
    connection (and its slot) released."""
    srv = start(half_close_timeout=0.5)
    with login(srv) as c:
        call(c, "quick", "sleep", 0.01)
        call(c, "stuck", "wait_gate", "stuck")
        assert gate.entered.wait(10)
        if how == "close":
            # Nothing unread, so a FIN (no reset): the server cannot tell it from a
            # half-close, and only the timeout frees the call.
            assert c.recv()["MESSAGE"]["ID"] == "quick"
            c.sock.close()
        else:
            c.sock.shutdown(socket.SHUT_WR)
            assert c.recv()["MESSAGE"]["ID"] == "quick"
        wait_for(lambda: srv.call_in_loop(lambda: srv.server.connection_count) == 0)
        assert srv.call_in_loop(lambda: srv.server.running_call_count) == 0
        if how == "half-close":
            assert c.at_eof()
    assert gate.finished == []  # cancelled, not left running


def test_bytes_of_a_partial_frame_do_not_keep_a_connection_alive(
    start: Callable[..., ServerThread],
) -> None:
    srv = start(idle_timeout=0.3)
    with login(srv) as c:
        frame = pack({**V, "ID": "x", "METHOD": "add", "ARGS": [1, 2]}) * 100
        # One byte at a time, never a whole message: the server must still call it idle.
        for byte in frame:
            try:
                c.send_raw(bytes([byte]))
            except OSError:
                break  # closed by the server
            if srv.server.connection_count == 0:
                break
            time.sleep(0.02)
        wait_for(lambda: srv.server.connection_count == 0)
        assert c.recv_frame() == pack({**V, "CODE": 504})


def test_the_listen_backlog_is_the_one_asked_for(start: Callable[..., ServerThread]) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the backlog with Linux's TCP_INFO")
    srv = start(backlog=1024)
    with open("/proc/sys/net/core/somaxconn") as f:
        expected = min(1024, int(f.read()))
    sock = srv.server._sock
    assert sock is not None
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # For a listening socket, tcpi_sacked is the accept queue's maximum (its backlog).
    (max_backlog,) = struct.unpack_from("I", info, 28)
    assert max_backlog == expected


# -- logins ----------------------------------------------------------------------------


def test_failed_logins_back_off_per_address_and_per_user(
    start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pymprpc.server")
    srv = start(login_attempts=3, login_backoff=60)
    for i in range(4):
        with RawClient(srv.port) as c:
            assert c.login("admin", f"guess{i}")["CODE"] == 501
    # Blocked now: the right password from the same address is refused unchecked...
    with RawClient(srv.port) as c:
        assert c.login("admin", "s3cret")["CODE"] == 501
    # ...and from another address as that user too, while another user may log in there.
    for user, password, code in [("admin", "s3cret", 501), ("bob", "hunter2", 100)]:
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.port))
        c = RawClient.__new__(RawClient)
        c.sock, c.encode, c.decode, c.buffer = sock, pack, unpack, b""
        with c:
            assert c.login(user, password)["CODE"] == code
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("failed login as 'admin' from 127.0.0.1" in r.getMessage() for r in warnings)
    assert not any("guess" in r.getMessage() or "s3cret" in r.getMessage() for r in warnings)


def test_a_flood_of_unique_user_names_does_not_grow_the_throttle_without_bound() -> None:
    from pymprpc.server.logins import MAX_TRACKED, LoginThrottle

    throttle = LoginThrottle(free=1, backoff=1.0, clock=lambda: 0.0)
    for i in range(MAX_TRACKED + 500):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert len(throttle._by_peer) == len(throttle._by_user) == MAX_TRACKED


def test_back_off_doubles_and_success_clears_it() -> None:
    from pymprpc.server.logins import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(free=2, backoff=1.0, clock=lambda: now[0])
    assert [throttle.failed("p", "u") for _ in range(5)] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert throttle.blocked("p", "other") and throttle.blocked("elsewhere", "u")
    now[0] = 4.5
    assert not throttle.blocked("p", "u")
    throttle.succeeded("p", "u")
    assert throttle.failed("p", "u") == 0.0
