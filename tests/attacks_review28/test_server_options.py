"""README "### Server": the registration rules and the table of `Server(addr, ...)`
options."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from pymprpc import RPC, Server, current_call
from pymprpc.errors import (
    CancelledError,
    NotFindError,
    ResultLimitError,
    RPCRuntimeError,
    RpcUnavailableException,
)
from pymprpc.server import DuplicateMethodError
from pymprpc.testing import serve_in_thread, sync_client_for

from .kit import Raw, wait_until


async def ok() -> str:
    return "ok"


async def nap(t: float) -> str:
    await asyncio.sleep(t)
    return "rested"


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)
    server.register_function()(ok)
    server.register_function()(nap)
    return server


@pytest.mark.parametrize("option", ["version", "description"])
@pytest.mark.parametrize("value", [2, 1.5, b"1.0"])
def test_version_and_description_not_str_refused_or_served(option: str, value: Any) -> None:
    """README: "`version`, `description` | `None` | sent in the welcome reply";
    docs/protocol.md: `"VERSION": str|null,  # Server(version=...)`. Every other option
    of the wrong type is refused by `Server(...)` with a TypeError ("convert it first");
    a value that is accepted must give a server clients can connect to."""
    with pytest.raises(TypeError, match=f"{option} must be a str or None"):
        _server(**{option: value})
    with sync_client_for(_server(**{option: "1.0"}), RPC, timeout=5) as rpc:
        assert rpc.ok() == "ok"


@pytest.mark.parametrize("option", ["debug", "reuse_port"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_flags_that_are_not_bool_are_refused(option: str, value: Any) -> None:
    """(Session 21, aside of this review) `reuse_port="no"` was taken as true."""
    with pytest.raises(TypeError, match=f"{option} must be True or False"):
        _server(**{option: value})


def test_version_and_description_in_welcome_and_subclass_docstring() -> None:
    """ "sent in the welcome reply (a subclass's docstring is the default
    description)"."""

    class Described(Server):
        """Serves the inventory."""

    server = Described(("127.0.0.1", 0), version="1.2")
    with serve_in_thread(server), Raw(server.port) as raw:
        welcome = raw.login()
    assert welcome["VERSION"] == "1.2" and welcome["DESC"] == "Serves the inventory."


def test_account_with_empty_user_name() -> None:
    """README: "`auth` | list of `(user, password)`"; "Call context ... authenticated
    user". `Server(auth=[("", "pw")])` is accepted and its account logs in; then the
    connection is that account's (user ""), not an anonymous one -- or the account is
    refused up front."""
    with pytest.raises(ValueError, match="a user name must not be empty"):
        Server(("127.0.0.1", 0), auth=[("", "pw")])
    server = Server(("127.0.0.1", 0), auth=[("u", "pw")])

    @server.register_function()
    async def who() -> Any:
        return current_call().user

    with sync_client_for(server, RPC, user="u", password="pw", timeout=5) as rpc:
        assert rpc.who() == "u"


def test_duplicate_name_names_both() -> None:
    """ "registering another function ... under a name already taken raises
    `DuplicateMethodError` naming both, unless you pass `replace=True`"."""
    server = _server()

    async def other_ok() -> str:
        return "other"

    with pytest.raises(DuplicateMethodError) as exc:
        server.register_function("ok")(other_ok)
    assert "ok" in str(exc.value) and "other_ok" in str(exc.value)
    server.register_function("ok", replace=True)(other_ok)

    class Svc:
        def nap(self) -> None: ...

    with pytest.raises(DuplicateMethodError):
        server.register_instance(Svc())
    server.register_instance(Svc(), replace=True)


def test_atomic_registration_restores_replaced_method() -> None:
    """ "`with server.atomic_registration(): ...` (a block that raises leaves the server's
    methods and services as they were)" -- a `replace=True` inside it included."""
    server = _server()

    async def newer() -> str:
        return "newer"

    with pytest.raises(RuntimeError), server.atomic_registration():
        server.register_function("ok", replace=True)(newer)
        server.register_function("added")(newer)
        raise RuntimeError("undo")
    with sync_client_for(server, RPC, timeout=5) as rpc:
        assert rpc.ok() == "ok"
        with pytest.raises(NotFindError):
            rpc.added()


def test_debug_sends_frame() -> None:
    """ "`debug` | `False` | send tracebacks (`FRAME`) with call errors"."""
    for debug in (True, False):
        server = Server(("127.0.0.1", 0), debug=debug)

        @server.register_function()
        async def boom() -> None:
            raise ValueError("x")

        with sync_client_for(server, RPC, timeout=5) as rpc, pytest.raises(RPCRuntimeError) as exc:
            rpc.boom()
        tb = exc.value.remote_traceback
        assert (tb is not None and "ValueError" in tb) is debug


def test_running_call_keeps_connection_from_idle_timeout() -> None:
    """ "`idle_timeout` ... seconds without a complete message (... a running call does
    [count])"."""
    server = _server(idle_timeout=0.5)
    with sync_client_for(server, RPC, timeout=10) as rpc:
        assert rpc.nap(1.5) == "rested"
        assert rpc.ok() == "ok"


def test_idle_connection_gets_504_and_close() -> None:
    """ "... before 504 and close"."""
    server = _server(idle_timeout=0.3)
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        started = time.monotonic()
        assert raw.recv()["CODE"] == 504
        assert time.monotonic() - started < 5
        with pytest.raises((EOFError, OSError)):
            raw.recv()


def test_kept_results_zero_every_return_false_call_gets_405() -> None:
    """ "`kept_results` ... 0 keeps none (every RETURN-false call gets 405)"."""
    server = _server(kept_results=0)
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        raw.send({"MPRPC": "0.1", "ID": "k-1", "METHOD": "ok", "ARGS": [], "RETURN": False})
        reply = raw.recv()
    assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "k-1", reply


def test_max_inflight_beyond_is_503() -> None:
    """ "`max_inflight` | 1000 | calls running per connection; beyond it a call gets
    503"."""
    server = _server(max_inflight=1)
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        raw.send({"MPRPC": "0.1", "ID": "a", "METHOD": "nap", "ARGS": [0.5]})
        raw.send({"MPRPC": "0.1", "ID": "b", "METHOD": "ok", "ARGS": []})
        replies = {r["MESSAGE"]["ID"]: r["CODE"] for r in (raw.recv(), raw.recv())}
    assert replies == {"a": 200, "b": 503}


def test_max_connections_beyond_is_503_and_close() -> None:
    """ "`max_connections` ... beyond it new connections get 503 and are closed"."""
    server = _server(max_connections=1)
    with serve_in_thread(server), Raw(server.port) as first:
        first.login()
        with Raw(server.port) as second:
            assert second.recv()["CODE"] == 503
            with pytest.raises((EOFError, OSError)):
                second.recv()
        assert first.call("x", "ok")["CODE"] == 200


def test_return_false_result_survives_client_disconnect() -> None:
    """ "A call with `RETURN: false` runs to completion even if its client disconnects (a
    later `system.getresult` from the same account gets the outcome)"."""
    server = _server(auth=[("bob", "pw")])
    with serve_in_thread(server) as running:
        with RPC(running.url_for("bob", "pw"), timeout=10) as rpc:
            call_id = rpc.delay("nap", 0.5)
        with RPC(running.url_for("bob", "pw"), timeout=10) as rpc:
            assert rpc.system.getresult(call_id) == "rested"


def test_getresult_after_shutdown_cut_never_hangs() -> None:
    """ "one cancelled ... at shutdown keeps a 407/503 for `getresult`, which never
    hangs" (docs/protocol.md: "a `RETURN: false` call keeps that error as its outcome")."""
    server = _server(grace_period=0.2)
    with serve_in_thread(server) as running, RPC(running.url, timeout=10) as rpc:
        call_id = rpc.delay("nap", 30)
        out: list[Any] = []

        def fetch() -> None:
            try:
                out.append(rpc.system.getresult(call_id))
            except BaseException as exc:  # noqa: BLE001
                out.append(exc)

        t = threading.Thread(target=fetch)
        t.start()
        wait_until(lambda: server.running_call_count >= 2, 5, "both calls")
        server.stop()
        t.join(10)
        assert not t.is_alive()
    assert isinstance(out[0], (CancelledError, RpcUnavailableException)), out


def test_return_false_cancelled_keeps_407() -> None:
    """ "one cancelled with CANCEL ... keeps a 407/503 for `getresult`"."""
    server = _server()
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.send({"MPRPC": "0.1", "AUTH": {}, "FEATURES": ["cancel"]})
        raw.recv()
        raw.send({"MPRPC": "0.1", "ID": "d-1", "METHOD": "nap", "ARGS": [30], "RETURN": False})
        time.sleep(0.2)
        raw.send({"MPRPC": "0.1", "ID": "d-1", "CANCEL": True})
        time.sleep(0.2)
        reply = raw.call("g-1", "system.getresult", "d-1")
    assert reply["CODE"] in (407, 503), reply


def test_stop_from_any_thread() -> None:
    """ "`server.stop()` may be called from any thread"."""
    server = _server()
    with serve_in_thread(server) as running:
        with RPC(running.url, timeout=5) as rpc:
            assert rpc.ok() == "ok"
        t = threading.Thread(target=server.stop)
        t.start()
        t.join(5)
        wait_until(lambda: not server.running, 10, "the server to stop")


def test_result_limit_is_405() -> None:
    """ "`max_message_size` | 16 MiB | largest message either way ... (505 and close)"
    for what a client sends; a result over it is answered 405 (docs/protocol.md)."""
    server = Server(("127.0.0.1", 0), max_message_size=10_000)

    @server.register_function()
    async def big() -> bytes:
        return b"x" * 20_000

    server.register_function()(ok)
    with sync_client_for(server, RPC, timeout=5) as rpc:
        with pytest.raises(ResultLimitError):
            rpc.big()
        assert rpc.ok() == "ok"
