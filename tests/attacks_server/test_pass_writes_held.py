"""Replies held to the end of a loop pass (PassWrites: a server with more than one
connection open), driven by hand through the connection shell's transport callbacks, in
the orders an event loop may call them within one pass. Whatever happens between the read
and the end of the pass, each connection gets exactly the replies it would get had they
been written inside the read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from service import PASSWORD, USER, Probe, build_server

from pymprpc.errors import TimeoutException
from pymprpc.protocol import ClientConnection, Result
from pymprpc.server.handler import ConnectionHandler
from tests.unit.test_handler_writes import RecordingTransport, call


async def _open(server: Any) -> tuple[ConnectionHandler, RecordingTransport, ClientConnection]:
    handler = ConnectionHandler(server._core)
    transport = RecordingTransport()
    handler.connection_made(transport)
    client = ClientConnection(USER, PASSWORD)
    client.start()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(
        lambda: (handler.data_received(b"".join(client.chunks_to_send())), done.set_result(None))
    )
    await done
    client.receive_data(b"".join(transport.writes))
    transport.writes.clear()
    return handler, transport, client


def _server() -> Any:
    server = build_server(Probe())

    @server.register_function()
    async def plus(a: int, b: int) -> int:
        return a + b  # never suspends: answered within the read

    @server.register_function()
    async def stop(kind: str) -> None:
        raise {"exit": SystemExit, "kbi": KeyboardInterrupt, "cancel": asyncio.CancelledError}[
            kind
        ]()

    return server


async def _one_pass(step: Callable[[], None]) -> None:
    """Run `step` as one callback of a loop pass, then let the pass end."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def run() -> None:
        try:
            step()
        finally:
            done.set_result(None)

    loop.call_soon(run)
    await done
    for _ in range(3):
        await asyncio.sleep(0)


def _values(client: ClientConnection, transport: RecordingTransport) -> list[Any]:
    events = client.receive_data(b"".join(transport.writes))
    return [e.value if isinstance(e, Result) else type(e).__name__ for e in events]


@pytest.mark.timeout(20)
def test_a_client_that_half_closes_in_the_pass_of_its_call_gets_the_reply() -> None:
    """uvloop reads a socket on until it would block: a client's call and its EOF
    (shutdown(SHUT_WR) right after writing) reach data_received and eof_received in one
    pass. Nothing is owed any more (the call finished in the read), so eof_received says
    close, and the transport closes: the held reply must have been written by then."""

    async def main() -> None:
        server = _server()
        (a, ta, ca), (_b, _tb, _cb) = [await _open(server) for _ in range(2)]

        def step() -> None:
            a.data_received(call(ca, "plus", 1, 2))
            if not a.eof_received():
                ta.close()  # what the transport does when eof_received returns False

        await _one_pass(step)
        assert _values(ca, ta) == [3]

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["exit", "kbi", "cancel"])
def test_a_handler_raising_base_exceptions_does_not_strand_another_connections_reply(
    kind: str,
) -> None:
    async def main() -> None:
        server = _server()
        (a, ta, ca), (b, _tb, cb) = [await _open(server) for _ in range(2)]
        escaped: list[BaseException] = []

        def step() -> None:
            a.data_received(call(ca, "plus", 1, 2))
            try:
                b.data_received(call(cb, "stop", kind))
            except BaseException as exc:  # noqa: BLE001 - what the loop would get
                escaped.append(exc)

        await _one_pass(step)
        assert _values(ca, ta) == [3]
        assert not escaped or kind != "cancel"

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.timeout(20)
def test_replies_held_then_a_general_read_on_the_same_connection_keep_their_order() -> None:
    async def main() -> None:
        server = _server()
        (a, ta, ca), (b, tb, cb) = [await _open(server) for _ in range(2)]

        def step() -> None:
            a.data_received(call(ca, "plus", 1, 0))  # held
            b.data_received(call(cb, "plus", 5, 5))  # held
            two = call(ca, "plus", 2, 0) + call(ca, "plus", 3, 0)
            a.data_received(two[:7])  # a partial frame: the general path, which writes
            a.data_received(two[7:])
            a.data_received(call(ca, "plus", 4, 0))  # held again

        await _one_pass(step)
        assert _values(ca, ta) == [1, 2, 3, 4]
        assert _values(cb, tb) == [10]

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.timeout(20)
def test_shutdown_in_the_pass_of_held_replies_writes_them_first() -> None:
    async def main() -> None:
        server = _server()
        (a, ta, ca), (b, tb, cb) = [await _open(server) for _ in range(2)]

        def step() -> None:
            a.data_received(call(ca, "plus", 1, 2))
            b.data_received(call(cb, "plus", 2, 2))
            a.close()  # what shutdown does to each connection
            b.fail(TimeoutException("idle"))

        await _one_pass(step)
        assert _values(ca, ta) == [3]
        assert _values(cb, tb)[:1] == [4]

    asyncio.run(asyncio.wait_for(main(), 10))
