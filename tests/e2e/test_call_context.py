"""`current_call()` in handlers under every executor, and call metadata both ways."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from servicers import StubCalculator

from generated_examples.calculator.client import AsyncCalculatorClient, CalculatorClient
from generated_examples.calculator.server import register_calculator
from helpers import RawClient, arun, connections, tls_contexts
from pymprpc import RPC, AsyncRPC, Server, current_call
from pymprpc.context import CallContext
from pymprpc.testing import client_for

AUTH = [("alice", "secret")]


def describe() -> dict[str, Any]:
    """What a handler sees of its call, in a form that survives the wire."""
    ctx = current_call()
    ctx.set_response_metadata("seen-by", ctx.method)
    return {
        "id": ctx.id,
        "method": ctx.method,
        "peer_host": ctx.peer[0] if ctx.peer else None,
        "user": ctx.user,
        "metadata": dict(ctx.metadata),
        "remaining": ctx.time_remaining(),
    }


async def describe_async() -> dict[str, Any]:
    return describe()


async def describe_stream() -> AsyncIterator[dict[str, Any]]:
    yield describe()
    yield describe()


def make_server() -> Server:
    server = Server(("127.0.0.1", 0), auth=AUTH)
    server.register_function("on_loop")(describe_async)
    server.register_function("streamed")(describe_stream)
    server.register_function("in_thread", executor="thread")(describe)
    server.register_function("in_process", executor="process")(describe)
    server.register_function("inline", executor="inline")(describe)
    return server


METHODS = ["on_loop", "in_thread", "in_process", "inline"]


@pytest.mark.parametrize("method", METHODS)
def test_a_handler_reads_its_context_under_every_executor(
    mprpc_client: Callable[..., RPC], method: str
) -> None:
    rpc = mprpc_client(make_server(), user="alice", password="secret")
    proxy = rpc.method(method).with_options(timeout=30, metadata={"request-id": "r-1"})
    seen, reply = proxy.call_with_metadata()
    assert seen["method"] == method
    assert seen["user"] == "alice"
    assert seen["peer_host"] == "127.0.0.1"
    assert seen["metadata"] == {"request-id": "r-1"}
    assert 0 < seen["remaining"] <= 30
    assert len(seen["id"]) > 8
    # Response metadata set by the handler comes back, from a worker process too.
    assert reply == {"seen-by": method}


def test_a_stream_reads_its_context_and_sends_response_metadata() -> None:
    async def main() -> None:
        async with client_for(make_server(), user="alice", password="secret") as rpc:
            stream, reply = await rpc.streamed.with_options(
                metadata={"k": "v"}
            ).call_with_metadata()
            items = [item async for item in stream]
        assert [i["metadata"] for i in items] == [{"k": "v"}] * 2
        assert items[0]["remaining"] is None  # no deadline: none
        # The 201 goes out before the generator runs: what its body sets comes too late
        # (an interceptor can set response metadata for a stream, see test_interceptors).
        assert reply == {}

    arun(main())


def test_no_context_outside_a_call() -> None:
    with pytest.raises(LookupError, match="only available while serving a call"):
        current_call()


def test_anonymous_caller_has_no_user_and_empty_metadata() -> None:
    async def main() -> None:
        server = Server(("127.0.0.1", 0))
        server.register_function("on_loop")(describe_async)
        async with client_for(server) as rpc:
            seen = await rpc.on_loop()
        assert seen["user"] is None and seen["metadata"] == {}

    arun(main())


def test_without_the_feature_no_metadata_is_sent_or_read() -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function("on_loop")(describe_async)

    async def main() -> None:
        # A client that does not ask for `metadata`: nothing sent, nothing back.
        async with client_for(server, features=("cancel", "deadline")) as rpc:
            seen, reply = await rpc.on_loop.with_options(metadata={"k": "v"}).call_with_metadata()
            assert seen["metadata"] == {} and reply == {}

    arun(main())


def test_an_mprpc_0_1_peer_never_sees_the_key(mprpc_serve: Callable[..., Any]) -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function("on_loop")(describe_async)
    running = mprpc_serve(server)
    with RawClient(running.server.port) as raw:
        welcome = raw.login()
        assert "FEATURES" not in welcome
        # A METADATA key from a peer that did not negotiate it is ignored.
        raw.send({"MPRPC": "0.1", "ID": "1", "METHOD": "on_loop", "METADATA": {"a": "b"}})
        reply = raw.recv()
    assert reply["CODE"] == 200
    assert reply["MESSAGE"]["RESULT"]["metadata"] == {}
    assert "METADATA" not in reply["MESSAGE"]  # the handler set some: not sent


def test_malformed_metadata_is_400(mprpc_serve: Callable[..., Any]) -> None:
    server = Server(("127.0.0.1", 0))
    server.register_function("on_loop")(describe_async)
    running = mprpc_serve(server)
    with RawClient(running.server.port) as raw:
        raw.send({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None},
                  "FEATURES": ["metadata"]})  # fmt: skip
        assert raw.recv()["FEATURES"] == ["metadata"]
        raw.send({"MPRPC": "0.1", "ID": "1", "METHOD": "on_loop", "METADATA": {"a": 1}})
        bad_type = raw.recv()
        many = {str(i): "" for i in range(65)}
        raw.send({"MPRPC": "0.1", "ID": "2", "METHOD": "on_loop", "METADATA": many})
        too_many = raw.recv()
        raw.send({"MPRPC": "0.1", "ID": "3", "METHOD": "on_loop", "METADATA": {"k": "v"}})
        good = raw.recv()
    assert bad_type["CODE"] == 400 and "strings to strings" in bad_type["MESSAGE"]["MESSAGE"]
    assert too_many["CODE"] == 400 and "65 pairs" in too_many["MESSAGE"]["MESSAGE"]
    assert good["CODE"] == 200 and good["MESSAGE"]["METADATA"] == {"seen-by": "on_loop"}


class Servicer(StubCalculator):
    def add(self, a: int, b: int) -> int:  # a bound method: runs in the thread pool
        ctx: CallContext = current_call()
        return a + b + int(ctx.metadata.get("bonus", "0"))


def test_typed_clients_send_metadata_with_options(mprpc_client: Callable[..., Any]) -> None:
    server = Server(("127.0.0.1", 0))
    register_calculator(server, Servicer())
    client = mprpc_client(server, CalculatorClient)
    assert client.add(1, 2) == 3
    view = client.with_options(metadata={"bonus": "10"})
    assert view.add(1, 2) == 13
    assert view.with_options(timeout=5).add(1, 2) == 13  # options add up
    assert client.add(1, 2) == 3  # the view did not change the client

    async def main() -> None:
        server = Server(("127.0.0.1", 0))
        register_calculator(server, Servicer())
        async with client_for(server, AsyncCalculatorClient) as typed:
            assert await typed.with_options(metadata={"bonus": "5"}).add(1, 2) == 8

    arun(main())


def test_metadata_must_be_strings() -> None:
    rpc = AsyncRPC("tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="must be str"):
        rpc.add.with_options(metadata={"n": 1})  # type: ignore[dict-item]


def test_the_tls_client_certificate_is_in_the_context(
    tmp_path: Path, mprpc_client: Callable[..., RPC]
) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    # Mutual TLS: the server asks for a client certificate (the same test certificate).
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(tmp_path / "cert.pem")
    client_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def subject() -> Any:
        cert = current_call().peer_certificate
        return cert and cert["subject"]

    server = Server(("127.0.0.1", 0), ssl=server_ctx)
    server.register_function("subject")(subject)
    rpc = mprpc_client(server, ssl=client_ctx)
    assert rpc.subject() == [[["commonName", "localhost"]]]

    plain = Server(("127.0.0.1", 0))
    plain.register_function("subject")(subject)
    assert mprpc_client(plain).subject() is None


def test_contexts_built_on_demand_are_not_kept_after_the_call() -> None:
    async def asks_then_fails() -> None:
        current_call().set_response_metadata("k", "v")
        raise ValueError("after asking")

    async def counts(n: int) -> AsyncIterator[int]:
        current_call()  # built while streaming: after the 201 went out
        for i in range(n):
            yield i

    server = Server(("127.0.0.1", 0))
    server.register_function("asks_then_fails")(asks_then_fails)
    server.register_function("counts")(counts)
    server.register_function("on_loop")(describe_async)

    async def main() -> None:
        async with client_for(server) as rpc:
            for _ in range(3):
                with pytest.raises(Exception, match="after asking"):
                    await rpc.asks_then_fails()
                assert [i async for i in await rpc.counts(2)] == [0, 1]
                await rpc.on_loop()
            (handler,) = connections(server)
            assert handler._contexts == {}

    arun(main())
