"""The blocking `RPC` and the asyncio `AsyncRPC` clients against a real server: results,
the exception (class, code, fields) for every error a call can get, kept results,
oneway, deadlines, metadata, call context, deprecation warnings."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pymprpc import errors
from pymprpc.testing import RunningServer

from .clients import CLIENTS
from .wire import new_id

pytestmark = pytest.mark.timeout(60)

Client = Any


@pytest.fixture(params=list(CLIENTS))
def make_client(
    request: pytest.FixtureRequest, server: RunningServer
) -> Iterator[Callable[..., Client]]:
    made: list[Any] = []

    def make(url: str | None = None, **options: Any) -> Client:
        made.append(CLIENTS[request.param](url or server.url, **options))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.mark.parametrize("method", ["add", "add_coro", "add_thread", "add_process"])
def test_results(client: Client, method: str) -> None:
    assert client.run(lambda rpc: getattr(rpc, method)(2, 3)) == 5
    assert client.run(lambda rpc: rpc.call(method, "a", "b")) == "ab"
    assert client.run(lambda rpc: rpc.method(method)([1], [2])) == [1, 2]


def test_kwargs_nested_values_and_bytes(client: Client) -> None:
    value = {"a": [1, 2.5, None, True, {"b": b"\x00\xff"}], "é": "ü"}
    assert client.run(lambda rpc: rpc.echo(value, k=value)) == [[value], {"k": value}]


def test_stream(client: Client) -> None:
    assert client.run(lambda rpc: rpc.count(5)) == [0, 1, 2, 3, 4]
    assert client.run(lambda rpc: rpc.count(0)) == []


def test_stream_failing_part_way(client: Client) -> None:
    seen: list[int] = []

    def read(rpc: Any) -> Any:
        async def agen() -> None:
            async for item in await rpc.count_fail(2):
                seen.append(item)

        if client.kind == "async":
            return agen()
        for item in rpc.count_fail(2):
            seen.append(item)
        return None

    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(read)
    assert seen == [0, 1] and info.value.exception == "ValueError" and info.value.code == 404


ERRORS = [
    # (call, exception class, code, .exception, message)
    (
        lambda rpc: rpc.nope(1),
        errors.NotFindError,
        401,
        "NotFindError",
        "no method named 'nope' (system.listMethods lists them)",
    ),
    (
        lambda rpc: rpc.system.nope(),
        errors.UnsupportSysMethodError,
        406,
        "UnsupportSysMethodError",
        "unsupported system method 'system.nope'",
    ),
    (
        lambda rpc: rpc.add(1),
        errors.ParamError,
        402,
        "ParamError",
        "add(): missing a required argument: 'b'",
    ),
    (
        lambda rpc: rpc.raise_coro("ValueError"),
        errors.RPCRuntimeError,
        404,
        "ValueError",
        "ValueError: bad value",
    ),
    (lambda rpc: rpc.raise_coro("SystemExit"), errors.RPCRuntimeError, 404, "SystemExit", None),
    (
        lambda rpc: rpc.raise_coro("KeyboardInterrupt"),
        errors.RPCRuntimeError,
        404,
        "KeyboardInterrupt",
        None,
    ),
    (
        lambda rpc: rpc.raise_coro("GeneratorExit"),
        errors.RPCRuntimeError,
        404,
        "GeneratorExit",
        None,
    ),
    (lambda rpc: rpc.raise_coro("CustomBase"), errors.RPCRuntimeError, 404, "CustomBase", None),
    (lambda rpc: rpc.raise_thread("SystemExit"), errors.RPCRuntimeError, 404, "SystemExit", None),
    (lambda rpc: rpc.raise_process("SystemExit"), errors.RPCRuntimeError, 404, "SystemExit", None),
    (
        lambda rpc: rpc.raise_process("KeyboardInterrupt"),
        errors.RPCRuntimeError,
        404,
        "KeyboardInterrupt",
        None,
    ),
    (
        lambda rpc: rpc.raise_coro("CancelledError"),
        errors.CancelledError,
        407,
        "CancelledError",
        "the method raised CancelledError without its call being cancelled",
    ),
    (
        lambda rpc: rpc.raise_thread("CancelledError"),
        errors.CancelledError,
        407,
        "CancelledError",
        None,
    ),
    (
        lambda rpc: rpc.raise_coro("RestrictAccessError"),
        errors.RestrictAccessError,
        403,
        "RestrictAccessError",
        "raised by the method",
    ),
    (
        lambda rpc: rpc.raise_coro("RpcException"),
        errors.RpcException,
        500,
        "RpcException",
        "raised by the method",
    ),
    (
        lambda rpc: rpc.raise_coro("RpcUnavailableException"),
        errors.RpcUnavailableException,
        503,
        "RpcUnavailableException",
        "raised by the method",
    ),
    (
        lambda rpc: rpc.unencodable(),
        errors.ResultLimitError,
        405,
        "ResultLimitError",
        "unencodable(): result not delivered: cannot encode as MessagePack: "
        "MESSAGE.RESULT['a'][2] is a set",
    ),
    (
        lambda rpc: rpc.system.getresult("never"),
        errors.RequestError,
        400,
        "RequestError",
        "no kept result for ID 'never': unknown, already fetched, or expired",
    ),
    (lambda rpc: rpc.system.health(5), errors.RequestError, 400, "RequestError", None),
]


@pytest.mark.parametrize(("call", "cls", "code", "exception", "message"), ERRORS)
def test_call_errors(
    client: Client, call: Any, cls: type, code: int, exception: str, message: str | None
) -> None:
    with pytest.raises(cls) as info:
        client.run(call)
    exc = info.value
    assert type(exc) is cls and exc.code == code and exc.exception == exception
    assert isinstance(exc.id, str) and exc.id
    if message is not None:
        assert str(exc) == message
    assert exc.remote_traceback is None  # the server is not in debug mode
    assert client.run(lambda rpc: rpc.add(1, 2)) == 3  # the connection stays usable


def test_cancelled_error_in_handler_without_cancel_feature(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(features=())
    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(lambda rpc: rpc.raise_coro("CancelledError"))
    assert info.value.code == 404 and info.value.exception == "CancelledError"


def test_error_data_carries_the_call(client: Client) -> None:
    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(lambda rpc: rpc.raise_coro("ValueError"))
    assert info.value.data == {"METHOD": "raise_coro", "ARGS": ["ValueError"], "KWARGS": {}}


def test_debug_server_sends_tracebacks(
    serve: Callable[..., RunningServer], make_client: Callable[..., Client]
) -> None:
    running = serve(debug=True)
    client = make_client(running.url)
    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(lambda rpc: rpc.raise_coro("ValueError"))
    assert "ValueError" in (info.value.remote_traceback or "")


@pytest.mark.parametrize(
    "value", [{1, 2}, 2**64, object()], ids=["set", "int-over-64-bits", "object"]
)
def test_unencodable_argument_refused_locally(client: Client, value: Any) -> None:
    with pytest.raises(errors.LocalProtocolError):
        client.run(lambda rpc: rpc.echo(value))
    assert client.run(lambda rpc: rpc.add(1, 2)) == 3


def test_oversized_argument_refused_locally(make_client: Callable[..., Client]) -> None:
    client = make_client(max_message_size=4096)
    with pytest.raises(errors.LocalProtocolError):
        client.run(lambda rpc: rpc.length("x" * 5000))
    assert client.run(lambda rpc: rpc.length("x" * 3000)) == 3000


def test_separator_in_arguments(make_client: Callable[..., Client]) -> None:
    legacy = make_client(features=())
    with pytest.raises(errors.LocalProtocolError):
        legacy.run(lambda rpc: rpc.echo(b"##PRO-END##"))
    assert legacy.run(lambda rpc: rpc.add(1, 2)) == 3
    with pytest.raises(errors.ResultLimitError):
        legacy.run(lambda rpc: rpc.with_separator())
    modern = make_client()
    assert modern.run(lambda rpc: rpc.echo(b"##PRO-END##")) == [[b"##PRO-END##"], {}]
    assert modern.run(lambda rpc: rpc.with_separator()) == b"a##PRO-END##b"


@pytest.mark.parametrize(
    "options", [{}, {"features": ()}, {"debug": True}, {"compression": "zlib"}]
)
def test_delay_and_getresult(make_client: Callable[..., Client], options: dict[str, Any]) -> None:
    client = make_client(**options)
    kept = client.run(lambda rpc: rpc.delay("add", 40, 2))
    assert isinstance(kept, str)
    assert client.run(lambda rpc: rpc.system.getresult(kept)) == 42
    with pytest.raises(errors.RequestError):
        client.run(lambda rpc: rpc.system.getresult(kept))
    failing = client.run(lambda rpc: rpc.delay("raise_coro", "ValueError"))
    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(lambda rpc: rpc.system.getresult(failing))
    assert info.value.exception == "ValueError"
    streamed = client.run(lambda rpc: rpc.delay("count", 3))
    assert client.run(lambda rpc: rpc.system.getresult(streamed)) == [0, 1, 2]
    context = client.run(lambda rpc: rpc.delay("ctx_coro"))
    fields = client.run(lambda rpc: rpc.system.getresult(context))
    assert fields["returns"] is False


@pytest.mark.parametrize("options", [{}, {"features": ()}])
def test_notify(make_client: Callable[..., Client], options: dict[str, Any]) -> None:
    client = make_client(**options)
    key = new_id()
    assert client.run(lambda rpc: rpc.notify("bump", key)) is None
    assert client.run(lambda rpc: rpc.wait_event("bumped:" + key)) is True
    client.run(lambda rpc: rpc.notify("raise_coro", "ValueError"))  # nothing comes back
    assert client.run(lambda rpc: rpc.add(1, 2)) == 3


@pytest.mark.parametrize("options", [{}, {"features": ()}], ids=["negotiated", "local-only"])
def test_deadline_during_a_call(
    make_client: Callable[..., Client], options: dict[str, Any]
) -> None:
    client = make_client(**options)
    key = new_id()
    with pytest.raises(errors.DeadlineExceeded):
        client.run(lambda rpc: rpc.block.with_options(timeout=0.3)(key))
    if "features" not in options:  # the server cancels the call (deadline or CANCEL)
        assert client.run(lambda rpc: rpc.wait_event("cancelled:" + key)) is True
    else:  # nothing negotiated: the call runs on; release it
        assert client.run(lambda rpc: rpc.release(key)) is True
    assert client.run(lambda rpc: rpc.add(1, 2)) == 3


def test_default_timeout_option(make_client: Callable[..., Client]) -> None:
    client = make_client(timeout=1.0)
    key = new_id()
    with pytest.raises(errors.DeadlineExceeded):
        client.run(lambda rpc: rpc.block(key))
    assert client.run(lambda rpc: rpc.wait_event("finally:" + key)) is True
    fields = client.run(lambda rpc: rpc.ctx_coro())
    assert fields["has_deadline"] is True and fields["remaining_positive"] is True
    assert (
        client.run(lambda rpc: rpc.ctx_coro.with_options(timeout=None)())["has_deadline"] is False
    )


def test_deadline_on_a_stream(make_client: Callable[..., Client]) -> None:
    client = make_client()
    key = new_id()
    seen: list[int] = []

    def read(rpc: Any) -> Any:
        proxy = rpc.gen_block.with_options(timeout=2.0)

        async def agen() -> None:
            async for item in await proxy(key):
                seen.append(item)

        if client.kind == "async":
            return agen()
        for item in proxy(key):
            seen.append(item)
        return None

    with pytest.raises(errors.DeadlineExceeded):
        client.run(read)
    assert seen == [0]
    assert client.run(lambda rpc: rpc.wait_event("finally:" + key)) is True


def test_metadata_round_trip(
    make_client: Callable[..., Client], intercepted: RunningServer
) -> None:
    client = make_client(intercepted.url)
    proxy = lambda rpc: rpc.ctx_coro.with_options(metadata={"want": "v", "x": "y"})  # noqa: E731
    fields, reply = client.run(lambda rpc: proxy(rpc).call_with_metadata())
    assert fields["metadata"] == {"want": "v", "x": "y"} and dict(reply) == {"got": "v"}
    value, reply = client.run(lambda rpc: rpc.add.call_with_metadata(1, 2))
    assert value == 3 and dict(reply) == {}


def test_metadata_absent_when_not_negotiated(
    make_client: Callable[..., Client], intercepted: RunningServer
) -> None:
    client = make_client(
        intercepted.url, features=("length-framing", "cancel", "deadline", "oneway")
    )
    proxy = lambda rpc: rpc.ctx_coro.with_options(metadata={"want": "v"})  # noqa: E731
    fields, reply = client.run(lambda rpc: proxy(rpc).call_with_metadata())
    assert fields["metadata"] == {} and dict(reply) == {}


def test_metadata_must_be_strings(client: Client) -> None:
    with pytest.raises(TypeError):
        client.run(lambda rpc: rpc.add.with_options(metadata={"a": 1}))


@pytest.mark.parametrize("method", ["ctx_coro", "ctx_thread", "ctx_process", "ctx_stream"])
def test_current_call_fields(
    serve: Callable[..., RunningServer], make_client: Callable[..., Client], method: str
) -> None:
    running = serve(auth=[("alice", "a-pw")])
    client = make_client(running.url_for("alice", "a-pw"))
    proxy = lambda rpc: rpc.method(method).with_options(metadata={"k": "v"}, timeout=30)  # noqa: E731
    value = client.run(lambda rpc: proxy(rpc)())
    fields = value[0] if method == "ctx_stream" else value
    assert fields["method"] == method and isinstance(fields["id"], str) and fields["id"]
    assert fields["peer"][0] == "127.0.0.1" and isinstance(fields["peer"][1], int)
    assert fields["user"] == "alice" and fields["metadata"] == {"k": "v"}
    assert fields["has_deadline"] is True and fields["remaining_positive"] is True
    assert fields["returns"] is True and fields["streaming"] is (method == "ctx_stream")


def test_current_call_outside_a_call() -> None:
    from pymprpc import current_call

    with pytest.raises(LookupError):
        current_call()


def test_deprecated_methods_warn(client: Client) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.run(lambda rpc: rpc.old_add(1, 2)) == 3
        assert client.run(lambda rpc: rpc.old_count(2)) == [0, 1]
    categories = [w.category for w in caught]
    assert errors.ExpireWarning in categories and errors.ExpireStreamWarning in categories
    assert "remote method 'old_add' is deprecated" in [str(w.message) for w in caught]


def test_login_errors(
    serve: Callable[..., RunningServer], make_client: Callable[..., Client]
) -> None:
    running = serve(auth=[("alice", "a-pw")])
    for url in (running.url_for("alice", "nope"), running.url):
        with pytest.raises(errors.LoginError):
            make_client(url)
    assert make_client(running.url_for("alice", "a-pw")).run(lambda rpc: rpc.add(1, 2)) == 3


def test_max_inflight_503_for_one_call_only(
    serve: Callable[..., RunningServer], make_client: Callable[..., Client]
) -> None:
    running = serve(max_inflight=1)
    client, other = make_client(running.url), make_client(running.url)
    key = new_id()
    kept = client.run(lambda rpc: rpc.delay("block", key))
    assert other.run(lambda rpc: rpc.wait_event("started:" + key)) is True
    with pytest.raises(errors.RpcUnavailableException) as info:
        client.run(lambda rpc: rpc.add(1, 2))
    assert info.value.code == 503
    assert other.run(lambda rpc: rpc.release(key)) is True
    assert client.run(lambda rpc: rpc.system.getresult(kept)) == key
    assert client.run(lambda rpc: rpc.add(1, 2)) == 3


def test_oversized_result_405(
    serve: Callable[..., RunningServer], make_client: Callable[..., Client]
) -> None:
    running = serve(max_message_size=4096)
    client = make_client(running.url)
    with pytest.raises(errors.ResultLimitError):
        client.run(lambda rpc: rpc.blob(5000))
    assert client.run(lambda rpc: rpc.blob(3)) == b"xxx"
