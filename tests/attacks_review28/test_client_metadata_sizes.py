"""README "Running in production": **Metadata**, **Client interceptors** and **Message
sizes**."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.testing import client_for, serve_in_thread, sync_client_for

from .kit import SEP, Raw, run, wait_until


def _server(**options: Any) -> Server:
    server = Server(("127.0.0.1", 0), **options)

    @server.register_function()
    async def meta() -> dict[str, str]:
        current_call().set_response_metadata("back", "yes")
        return dict(current_call().metadata)

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    @server.register_function()
    async def gen_sets() -> Any:
        current_call().set_response_metadata("from-body", "1")
        yield 1

    @server.register_function()
    async def returns_stream() -> Any:
        current_call().set_response_metadata("before-return", "1")

        async def items() -> Any:
            yield 1

        return items()

    return server


def request_ids(ctx: Any, call_next: Any) -> Any:
    return call_next(ctx.replace(metadata={**ctx.metadata, "request-id": "r-42"}))


def test_readme_sync_client_interceptor_wins_over_with_options() -> None:
    """ "(The interceptor runs after `with_options`, so its request ID wins here.)"; and
    `call_with_metadata` gives "(value, reply)" with the response metadata."""
    with sync_client_for(_server(), RPC, interceptors=[request_ids], timeout=5) as rpc:
        assert rpc.meta() == {"request-id": "r-42"}
        tagged = rpc.meta.with_options(metadata={"request-id": "mine", "other": "o"})
        value, reply = tagged.call_with_metadata()
    assert value == {"request-id": "r-42", "other": "o"}
    assert reply.get("back") == "yes"


def test_async_client_interceptor() -> None:
    """ "`async def` for `AsyncRPC`"."""

    async def tag(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx.replace(metadata={"a": "1"}))

    async def main() -> Any:
        async with client_for(_server(), AsyncRPC, interceptors=[tag]) as rpc:
            return await rpc.meta()

    assert run(main()) == {"a": "1"}


def test_blocking_client_refuses_async_interceptor() -> None:
    """ "plain functions for `RPC`": an `async def` one is refused up front."""

    async def tag(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    with pytest.raises(TypeError):
        RPC("tcp://127.0.0.1:1", interceptors=[tag])


def test_metadata_not_sent_without_feature() -> None:
    """ "it travels only when both sides negotiated the `metadata` feature": a server
    not offering it sees none, and the call still works."""
    server = _server(features=["length-framing", "cancel", "deadline", "oneway"])
    with sync_client_for(server, RPC, timeout=5) as rpc:
        value, reply = rpc.meta.with_options(metadata={"x": "1"}).call_with_metadata()
    assert value == {} and dict(reply) == {}


def test_raw_mprpc01_peer_never_sees_response_metadata() -> None:
    """ "an MPRPC 0.1 peer never sees it" (and a METADATA key it sends is ignored:
    docs/protocol.md "a server ignores it")."""
    server = _server()
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        reply = raw.call("m-1", "meta", METADATA={"x": "1"})
    assert reply["CODE"] == 200
    assert reply["MESSAGE"]["RESULT"] == {}
    assert "METADATA" not in reply["MESSAGE"]


def test_stream_metadata_from_generator_body_not_sent_but_returned_stream_is() -> None:
    """ "set it ... in an `async def` that returns the stream; what the generator's body
    sets is not sent"."""

    async def main() -> Any:
        async with client_for(_server()) as rpc:
            s1, m1 = await rpc.gen_sets.call_with_metadata()
            items1 = [i async for i in s1]
            s2, m2 = await rpc.returns_stream.call_with_metadata()
            items2 = [i async for i in s2]
            return dict(m1), items1, dict(m2), items2

    m1, items1, m2, items2 = run(main())
    assert items1 == [1] and items2 == [1]
    assert "from-body" not in m1
    assert m2.get("before-return") == "1"


# -- message sizes -----------------------------------------------------------------------


class Sizes:
    message_sizes = True

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.responses: list[int] = []
        self.none_seen = False

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        assert ctx.sizes is not None
        self.requests.append(ctx.sizes.request)
        ctx.sizes.on_response(self.responses.append)
        return await call_next(ctx)


def _reply_frames(raw: Raw, n: int) -> list[bytes]:
    """The next n raw frames (payload + separator) as they came off the wire."""
    frames: list[bytes] = []
    while len(frames) < n:
        while SEP not in raw.buf:
            data = raw.sock.recv(65536)
            assert data
            raw.buf += data
        body, _, raw.buf = raw.buf.partition(SEP)
        frames.append(body + SEP)
    return frames


def test_sizes_are_frames_on_the_wire_separator_framing() -> None:
    """ "`request` is the call's frame in bytes ... `ctx.sizes.on_response(callback)`
    calls `callback(size)` for each reply frame as it is sent ... A size is the frame on
    the wire (... framing included)"."""
    sizes = Sizes()
    server = _server(interceptors=[sizes])
    call = {"MPRPC": "0.1", "ID": "s-1", "METHOD": "echo", "ARGS": ["x" * 300]}
    sent = msgpack.packb(call) + SEP
    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        raw.sock.sendall(sent)
        (reply,) = _reply_frames(raw, 1)
        wait_until(lambda: sizes.responses, 5, "the response size")
    assert sizes.requests == [len(sent)]
    assert sizes.responses == [len(reply)]


def test_sizes_of_a_stream_each_reply() -> None:
    """A stream: "its start, each item and its end" each reported."""
    sizes = Sizes()
    server = Server(("127.0.0.1", 0), interceptors=[sizes])

    @server.register_function()
    async def count(n: int) -> Any:
        for i in range(n):
            yield i

    with serve_in_thread(server), Raw(server.port) as raw:
        raw.login()
        raw.send({"MPRPC": "0.1", "ID": "c-1", "METHOD": "count", "ARGS": [3]})
        frames = _reply_frames(raw, 5)
        wait_until(lambda: len(sizes.responses) >= 5, 5, "five sizes")
    assert sizes.responses == [len(f) for f in frames]


def test_sizes_compressed_frame() -> None:
    """ "compressed if negotiated": a zlib client's request size is the compressed frame."""
    sizes = Sizes()
    server = _server(interceptors=[sizes])
    with sync_client_for(server, RPC, compression="zlib", timeout=5) as rpc:
        assert rpc.echo("y" * 50_000) == "y" * 50_000
        wait_until(lambda: sizes.responses, 5, "the response size")
    assert sizes.requests[0] < 5_000 and sizes.responses[0] < 5_000


def test_sizes_none_when_nobody_asks() -> None:
    """ "Nothing is measured for a server ... none of whose interceptors asks (`ctx.sizes`
    is None)"."""
    seen: list[Any] = []

    async def plain(ctx: Any, call_next: Any) -> Any:
        seen.append(ctx.sizes)
        return await call_next(ctx)

    with sync_client_for(_server(interceptors=[plain]), RPC, timeout=5) as rpc:
        rpc.echo(1)
    assert seen == [None]


def test_client_sizes_request_after_call_next() -> None:
    """Client side: "`request` is the call's frame in bytes (on a client, once
    `call_next` returned)" and on_response reports the reply frame."""
    got: dict[str, Any] = {}

    class ClientSizes:
        message_sizes = True

        def __call__(self, ctx: Any, call_next: Any) -> Any:
            responses: list[int] = []
            ctx.sizes.on_response(responses.append)
            value = call_next(ctx)
            got["request"] = ctx.sizes.request
            got["responses"] = responses
            return value

    with sync_client_for(_server(), RPC, interceptors=[ClientSizes()], timeout=5) as rpc:
        assert rpc.echo("z" * 100) == "z" * 100
    assert got["request"] > 100
    assert len(got["responses"]) == 1 and got["responses"][0] > 100


def test_readme_bytes_example() -> None:
    """The README's `Bytes` interceptor example, as written."""
    import collections

    class Bytes:
        message_sizes = True

        def __init__(self) -> None:
            self.total: collections.Counter[str] = collections.Counter()

        async def __call__(self, ctx: Any, call_next: Any) -> Any:
            self.total[ctx.method] += ctx.sizes.request
            ctx.sizes.on_response(lambda size: self.total.update({ctx.method: size}))
            return await call_next(ctx)

    async def main() -> int:
        counted = Bytes()
        server = Server(("127.0.0.1", 0), interceptors=[counted])

        @server.register_function()
        async def echo(text: str) -> str:
            return text

        async with client_for(server) as rpc:
            await rpc.echo("x" * 1000)
        await asyncio.sleep(0)
        return counted.total["echo"]

    assert run(main()) > 2000
