"""The message-size hook (`MessageSizes`): interceptors that ask learn the exact frame
sizes of each call's request and replies, on the server and both clients; nothing is
measured for anyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import RawClient, arun, pack
from pymprpc import RPC, Server
from pymprpc.client.interceptors import ClientCallContext
from pymprpc.context import CallContext, MessageSizes
from pymprpc.interceptors.chain import CallNext
from pymprpc.protocol import SEPARATOR, ClientConnection, ServerConnection
from pymprpc.server import handler as handler_module
from pymprpc.testing import client_for, serve_in_thread, server_url

V = {"MPRPC": "0.1"}
PAYLOAD = "p" * 300  # a known payload, larger than every header


class ServerRecorder:
    """A server interceptor that asks for sizes and writes them down."""

    message_sizes = True

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.responses: list[int] = []

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        assert ctx.sizes is not None
        self.requests.append(ctx.sizes.request)
        ctx.sizes.on_response(self.responses.append)
        return await call_next(ctx)


class ClientRecorder:
    """A client interceptor (async or, via `sync`, blocking) that records sizes."""

    message_sizes = True

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.responses: list[int] = []

    def _before(self, ctx: ClientCallContext) -> MessageSizes:
        assert ctx.sizes is not None
        ctx.sizes.on_response(self.responses.append)
        return ctx.sizes

    async def __call__(self, ctx: ClientCallContext, call_next: Any) -> Any:
        sizes = self._before(ctx)
        try:
            return await call_next(ctx)
        finally:
            self.requests.append(sizes.request)

    def sync(self, ctx: ClientCallContext, call_next: Any) -> Any:
        sizes = self._before(ctx)
        try:
            return call_next(ctx)
        finally:
            self.requests.append(sizes.request)


ClientRecorder.sync.message_sizes = True  # type: ignore[attr-defined]


class Plain:
    """A server interceptor that does not ask for sizes."""

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        assert ctx.sizes is None
        return await call_next(ctx)


def build(*interceptors: Any) -> Server:
    server = Server(("127.0.0.1", 0), interceptors=list(interceptors))

    async def echo(text: str) -> str:
        return text

    async def count(n: int, text: str) -> AsyncIterator[str]:
        for i in range(n):
            yield f"{i}{text}"

    async def broken(text: str) -> None:
        raise ValueError(text)

    server.register_function("echo")(echo)
    server.register_function("count")(count)
    server.register_function("broken")(broken)
    return server


def test_the_server_reports_the_frames_it_received_and_sent() -> None:
    recorder = ServerRecorder()
    with serve_in_thread(build(recorder)) as running, RawClient(running.server.port) as c:
        assert c.login()["CODE"] == 100
        sent: list[int] = []
        received: list[int] = []
        for msg, replies in (
            ({**V, "ID": "u", "METHOD": "echo", "ARGS": [PAYLOAD]}, 1),
            ({**V, "ID": "s", "METHOD": "count", "ARGS": [3, PAYLOAD]}, 5),  # 201, 3x202, 206
            ({**V, "ID": "e", "METHOD": "broken", "ARGS": [PAYLOAD]}, 1),
        ):
            c.send(msg)
            sent.append(len(pack(msg)) + len(SEPARATOR))
            for _ in range(replies):
                received.append(len(c.recv_frame()) + len(SEPARATOR))
    assert recorder.requests == sent
    assert recorder.responses == received
    # The payload is in the result, the items and the error; not in 201 and 206.
    assert all(received[i] > len(PAYLOAD) for i in (0, 2, 3, 4, 6))
    assert received[1] < 100 and received[5] < 100


@pytest.mark.parametrize("framing", ["length", "separator"])
def test_both_clients_see_the_sizes_the_server_sees(framing: str) -> None:
    features = {"features": ()} if framing == "separator" else {}
    server_side = ServerRecorder()
    server = build(server_side)
    async_side = ClientRecorder()

    async def main() -> None:
        async with client_for(server, interceptors=[async_side], **features) as rpc:
            assert await rpc.echo(PAYLOAD) == PAYLOAD
            assert [x async for x in await rpc.count(3, PAYLOAD)] == [
                f"{i}{PAYLOAD}" for i in range(3)
            ]
            with pytest.raises(Exception, match=PAYLOAD[:10]):
                await rpc.broken(PAYLOAD)

    arun(main())
    assert async_side.requests == server_side.requests
    assert async_side.responses == server_side.responses
    assert len(server_side.responses) == 7 and all(server_side.requests)

    server_side.requests.clear()
    server_side.responses.clear()
    sync_side = ClientRecorder()
    with (
        serve_in_thread(server) as running,
        RPC(server_url(running.server), interceptors=[sync_side.sync], **features) as rpc,
    ):
        assert rpc.echo(PAYLOAD) == PAYLOAD
        assert list(rpc.count(3, PAYLOAD)) == [f"{i}{PAYLOAD}" for i in range(3)]
    assert sync_side.requests == server_side.requests
    assert sync_side.responses == server_side.responses


async def _plain_client(ctx: ClientCallContext, call_next: Any) -> Any:
    assert ctx.sizes is None
    return await call_next(ctx)


@pytest.mark.parametrize(
    "setup",
    [
        "no interceptor",  # not even a call context is built
        "interceptors that do not ask",
        "interceptors that ask",
    ],
)
def test_nothing_is_measured_unless_an_interceptor_asks(
    monkeypatch: pytest.MonkeyPatch, setup: str
) -> None:
    counts = {"sizes": 0, "measured replies": 0, "client measures": 0}
    requests: list[Any] = []

    def counting(name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(MessageSizes, "__init__", counting("sizes", MessageSizes.__init__))
    measured = handler_module._MeasuredConnection
    monkeypatch.setattr(measured, "__init__", counting("measured replies", measured.__init__))
    monkeypatch.setattr(
        ClientConnection, "take_sizes", counting("client measures", ClientConnection.take_sizes)
    )
    original_call = ServerConnection._call

    def call(self: ServerConnection, msg: dict[str, Any]) -> Any:
        request = original_call(self, msg)
        requests.append(request)
        return request

    monkeypatch.setattr(ServerConnection, "_call", call)
    original_receive_call = ServerConnection.receive_call

    def receive_call(self: ServerConnection, data: bytes) -> Any:
        received = original_receive_call(self, data)
        if type(received) is tuple:
            requests.append(received)  # the fast lane: no CallRequest, no frame size
        return received

    monkeypatch.setattr(ServerConnection, "receive_call", receive_call)
    server_interceptors, client_interceptors = {
        "no interceptor": ([], []),
        "interceptors that do not ask": ([Plain()], [_plain_client]),
        "interceptors that ask": ([ServerRecorder()], [ClientRecorder()]),
    }[setup]
    server = build(*server_interceptors)
    calls = 20

    async def main() -> None:
        async with client_for(server, interceptors=client_interceptors) as rpc:
            for _ in range(calls):
                assert await rpc.echo(PAYLOAD) == PAYLOAD

    arun(main())
    assert len(requests) == calls
    if setup == "interceptors that ask":
        # One MessageSizes per call on each side, one measured reply per call.
        assert counts["sizes"] == 2 * calls
        assert counts["measured replies"] == calls
        assert counts["client measures"] >= calls
        assert all(isinstance(r.size, int) for r in requests)
    else:
        assert counts == {"sizes": 0, "measured replies": 0, "client measures": 0}
        assert not any(hasattr(r, "size") for r in requests)  # no frame size computed
