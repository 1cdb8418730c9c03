"""Both clients give the same errors, the same messages and warnings at the same place:
each scenario runs once with `RPC` and once with `AsyncRPC`, and the outcomes compare."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from service import PASSWORD, USER, url

from helpers import OLD_WELCOME, OldServer, ServerThread, arun, send, tls_contexts
from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import (
    ConnectionLostError,
    DeadlineExceeded,
    ExpireStreamWarning,
    ExpireWarning,
    LoginError,
    MPRPCError,
    NotFindError,
    ParamError,
    RemoteProtocolError,
    RPCRuntimeError,
    TimeoutException,
)
from pymprpc.protocol import ClientConnection

Outcome = tuple[type[BaseException], str]


def sync_outcome(work: Callable[[RPC], Any], addr: str, **options: Any) -> Outcome:
    try:
        with RPC(addr, **options) as rpc:
            work(rpc)
    except MPRPCError as exc:
        return type(exc), str(exc)
    raise AssertionError("no error")


def async_outcome(
    work: Callable[[AsyncRPC], Coroutine[Any, Any, Any]], addr: str, **options: Any
) -> Outcome:
    async def main() -> Outcome:
        try:
            async with AsyncRPC(addr, **options) as rpc:
                await work(rpc)
        except MPRPCError as exc:
            return type(exc), str(exc)
        raise AssertionError("no error")

    return arun(main())


def same(sync: Outcome, async_: Outcome, expected: type[BaseException], text: str) -> None:
    assert sync == async_
    assert sync[0] is expected
    assert text in sync[1], sync[1]


def test_call_errors_are_the_same(srv: ServerThread) -> None:
    cases: list[tuple[str, tuple[Any, ...], type[BaseException], str]] = [
        ("nope", (), NotFindError, "no method named 'nope'"),
        ("add", (1,), ParamError, "missing a required argument: 'b'"),
        ("divide", (1, 0), RPCRuntimeError, "ZeroDivisionError: division by zero"),
    ]
    for method, args, expected, text in cases:

        async def call_async(rpc: AsyncRPC) -> Any:
            return await rpc.call(method, *args)  # noqa: B023 - awaited at once

        same(
            sync_outcome(lambda rpc: rpc.call(method, *args), url(srv)),  # noqa: B023
            async_outcome(call_async, url(srv)),
            expected,
            text,
        )


def test_deadline_errors_are_the_same(srv: ServerThread) -> None:
    def call_sync(rpc: RPC) -> Any:
        return rpc.sleep.with_options(timeout=0.1)(5)

    async def call_async(rpc: AsyncRPC) -> Any:
        return await rpc.sleep.with_options(timeout=0.1)(5)

    sync, async_ = sync_outcome(call_sync, url(srv)), async_outcome(call_async, url(srv))
    # The message names the call's ID, which differs: compare the rest.
    assert sync[0] is async_[0] is DeadlineExceeded
    assert sync[1] == async_[1] == "call 'sleep' did not finish within its 0.1s deadline"


def test_login_errors_are_the_same(srv: ServerThread) -> None:
    addr = url(srv, password="wrong")
    sync = sync_outcome(lambda rpc: None, addr)
    async_ = async_outcome(lambda rpc: asyncio.sleep(0), addr)
    expected = (
        f"authentication failed for tcp://127.0.0.1:{srv.port}: "
        "check the user name and password in the address"
    )
    same(sync, async_, LoginError, expected)
    assert sync[1] == expected  # said once, not "authentication failed: authentication failed"


def test_connection_refused_is_the_same() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    same(
        sync_outcome(lambda rpc: None, addr),
        async_outcome(lambda rpc: asyncio.sleep(0), addr),
        ConnectionLostError,
        f"could not connect to {addr}: ",
    )


def test_a_server_going_away_is_the_same(fake: Callable[..., OldServer]) -> None:
    def vanish(conn: socket.socket, msg: dict[str, Any]) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    async def call_async(rpc: AsyncRPC) -> Any:
        return await rpc.anything()

    sync = sync_outcome(lambda rpc: rpc.anything(), fake(vanish).url)
    async_ = async_outcome(call_async, fake(vanish).url)
    assert sync[0] is async_[0] is ConnectionLostError
    assert sync[1].endswith(" closed by the server") and async_[1].endswith(" closed by the server")


def test_a_server_error_is_the_same(fake: Callable[..., OldServer]) -> None:
    def idle_close(conn: socket.socket, msg: dict[str, Any]) -> None:
        send(conn, {"MPRPC": "0.1", "CODE": 504})

    async def call_async(rpc: AsyncRPC) -> Any:
        return await rpc.anything()

    same(
        sync_outcome(lambda rpc: rpc.anything(), fake(idle_close).url),
        async_outcome(call_async, fake(idle_close).url),
        TimeoutException,
        "the server closed the idle connection",
    )


# -- deprecation warnings point at the caller's line, in both clients ------------------


def caught(run: Callable[[], Any]) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run()
    return [w for w in seen if issubclass(w.category, ExpireWarning)]


def here() -> int:
    """The line number of the caller's next line."""
    return sys._getframe(1).f_lineno + 1


def test_deprecation_warnings_point_at_the_callers_line(srv: ServerThread) -> None:
    lines: list[int] = []

    def sync_calls() -> None:
        with RPC(url(srv)) as rpc:
            lines.append(here())
            rpc.old_add(1, 2)
            lines.append(here())
            rpc.call("old_add", 1, 2)
            lines.append(here())
            rpc.method("old_add").with_options(timeout=5)(1, 2)
            lines.append(here())
            list(rpc.old_count(2))

    async def async_calls() -> None:
        async with AsyncRPC(url(srv)) as rpc:
            lines.append(here())
            await rpc.old_add(1, 2)
            lines.append(here())
            await rpc.call("old_add", 1, 2)
            lines.append(here())
            await rpc.method("old_add").with_options(timeout=5)(1, 2)
            lines.append(here())
            [i async for i in await rpc.old_count(2)]

    sync = caught(sync_calls)
    async_ = caught(lambda: arun(async_calls()))
    assert [w.category for w in sync] == [ExpireWarning] * 3 + [ExpireStreamWarning]
    assert [w.category for w in async_] == [w.category for w in sync]
    assert [(w.filename, w.lineno) for w in sync + async_] == [(__file__, n) for n in lines]
    assert str(sync[0].message) == str(async_[0].message) == "remote method 'old_add' is deprecated"


def test_malformed_welcome_is_the_same_protocol_error(fake: Callable[..., OldServer]) -> None:
    """A welcome with wrong types is a RemoteProtocolError naming the field, not a TypeError."""
    bad_fields: list[dict[str, Any]] = [
        {"FEATURES": [["x"]]},
        {"FEATURES": "cancel"},
        {"VERSION": 3},
        {"DESC": ["a"]},
        {"DEBUG": "yes"},
        {"COMPRESER": ["zlib"]},
        {"COMPRESER": "gzip"},
        {"TIMEOUT": "180"},
        {"TIMEOUT": True},
    ]
    for fields in bad_fields:
        welcome = {**OLD_WELCOME, **fields}
        outcomes = [
            sync_outcome(lambda rpc: None, fake(ignore, welcome=welcome).url),
            async_outcome(lambda rpc: asyncio.sleep(0), fake(ignore, welcome=welcome).url),
        ]
        key = next(iter(fields))
        for kind, text in outcomes:
            assert issubclass(kind, RemoteProtocolError), (fields, kind, text)
            assert text.startswith(f"malformed welcome reply from the server: {key} must be")
        assert outcomes[0] == outcomes[1]


def ignore(conn: socket.socket, msg: dict[str, Any]) -> None:
    """An `OldServer` that answers nothing after its welcome."""


def test_the_servers_deadline_reads_like_the_clients(fake: Callable[..., OldServer]) -> None:
    """Whichever clock runs out first, the caller sees the same DeadlineExceeded."""

    def late(conn: socket.socket, msg: dict[str, Any]) -> None:
        error = {"ID": msg["ID"], "MESSAGE": "deadline of 5s exceeded"}
        send(conn, {"MPRPC": "0.1", "CODE": 408, "MESSAGE": error})

    async def call_async(rpc: AsyncRPC) -> Any:
        return await rpc.slow.with_options(timeout=5)()

    text = "call 'slow' did not finish within its 5s deadline"
    same(
        sync_outcome(lambda rpc: rpc.slow.with_options(timeout=5)(), fake(late).url),
        async_outcome(call_async, fake(late).url),
        DeadlineExceeded,
        text,
    )


def test_a_malformed_welcome_logs_nothing(
    caplog: pytest.LogCaptureFixture, fake: Callable[..., OldServer]
) -> None:
    addr = fake(ignore, welcome={**OLD_WELCOME, "FEATURES": [["x"]]}).url
    with caplog.at_level(logging.DEBUG):
        kind, _ = async_outcome(lambda rpc: asyncio.sleep(0), addr)
    assert issubclass(kind, RemoteProtocolError)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_unexpected_failure_in_the_core_is_a_protocol_error(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the parser raises, a client reports a RemoteProtocolError, never a bare
    TypeError from its reader."""

    def broken(self: Any, data: bytes) -> Any:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(ClientConnection, "receive_data", broken)
    sync = sync_outcome(lambda rpc: None, url(srv))
    async_ = async_outcome(lambda rpc: asyncio.sleep(0), url(srv))
    same(sync, async_, RemoteProtocolError, "unreadable reply: TypeError")


def test_an_untrusted_certificate_is_the_same_error(
    serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server_ctx, _ = tls_contexts(tmp_path)
    srv = serve(ssl=server_ctx)
    addr = f"tls://{USER}:{PASSWORD}@127.0.0.1:{srv.port}"  # default verification
    same(
        sync_outcome(lambda rpc: None, addr),
        async_outcome(lambda rpc: asyncio.sleep(0), addr),
        ConnectionLostError,
        "certificate verify failed",
    )
