"""`system.health`: per service, set by the application, NOT_SERVING while draining; and
the load-balancer check bytes of `pymprpc.healthcheck`."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import msgpack
import pytest

from helpers import arun
from pymprpc import Server
from pymprpc.healthcheck import SERVING_MARK, check_messages, haproxy_config, main
from pymprpc.protocol import SEPARATOR
from pymprpc.testing import client_for


def test_health_per_service_and_while_draining() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "done"

    server = Server(("127.0.0.1", 0), grace_period=30)
    server.register_function("slow")(slow)
    server.health.set("billing", "SERVING")

    async def main() -> None:
        async with client_for(server) as rpc:
            assert await rpc.system.health() == "SERVING"
            assert await rpc.system.health("billing") == "SERVING"
            assert await rpc.system.health("nobody-set-this") == "UNKNOWN"
            server.health.set("billing", "NOT_SERVING")
            assert await rpc.system.health(service="billing") == "NOT_SERVING"
            server.health.set("billing", "SERVING")

            call = asyncio.ensure_future(rpc.slow())
            await started.wait()
            closing = asyncio.ensure_future(server.close())
            while not server.draining:  # close() starts draining in its first step
                await asyncio.sleep(0)
            # Still answered (other new calls get 503), and everything is NOT_SERVING.
            assert await rpc.system.health() == "NOT_SERVING"
            assert await rpc.system.health("billing") == "NOT_SERVING"
            release.set()
            assert await call == "done"
            await closing

    arun(main())


def test_health_service_must_be_a_string() -> None:
    async def main() -> None:
        async with client_for(Server(("127.0.0.1", 0))) as rpc:
            with pytest.raises(Exception, match="service must be a string"):
                await rpc.system.health(3)

    arun(main())


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        Server(("127.0.0.1", 0)).health.set("x", "FINE")


def read_frame(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(SEPARATOR):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_load_balancer_check_bytes_get_serving_then_not_serving() -> None:
    auth, call = check_messages("lb", "pw")
    server = Server(("127.0.0.1", 0), auth=[("lb", "pw")], grace_period=30)
    release, started = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    server.register_function("hold")(hold)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with client_for(server, user="lb", password="pw") as rpc:
            sock = socket.create_connection(server.address, timeout=10)
            with sock:
                await loop.run_in_executor(None, sock.sendall, auth)
                welcome = msgpack.unpackb(
                    (await loop.run_in_executor(None, read_frame, sock))[:-11]
                )
                assert welcome["CODE"] == 100
                await loop.run_in_executor(None, sock.sendall, call)
                reply = await loop.run_in_executor(None, read_frame, sock)
                assert SERVING_MARK in reply  # what HAProxy's last expect looks for
                assert msgpack.unpackb(reply[: -len(SEPARATOR)])["MESSAGE"]["RESULT"] == "SERVING"

                held = asyncio.ensure_future(rpc.hold())
                await started.wait()
                closing = asyncio.ensure_future(server.close())
                while not server.draining:
                    await asyncio.sleep(0)
                await loop.run_in_executor(None, sock.sendall, call)
                reply = await loop.run_in_executor(None, read_frame, sock)
                assert SERVING_MARK not in reply  # NOT_SERVING does not match
                assert b"NOT_SERVING" in reply
                release.set()
                await held
                await closing

    arun(main())


def test_haproxy_config_is_what_the_cli_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--user", "lb", "--password", "pw", "--service", "billing"]) == 0
    printed = capsys.readouterr().out
    assert printed == haproxy_config("lb", "pw", "billing") + "\n"
    auth, call = check_messages("lb", "pw", "billing")
    assert f"tcp-check send-binary {auth.hex()}" in printed
    assert f"tcp-check send-binary {call.hex()}" in printed
    assert msgpack.unpackb(call[: -len(SEPARATOR)])["ARGS"] == ["billing"]


def test_the_readme_shows_what_the_cli_prints() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    shown = readme.split("(its output, for a server with the account bob/b-pw) -->\n```\n")[1]
    assert shown.split("```")[0] == haproxy_config("bob", "b-pw") + "\n"


def test_a_separator_in_the_credentials_is_refused_not_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, the CLI printed a check that could never pass (its login frame cut short)."""
    assert main(["--user", "lb", "--password", "a##PRO-END##b"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "password contains '##PRO-END##'" in out.err and "Traceback" not in out.err
    with pytest.raises(ValueError, match="service name contains"):
        check_messages(service="x##PRO-END##")


@pytest.mark.parametrize("tail", ["##PRO-END", "##PRO-END#"])
def test_a_password_or_service_ending_like_the_separator_begins_is_refused(
    capsys: pytest.CaptureFixture[str], tail: str
) -> None:
    """Its message then ends with the start of the separator, which the one appended
    would complete early: the server would read a login frame cut short."""
    assert main(["--user", "lb", "--password", "pw" + tail]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert "password ends like '##PRO-END##' begins" in out.err
    with pytest.raises(ValueError, match="service name ends like"):
        check_messages(service="billing" + tail)
    auth, call = check_messages("lb", "pw#", "billing#")  # a '#' alone is fine
    assert auth.endswith(b"##PRO-END##") and call.endswith(b"##PRO-END##")
