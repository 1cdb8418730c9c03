"""README: the `login_attempts`/`login_backoff` row of the options table, and the
thread executor's **Fair share** paragraph."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from pymprpc import AsyncRPC, Server
from pymprpc.testing import client_for, serve_in_thread

from .kit import Raw, Records, run

PASSWORD = "pw-Hunter2-zz"


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), auth=[("bob", PASSWORD)], **options)

    @server.register_function()
    async def ok() -> str:
        return "ok"

    return server


def _login(port: int, user: str, password: str) -> int:
    with Raw(port) as raw:
        return int(raw.login(user, password)["CODE"])


def test_backoff_after_login_attempts_then_correct_password_refused() -> None:
    """ "`login_attempts`, `login_backoff` | 5, 1 s | failed logins in a row allowed per
    peer address and per user name; then each further failure blocks that address and
    that user for `login_backoff` seconds" (the right password is refused meanwhile),
    "logged at WARNING without the password"."""
    server = _server(login_attempts=2, login_backoff=1)
    with Records(level=logging.DEBUG) as rec, serve_in_thread(server):
        assert _login(server.port, "bob", "bad1") == 501
        assert _login(server.port, "bob", "bad2") == 501
        assert _login(server.port, "bob", "bad3") == 501  # starts the back-off
        assert _login(server.port, "bob", PASSWORD) == 501  # blocked meanwhile
        time.sleep(1.2)
        assert _login(server.port, "bob", PASSWORD) == 100
    warnings = [r.getMessage() for r in rec.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 3, warnings
    text = "\n".join(r.getMessage() for r in rec.records)
    assert PASSWORD not in text and "bad1" not in text and "bad3" not in text


def test_unknown_user_name_shown_as_digest() -> None:
    """ "(and with the user name only if it is a configured account: other text may be a
    password typed in the wrong field, so it shows as a keyed digest)"."""
    server = _server(login_backoff=0)
    secret = "MyOtherPassword-77"
    with Records(level=logging.DEBUG) as rec, serve_in_thread(server):
        assert _login(server.port, secret, "x") == 501
    text = "\n".join(r.getMessage() for r in rec.records)
    assert secret not in text
    assert any(r.levelno == logging.WARNING for r in rec.records)


def test_backoff_zero_disables() -> None:
    """ "`login_backoff=0` disables it": many failures, then the right password works."""
    server = _server(login_attempts=1, login_backoff=0)
    with serve_in_thread(server):
        for i in range(4):
            assert _login(server.port, "bob", f"bad{i}") == 501
        assert _login(server.port, "bob", PASSWORD) == 100


def test_thread_fair_share_one_connection_at_most_workers_minus_one() -> None:
    """ "**Fair share**: one connection runs at most all the pool's threads but one
    (`max_workers - 1`, at least 1) at a time; its further thread calls wait ... So one
    client that pipelines slow calls cannot make another client's call wait behind all
    of them"."""
    server = Server(("127.0.0.1", 0), max_workers=3)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def slow(t: float) -> int:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(t)
        with lock:
            state["now"] -= 1
        return 1

    def quick() -> str:
        return "quick"

    server.register_function("slow", executor="thread")(slow)
    server.register_function("quick", executor="thread")(quick)

    async def main() -> tuple[float, int]:
        async with client_for(server) as hog:
            other = AsyncRPC(f"tcp://127.0.0.1:{server.port}", timeout=10)
            await other.connect()
            try:
                calls = [asyncio.ensure_future(hog.slow(1.0)) for _ in range(4)]
                await asyncio.sleep(0.1)
                started = time.monotonic()
                assert await other.quick() == "quick"
                waited = time.monotonic() - started
                await asyncio.gather(*calls)
            finally:
                await other.close()
        return waited, state["peak"]

    waited, peak = run(main())
    assert peak == 2, peak
    assert waited < 0.6, waited


@pytest.mark.parametrize("workers", [1])
def test_thread_fair_share_at_least_one(workers: int) -> None:
    """ "(`max_workers - 1`, at least 1)": with one thread, a connection still runs."""
    server = Server(("127.0.0.1", 0), max_workers=workers)

    def f() -> int:
        return 1

    server.register_function("f", executor="thread")(f)

    async def main() -> list[int]:
        async with client_for(server) as rpc:
            return list(await asyncio.gather(*(rpc.f() for _ in range(3))))

    assert run(main()) == [1, 1, 1]
