"""What the clients put on the wire, and how they take any reply, against a hand-written
server: request and auth fields as documented, negotiated fields only where negotiated,
and the documented outcome for replies out of order, unknown codes and connection errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pymprpc import errors

from .clients import CLIENTS
from .fake import FakeServer, Script, answer

pytestmark = pytest.mark.timeout(60)

ALL = {"length-framing", "cancel", "deadline", "metadata", "oneway"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def echo_script(request: dict[str, Any]) -> list[Any]:
    if request.get("CANCEL") or request.get("ONEWAY") or request.get("RETURN") is False:
        return []
    return [answer(request, RESULT=request.get("ARGS"))]


@pytest.fixture(params=list(CLIENTS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_client(kind: str) -> Iterator[Callable[..., tuple[FakeServer, Any]]]:
    made: list[tuple[FakeServer, Any]] = []

    def make(
        script: Script = echo_script, grant: set[str] | None = None, **options: Any
    ) -> tuple[FakeServer, Any]:
        fake = FakeServer(script, grant)
        client = CLIENTS[kind](fake.url, **options)
        made.append((fake, client))
        return fake, client

    yield make
    for fake, client in made:
        try:
            client.close()
        finally:
            fake.close()


@pytest.mark.parametrize(
    "features", [None, ALL, {"cancel", "deadline", "metadata"}], ids=["0.0.3", "all", "no-framing"]
)
def test_request_fields(fake_client: Callable[..., Any], features: set[str] | None) -> None:
    fake, client = fake_client(grant=features)
    assert client.run(lambda rpc: rpc.add(1, 2, k=3)) == [1, 2]
    assert client.run(lambda rpc: rpc.void()) is None
    kept = client.run(lambda rpc: rpc.delay("later", 1))
    client.run(lambda rpc: rpc.notify("fire"))
    client.run(lambda rpc: rpc.last.with_options(timeout=5, metadata={"a": "b"})(1))
    first, second, third, fourth, fifth = fake.requests
    # With nothing negotiated (a 0.0.3 server, which answers only calls saying so), a
    # call that wants its reply says RETURN: true, as 0.0.3's own clients did.
    said = {"RETURN": True} if not features else {}
    assert first == {
        "MPRPC": "0.1",
        "ID": first["ID"],
        "METHOD": "add",
        "ARGS": [1, 2],
        "KWARGS": {"k": 3},
        **said,
    }
    assert second == {"MPRPC": "0.1", "ID": second["ID"], "METHOD": "void", **said}
    assert third == {"MPRPC": "0.1", "ID": kept, "METHOD": "later", "RETURN": False, "ARGS": [1]}
    negotiated = features or set()
    if "oneway" in negotiated:
        assert fourth == {"MPRPC": "0.1", "ID": fourth["ID"], "METHOD": "fire", "ONEWAY": True}
    else:
        assert fourth == {"MPRPC": "0.1", "ID": fourth["ID"], "METHOD": "fire", "RETURN": False}
    expected: dict[str, Any] = {
        "MPRPC": "0.1",
        "ID": fifth["ID"],
        "METHOD": "last",
        "ARGS": [1],
        **said,
    }
    if "deadline" in negotiated:
        assert 0 < fifth["DEADLINE"] <= 5
        expected["DEADLINE"] = fifth["DEADLINE"]
    if "metadata" in negotiated:
        expected["METADATA"] = {"a": "b"}
    assert fifth == expected
    ids = [r["ID"] for r in fake.requests]
    assert all(UUID.match(i) for i in ids) and len(set(ids)) == len(ids)
    assert len({i[:24] for i in ids}) == 1  # one prefix per connection, then a counter
    assert [int(i[24:], 16) for i in ids] == sorted(int(i[24:], 16) for i in ids)


def test_auth_requests(fake_client: Callable[..., Any]) -> None:
    fake, client = fake_client()
    client.run(lambda rpc: rpc.x())
    assert fake.auths[0]["AUTH"] == {"USERNAME": None, "PASSWORD": None}
    assert set(fake.auths[0]["FEATURES"]) == ALL and set(fake.auths[0]) == {
        "MPRPC",
        "AUTH",
        "FEATURES",
    }
    legacy, client = fake_client(features=())
    client.run(lambda rpc: rpc.x())
    assert legacy.auths == [{"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}]


def test_credentials_in_the_address(kind: str) -> None:
    fake = FakeServer(echo_script)
    client = CLIENTS[kind](f"tcp://us%40er:p%3Aw@127.0.0.1:{fake.port}")
    try:
        client.run(lambda rpc: rpc.x())
        assert fake.auths[0]["AUTH"] == {"USERNAME": "us@er", "PASSWORD": "p:w"}
    finally:
        client.close()
        fake.close()


def replies(*make: Callable[[dict[str, Any]], Any]) -> Script:
    """A script answering each call with the given replies (built from the request)."""

    def script(request: dict[str, Any]) -> list[Any]:
        if request.get("CANCEL"):
            return []
        if request.get("METHOD") == "fine":
            return [answer(request, RESULT="fine")]
        return [m(request) for m in make]

    return script


def msg(code: int, **body: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda request: answer(request, code, **body)


@pytest.mark.parametrize(
    ("script", "exc", "text"),
    [
        (
            replies(msg(202, RESULT=1)),
            errors.RemoteProtocolError,
            "the server sent a stream item (202) before its start (201)",
        ),
        (replies(msg(206)), errors.RemoteProtocolError, None),
        (replies(msg(201), msg(201)), errors.RemoteProtocolError, None),
        (replies(msg(201), msg(200, RESULT=1)), errors.RemoteProtocolError, None),
    ],
    ids=["202-first", "206-first", "second-201", "200-after-201"],
)
def test_replies_out_of_order_fail_that_call_only(
    fake_client: Callable[..., Any], script: Script, exc: type, text: str | None
) -> None:
    _fake, client = fake_client(script)

    def call(rpc: Any) -> Any:
        return rpc.broken()

    with pytest.raises(exc) as info:
        client.run(call)
    if text is not None:
        assert text in str(info.value)
    assert isinstance(info.value, errors.ProtocolException)
    assert client.run(lambda rpc: rpc.fine()) == "fine"  # the connection stays open


@pytest.mark.parametrize("code", [700, -1, 102, 207])
def test_unknown_codes_close_with_remote_protocol_error(
    fake_client: Callable[..., Any], code: int
) -> None:
    _fake, client = fake_client(replies(msg(code, RESULT=1)))
    with pytest.raises(errors.RemoteProtocolError) as info:
        client.run(lambda rpc: rpc.broken())
    if code == 700:
        assert "unknown response code 700 from the server" in str(info.value)


def test_unknown_4xx_and_5xx_codes(fake_client: Callable[..., Any]) -> None:
    _fake, client = fake_client(replies(msg(499, EXCEPTION="Odd", MESSAGE="odd")))
    with pytest.raises(errors.CallError) as info:
        client.run(lambda rpc: rpc.broken())
    assert type(info.value) is errors.CallError and str(info.value) == "Odd: odd"
    assert info.value.exception == "Odd"
    assert client.run(lambda rpc: rpc.fine()) == "fine"
    _fake, client = fake_client(replies(msg(599, EXCEPTION="Odd", MESSAGE="odd")))
    with pytest.raises(errors.RpcException):
        client.run(lambda rpc: rpc.broken())


def test_4xx_without_id_is_a_protocol_error(fake_client: Callable[..., Any]) -> None:
    _fake, client = fake_client(
        replies(
            lambda r: {"MPRPC": "0.1", "CODE": 404, "MESSAGE": {"EXCEPTION": "X", "MESSAGE": "x"}}
        )
    )
    with pytest.raises(errors.RemoteProtocolError):
        client.run(lambda rpc: rpc.broken())


def test_5xx_with_id_fails_that_call_only(fake_client: Callable[..., Any]) -> None:
    _fake, client = fake_client(
        replies(msg(503, EXCEPTION="RpcUnavailableException", MESSAGE="busy"))
    )
    with pytest.raises(errors.RpcUnavailableException) as info:
        client.run(lambda rpc: rpc.broken())
    assert str(info.value) == "busy" and info.value.code == 503
    assert client.run(lambda rpc: rpc.fine()) == "fine"


@pytest.mark.parametrize(
    ("code", "exc"),
    [
        (504, errors.TimeoutException),
        (505, errors.ProtocolException),
        (506, errors.ProtocolSyntaxException),
        (500, errors.RpcException),
        (503, errors.RpcUnavailableException),
    ],
)
def test_bare_5xx_fails_the_pending_call(
    fake_client: Callable[..., Any], code: int, exc: type
) -> None:
    _fake, client = fake_client(replies(lambda r: {"MPRPC": "0.1", "CODE": code}))
    with pytest.raises(exc) as info:
        client.run(lambda rpc: rpc.broken())
    assert info.value.code == code


def test_replies_for_unknown_ids_are_ignored(fake_client: Callable[..., Any]) -> None:
    script = replies(
        lambda r: {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "not-mine", "RESULT": 0}},
        lambda r: {
            "MPRPC": "0.1",
            "CODE": 404,
            "MESSAGE": {"ID": "nor-this", "EXCEPTION": "X", "MESSAGE": "x"},
        },
        msg(200, RESULT=42),
    )
    _fake, client = fake_client(script)
    assert client.run(lambda rpc: rpc.mine()) == 42


def test_streams_and_deprecations(fake_client: Callable[..., Any]) -> None:
    stream = replies(msg(301), msg(202, RESULT="a"), msg(202, RESULT="b"), msg(206))
    _fake, client = fake_client(stream)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.run(lambda rpc: rpc.items()) == ["a", "b"]
    assert [w.category for w in caught] == [errors.ExpireStreamWarning]
    _fake, client = fake_client(replies(msg(300, RESULT=7)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.run(lambda rpc: rpc.old()) == 7
    assert [w.category for w in caught] == [errors.ExpireWarning]


def test_stream_ending_with_an_error(fake_client: Callable[..., Any]) -> None:
    script = replies(msg(201), msg(202, RESULT=1), msg(404, EXCEPTION="ValueError", MESSAGE="bad"))
    _fake, client = fake_client(script)
    with pytest.raises(errors.RPCRuntimeError) as info:
        client.run(lambda rpc: rpc.items())
    assert info.value.exception == "ValueError"


def test_response_metadata_only_when_negotiated(fake_client: Callable[..., Any]) -> None:
    script = replies(msg(200, RESULT=1, METADATA={"k": "v"}))
    _fake, client = fake_client(script, grant=ALL)
    value, metadata = client.run(lambda rpc: rpc.m.call_with_metadata())
    assert value == 1 and dict(metadata) == {"k": "v"}


def test_malformed_response_metadata_is_a_protocol_error(fake_client: Callable[..., Any]) -> None:
    _fake, client = fake_client(replies(msg(200, RESULT=1, METADATA={"k": 1})), grant=ALL)
    with pytest.raises(errors.ProtocolException):
        client.run(lambda rpc: rpc.m())


def test_garbage_reply_is_a_remote_protocol_error(fake_client: Callable[..., Any]) -> None:
    _fake, client = fake_client(replies(lambda r: b"\xc1\xc1"))
    with pytest.raises(errors.RemoteProtocolError):
        client.run(lambda rpc: rpc.m())


def test_many_pipelined_calls_answered_in_reverse(kind: str) -> None:
    """Replies matched by ID whatever their order: the fake answers a batch backwards."""
    import asyncio
    import threading

    pending: list[dict[str, Any]] = []
    lock = threading.Lock()

    def script(request: dict[str, Any]) -> list[Any]:
        with lock:
            pending.append(request)
            if len(pending) < 20:
                return []
            batch = list(reversed(pending))
            pending.clear()
        return [answer(r, RESULT=r["ARGS"][0]) for r in batch]

    fake = FakeServer(script)
    try:
        if kind == "async":
            from pymprpc import AsyncRPC

            async def main() -> list[Any]:
                async with AsyncRPC(fake.url) as rpc:
                    return await asyncio.gather(*(rpc.f(i) for i in range(20)))

            assert asyncio.run(asyncio.wait_for(main(), 30)) == list(range(20))
        else:
            from pymprpc import RPC

            results: dict[int, Any] = {}
            with RPC(fake.url) as rpc:
                threads = [
                    threading.Thread(target=lambda i=i: results.__setitem__(i, rpc.f(i)))
                    for i in range(20)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
            assert results == {i: i for i in range(20)}
    finally:
        fake.close()


def never_answers_one(request: dict[str, Any]) -> list[Any]:
    if request.get("CANCEL") or request.get("ARGS") == [1]:
        return []
    return [answer(request, RESULT=request.get("ARGS"))]


@pytest.mark.parametrize("grant", [None, ALL], ids=["0.0.3", "all"])
@pytest.mark.parametrize("timeout", [0, -1])
def test_deadline_already_expired(
    fake_client: Callable[..., Any], grant: set[str] | None, timeout: float
) -> None:
    fake, client = fake_client(never_answers_one, grant=grant)
    with pytest.raises(errors.DeadlineExceeded) as info:
        client.run(lambda rpc: rpc.add.with_options(timeout=timeout)(1))
    assert str(info.value) == f"call 'add' did not finish within its {timeout}s deadline"
    assert client.run(lambda rpc: rpc.add(2)) == [2]
    sent = [r for r in fake.requests if r.get("ARGS") == [1]]
    if sent:  # whatever goes out carries the expired deadline, where negotiated
        assert ("DEADLINE" in sent[0]) == bool(grant)
        assert sent[0].get("DEADLINE", 0) <= 0


def test_client_never_sends_a_negative_deadline(fake_client: Callable[..., Any]) -> None:
    fake, client = fake_client(never_answers_one, grant=ALL)
    with pytest.raises(errors.DeadlineExceeded):
        client.run(lambda rpc: rpc.add.with_options(timeout=-1)(1))
    assert client.run(lambda rpc: rpc.add(2)) == [2]
    assert all(r.get("DEADLINE", 0) >= 0 for r in fake.requests)
