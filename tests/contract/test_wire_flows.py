"""Call flows over raw sockets: duplicate IDs, kept results, oneway, deadlines, cancel,
metadata, streams interleaved with plain calls, pipelining, many connections at once,
limits, calls before authentication, half-close and a client vanishing mid-call."""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from pymprpc.testing import RunningServer

from .conftest import FRAMINGS
from .wire import ALL_FEATURES, SEPARATOR, Closed, Wire, bare, new_id, ok

pytestmark = pytest.mark.timeout(60)

OLD = FRAMINGS["separator"]  # a 0.0.3 client: nothing negotiated
NEW = FRAMINGS["length"]  # every extension negotiated


def by_id(messages: list[Any]) -> dict[Any, list[Any]]:
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for message in messages:
        grouped[message["MESSAGE"]["ID"]].append(message)
    return grouped


def result(wire: Wire, method: str, *args: Any) -> Any:
    reply = wire.call(method, *args)
    assert reply["CODE"] == 200, reply
    return reply["MESSAGE"]["RESULT"]


def quiet(wire: Wire) -> None:
    """Nothing else is pending for this connection: the next message is the pong."""
    assert wire.ping() == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}


# -- duplicate IDs ---------------------------------------------------------------------
@pytest.mark.parametrize("options", [OLD, NEW], ids=["separator", "length"])
def test_duplicate_id_in_flight_400_original_goes_on(port: int, options: dict[str, Any]) -> None:
    key = new_id()
    with Wire(port, **options) as w:
        w.send(w.request("block", key, id="dup"))
        assert result(w, "wait_event", "started:" + key) is True
        w.send(w.request("add", 1, 2, id="dup"))
        reply = w.recv()
        assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "dup"
        assert reply["MESSAGE"]["EXCEPTION"] == "RequestError" and "DATA" not in reply["MESSAGE"]
        release_id = new_id()
        w.send(w.request("release", key, id=release_id))
        replies = by_id(w.recv_n(2))
        assert replies == {"dup": [ok("dup", key)], release_id: [ok(release_id, True)]}
        w.send(w.request("add", 1, 2, id="dup"))  # free again once finished
        assert w.recv() == ok("dup", 3)


# -- RETURN false and system.getresult -------------------------------------------------
@pytest.mark.parametrize("options", [OLD, NEW], ids=["separator", "length"])
def test_return_false_kept_result(port: int, options: dict[str, Any]) -> None:
    with Wire(port, **options) as w:
        kept = new_id()
        w.send(w.request("add", 20, 22, id=kept, RETURN=False))
        get = new_id()
        w.send(w.request("system.getresult", kept, id=get))
        assert w.recv() == ok(get, 42)
        quiet(w)
        again = w.call("system.getresult", kept)  # fetched once
        assert again["CODE"] == 400 and again["MESSAGE"]["EXCEPTION"] == "RequestError"
        assert w.call("system.getresult", "never-made")["CODE"] == 400


def test_return_false_error_is_kept_with_its_code(wire: Wire) -> None:
    kept = new_id()
    wire.send(wire.request("raise_coro", "ValueError", id=kept, RETURN=False))
    reply = wire.call("system.getresult", kept)
    assert reply["CODE"] == 404 and reply["MESSAGE"]["EXCEPTION"] == "ValueError"
    quiet(wire)


def test_return_false_getresult_waits_for_a_running_call(wire: Wire) -> None:
    key, kept, get, rel = new_id(), new_id(), new_id(), new_id()
    wire.send(
        wire.request("block", key, id=kept, RETURN=False),
        wire.request("system.getresult", kept, id=get),
    )
    assert result(wire, "wait_event", "started:" + key) is True
    wire.send(wire.request("release", key, id=rel))
    assert by_id(wire.recv_n(2)) == {get: [ok(get, key)], rel: [ok(rel, True)]}


def test_return_false_stream_is_streamed_to_getresult(wire: Wire) -> None:
    kept, get = new_id(), new_id()
    wire.send(
        wire.request("count", 3, id=kept, RETURN=False),
        wire.request("system.getresult", kept, id=get),
    )
    assert wire.recv_n(5) == [
        {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": get}},
        *({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": get, "RESULT": i}} for i in range(3)),
        {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": get}},
    ]


def test_return_false_with_an_id_already_kept_400(wire: Wire) -> None:
    kept = new_id()
    wire.send(wire.request("add", 1, 1, id=kept, RETURN=False))
    assert result(wire, "add", 0, 0) == 0
    wire.send(wire.request("add", 2, 2, id=kept, RETURN=False))
    reply = wire.recv()
    assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == kept
    assert wire.call("system.getresult", kept)["MESSAGE"]["RESULT"] == 2


def test_kept_results_belong_to_their_connection(port: int) -> None:
    with Wire(port) as a, Wire(port) as b:
        kept = new_id()
        a.send(a.request("add", 1, 2, id=kept, RETURN=False))
        assert b.call("system.getresult", kept)["CODE"] == 400
        assert a.call("system.getresult", kept)["MESSAGE"]["RESULT"] == 3


# -- oneway ----------------------------------------------------------------------------
def test_oneway_sends_and_keeps_nothing(port: int) -> None:
    key = new_id()
    with Wire(port, **NEW) as w:
        one = new_id()
        w.send(w.request("bump", key, id=one, ONEWAY=True))
        assert result(w, "wait_event", "bumped:" + key) is True
        w.send(w.request("raise_coro", "ValueError", ONEWAY=True))
        w.send(w.request("count", 3, ONEWAY=True))
        quiet(w)
        assert w.call("system.getresult", one)["CODE"] == 400


def test_oneway_not_negotiated_is_an_ordinary_call(port: int) -> None:
    with Wire(port, features=["length-framing", "cancel"]) as w:
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, ONEWAY=True))
        assert w.recv() == ok(id, 3)
    with Wire(port, **OLD) as w:
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, ONEWAY=True))
        assert w.recv() == ok(id, 3)


# -- deadlines -------------------------------------------------------------------------
@pytest.mark.parametrize("deadline", [0, 0.2])
def test_deadline_passing_cancels_and_answers_408(port: int, deadline: float) -> None:
    key, id = new_id(), new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("block", key, id=id, DEADLINE=deadline))
        reply = w.recv()
        assert reply["CODE"] == 408 and reply["MESSAGE"]["ID"] == id
        assert reply["MESSAGE"]["EXCEPTION"] == "DeadlineExceeded"
        assert result(w, "wait_event", "finally:" + key) is True
        quiet(w)


def test_deadline_on_a_stream(port: int) -> None:
    key, id = new_id(), new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("gen_block", key, id=id, DEADLINE=1.0))
        first = w.recv_n(3)
        assert first[:2] == [
            {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
            {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": 0}},
        ]
        assert first[2]["CODE"] == 408 and first[2]["MESSAGE"]["ID"] == id
        assert result(w, "wait_event", "finally:" + key) is True


def test_deadline_seen_by_the_handler(port: int) -> None:
    with Wire(port, **NEW) as w:
        fields = w.call("ctx_coro", DEADLINE=30)["MESSAGE"]["RESULT"]
        assert fields["has_deadline"] is True and fields["remaining_positive"] is True


@pytest.mark.parametrize("bad", [-1, "soon", float("nan"), float("inf"), [1], True])
def test_bad_deadline_400(port: int, bad: Any) -> None:
    with Wire(port, **NEW) as w:
        reply = w.call("add", 1, 2, DEADLINE=bad)
        assert reply["CODE"] == 400 and reply["MESSAGE"]["EXCEPTION"] == "RequestError"


def test_deadline_ignored_without_the_feature(port: int) -> None:
    with Wire(port, **OLD) as w:
        for bad in ("soon", -1, 0):
            assert w.call("add", 1, 2, DEADLINE=bad)["MESSAGE"]["RESULT"] == 3
        assert w.call("ctx_coro", DEADLINE=30)["MESSAGE"]["RESULT"]["has_deadline"] is False


# -- cancel ----------------------------------------------------------------------------
def test_cancel_a_running_call(port: int) -> None:
    key, id = new_id(), new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("block", key, id=id))
        assert result(w, "wait_event", "started:" + key) is True
        w.send({"MPRPC": "0.1", "ID": id, "CANCEL": True})
        assert result(w, "wait_event", "cancelled:" + key) is True
        quiet(w)
        w.send(w.request("add", 1, 2, id=id))  # the ID is free again
        assert w.recv() == ok(id, 3)


def test_cancel_a_stream_runs_its_finally(port: int) -> None:
    key, id = new_id(), new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("gen_block", key, id=id))
        assert w.recv_n(2) == [
            {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
            {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": 0}},
        ]
        assert result(w, "wait_event", "started:" + key) is True
        w.send({"MPRPC": "0.1", "ID": id, "CANCEL": True})
        assert result(w, "wait_event", "finally:" + key) is True
        quiet(w)


def test_cancel_of_an_id_not_running_is_ignored(port: int) -> None:
    with Wire(port, **NEW) as w:
        w.send({"MPRPC": "0.1", "ID": "not-running", "CANCEL": True})
        quiet(w)


@pytest.mark.parametrize("bad_id", [7, ""])
def test_cancel_with_integer_or_empty_id_400(port: int, bad_id: Any) -> None:
    with Wire(port, **NEW) as w:
        w.send({"MPRPC": "0.1", "ID": bad_id, "CANCEL": True})
        reply = w.recv()
        assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == bad_id
        quiet(w)


def test_cancel_with_float_id_506_and_close(port: int) -> None:
    with Wire(port, **NEW) as w:
        w.send({"MPRPC": "0.1", "ID": 2.5, "CANCEL": True})
        assert w.recv_until_closed() == [bare(506)]


def test_cancel_not_negotiated_400(port: int) -> None:
    with Wire(port, **OLD) as w:
        w.send({"MPRPC": "0.1", "ID": "c-1", "CANCEL": True})
        assert w.recv() == {
            "MPRPC": "0.1",
            "CODE": 400,
            "MESSAGE": {
                "ID": "c-1",
                "EXCEPTION": "RequestError",
                "MESSAGE": "CANCEL was not negotiated on this connection",
            },
        }


# -- metadata --------------------------------------------------------------------------
def test_metadata_round_trip(iport: int) -> None:
    with Wire(iport, **NEW) as w:
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, METADATA={"want": "v", "x-trace": "t"}))
        assert w.recv() == {
            "MPRPC": "0.1",
            "CODE": 200,
            "MESSAGE": {"ID": id, "RESULT": 3, "METADATA": {"got": "v"}},
        }
        seen = w.call("ctx_coro", METADATA={"x-trace": "t"})["MESSAGE"]["RESULT"]["metadata"]
        assert seen == {"x-trace": "t"}
        id = new_id()
        w.send(w.request("ctx_stream", id=id, METADATA={"want": "s"}))
        assert w.recv() == {
            "MPRPC": "0.1",
            "CODE": 201,
            "MESSAGE": {"ID": id, "METADATA": {"got": "s"}},
        }
        assert w.recv()["MESSAGE"]["RESULT"]["metadata"] == {"want": "s"}
        assert w.recv() == {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": id}}
        error = w.call("raise_coro", "ValueError", METADATA={"want": "v"})
        assert error["CODE"] == 404 and "METADATA" not in error["MESSAGE"]


@pytest.mark.parametrize(
    "bad",
    [
        {"a": 1},
        {"a": None},
        ["a", "b"],
        "a=b",
        {f"k{i}": "v" for i in range(65)},
        {"big": "x" * 8200},
    ],
    ids=["int-value", "null-value", "array", "string", "65-pairs", "over-8KiB"],
)
def test_bad_metadata_400(port: int, bad: Any) -> None:
    with Wire(port, **NEW) as w:
        reply = w.call("add", 1, 2, METADATA=bad)
        assert reply["CODE"] == 400 and reply["MESSAGE"]["EXCEPTION"] == "RequestError"


def test_metadata_at_the_bounds_accepted(port: int) -> None:
    with Wire(port, **NEW) as w:
        assert w.call("add", 1, 2, METADATA={f"k{i}": "v" for i in range(64)})["CODE"] == 200
        assert w.call("add", 1, 2, METADATA={"k": "x" * 8000})["CODE"] == 200


def test_metadata_absent_when_not_negotiated(iport: int) -> None:
    port = iport
    with Wire(port, features=["length-framing", "cancel", "deadline", "oneway"]) as w:
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, METADATA={"want": "v"}))
        assert w.recv() == ok(id, 3)
        assert w.call("ctx_coro", METADATA={"want": "v"})["MESSAGE"]["RESULT"]["metadata"] == {}
        assert w.call("add", 1, 2, METADATA=5)["CODE"] == 200  # ignored, not validated
    with Wire(port, **OLD) as w:
        id = new_id()
        w.send(w.request("add", 1, 2, id=id, METADATA={"want": "v"}))
        assert w.recv() == ok(id, 3)


# -- streams ---------------------------------------------------------------------------
def test_stream_replies_exact(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("count", 3, id=id))
    assert wire.recv_n(5) == [
        {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
        *({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": i}} for i in range(3)),
        {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": id}},
    ]


def test_stream_failing_part_way_ends_with_the_error(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("count_fail", 2, id=id))
    messages = wire.recv_n(4)
    assert [m["CODE"] for m in messages] == [201, 202, 202, 404]
    assert (
        messages[3]["MESSAGE"]["EXCEPTION"] == "ValueError" and messages[3]["MESSAGE"]["ID"] == id
    )


def test_deprecated_stream_301(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("old_count", 2, id=id))
    assert [m["CODE"] for m in wire.recv_n(4)] == [301, 202, 202, 206]


def test_streams_interleaved_with_plain_calls(either: RunningServer, framing: str) -> None:
    """Two streams and many plain calls pipelined on one connection: each ID gets its own
    replies, in order, whatever the interleaving."""
    wire = Wire(either.server.address[1], **FRAMINGS[framing])
    s1, s2 = new_id(), new_id()
    plain = [new_id() for _ in range(40)]
    requests = [wire.request("count", 30, id=s1)]
    requests += [wire.request("add", i, i, id=p) for i, p in enumerate(plain[:20])]
    requests.append(wire.request("count", 20, id=s2))
    requests += [wire.request("add_coro", i, 1, id=p) for i, p in enumerate(plain[20:])]
    wire.send(*requests)
    replies = by_id(wire.recv_n(32 + 22 + 40))

    def stream(id: str, n: int) -> list[Any]:
        return [
            {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
            *({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": i}} for i in range(n)),
            {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": id}},
        ]

    assert replies[s1] == stream(s1, 30) and replies[s2] == stream(s2, 20)
    for i, p in enumerate(plain[:20]):
        assert replies[p] == [ok(p, 2 * i)]
    for i, p in enumerate(plain[20:]):
        assert replies[p] == [ok(p, i + 1)]
    quiet(wire)
    wire.close()


# -- pipelining and many connections ---------------------------------------------------
@pytest.mark.parametrize("method", ["add", "add_coro", "add_thread", "add_process"])
def test_pipelined_calls_on_one_connection(
    either: RunningServer, framing: str, method: str
) -> None:
    wire = Wire(either.server.address[1], **FRAMINGS[framing])
    ids = [new_id() for _ in range(150)]
    wire.send(*(wire.request(method, i, 1, id=id) for i, id in enumerate(ids)))
    replies = by_id(wire.recv_n(len(ids)))
    assert replies == {id: [ok(id, i + 1)] for i, id in enumerate(ids)}
    quiet(wire)
    wire.close()


@pytest.mark.parametrize("method", ["add", "add_coro", "add_thread", "add_process", "nope"])
def test_fifty_connections_one_call_each_at_once(
    either: RunningServer, framing: str, method: str
) -> None:
    port = either.server.address[1]
    n = 50
    wires = [Wire(port, **FRAMINGS[framing]) for _ in range(n)]
    barrier = threading.Barrier(n)
    replies: list[Any] = [None] * n
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            request = wires[i].request(method, i, 1, id=f"conn-{i}")
            barrier.wait(10)
            wires[i].send(request)
            replies[i] = wires[i].recv()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        for i, reply in enumerate(replies):
            if method == "nope":
                assert reply["CODE"] == 401 and reply["MESSAGE"]["ID"] == f"conn-{i}"
                assert reply["MESSAGE"]["DATA"] == {"METHOD": "nope", "ARGS": [i, 1], "KWARGS": {}}
            else:
                assert reply == ok(f"conn-{i}", i + 1)
        for w in wires:
            quiet(w)
    finally:
        for w in wires:
            w.close()


# -- limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("options", [OLD, NEW], ids=["separator", "length"])
def test_max_inflight_503_for_the_extra_call(
    serve: Callable[..., RunningServer], options: dict[str, Any]
) -> None:
    running = serve(max_inflight=2)
    port = running.server.address[1]
    k1, k2 = new_id(), new_id()
    with Wire(port, **options) as w, Wire(port) as other:
        w.send(w.request("block", k1, id="b1"), w.request("block", k2, id="b2"))
        assert result(other, "wait_event", "started:" + k1) and result(
            other, "wait_event", "started:" + k2
        )
        w.send(w.request("add", 1, 2, id="third"))
        reply = w.recv()
        assert reply["CODE"] == 503 and set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE"}
        assert reply["MESSAGE"]["ID"] == "third"
        assert reply["MESSAGE"]["EXCEPTION"] == "RpcUnavailableException"
        result(other, "release", k1)
        assert w.recv() == ok("b1", k1)
        w.send(w.request("add", 1, 2, id="fourth"))
        assert w.recv() == ok("fourth", 3)
        result(other, "release", k2)
        assert w.recv() == ok("b2", k2)


def test_oversized_request_separator_framing_505(serve: Callable[..., RunningServer]) -> None:
    port = serve(max_message_size=4096).server.address[1]
    with Wire(port, **OLD) as w:
        w.send(w.request("echo", "x" * 5000))
        assert w.recv_until_closed() == [bare(505)]
    with Wire(port, **OLD) as w:  # no separator at all, past the bound
        w.send_raw(b"\x81" + b"y" * (4096 + len(SEPARATOR) + 10))
        assert w.recv_until_closed() == [bare(505)]


def test_oversized_request_length_framing_refused_from_the_prefix(
    serve: Callable[..., RunningServer],
) -> None:
    port = serve(max_message_size=4096).server.address[1]
    with Wire(port, **NEW) as w:
        w.send_raw(struct.pack(">I", 4097))  # only the prefix: nothing more is needed
        assert w.recv_until_closed() == [bare(505)]


def test_request_at_the_size_limit_accepted(serve: Callable[..., RunningServer]) -> None:
    port = serve(max_message_size=4096).server.address[1]
    with Wire(port, **NEW) as w:
        base = len(w.encode(w.request("length", "", id="at-limit")))
        size = 4096 - base - 2  # a str8/str16 header grows by 2 bytes
        assert len(w.encode(w.request("length", "x" * size, id="at-limit"))) == 4096
        w.send(w.request("length", "x" * size, id="at-limit"))
        assert w.recv() == ok("at-limit", size)
        w.send(w.request("length", "x" * (size + 1), id="at-limit"))
        assert w.recv_until_closed() == [bare(505)]


@pytest.mark.parametrize("options", [OLD, NEW], ids=["separator", "length"])
def test_oversized_result_405_connection_stays(
    serve: Callable[..., RunningServer], options: dict[str, Any]
) -> None:
    port = serve(max_message_size=4096).server.address[1]
    with Wire(port, **options) as w:
        reply = w.call("blob", 5000)
        assert reply["CODE"] == 405 and reply["MESSAGE"]["EXCEPTION"] == "ResultLimitError"
        assert set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE"}
        assert w.call("blob", 10)["MESSAGE"]["RESULT"] == b"x" * 10


def test_oversized_first_message_505(port: int) -> None:
    w = Wire(port, login=False)
    w.send({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}, "PAD": "p" * 70000})
    assert w.recv_until_closed() == [bare(505)]
    w.close()


# -- authentication --------------------------------------------------------------------
@pytest.mark.parametrize(
    "first",
    [
        {"MPRPC": "0.1", "ID": "early", "METHOD": "add", "ARGS": [1, 2]},
        {"MPRPC": "0.1", "HEARTBEAT": "ping"},
    ],
    ids=["call", "ping"],
)
def test_calls_before_auth_501_and_close(port: int, first: dict[str, Any]) -> None:
    w = Wire(port, login=False)
    w.send(first)
    assert w.recv_until_closed() == [bare(501)]
    w.close()


@pytest.mark.parametrize(
    "auth", [5, "x", {"USERNAME": 5, "PASSWORD": None}], ids=["int", "str", "bad-user"]
)
def test_malformed_auth_506_and_close(port: int, auth: Any) -> None:
    w = Wire(port, login=False)
    w.send({"MPRPC": "0.1", "AUTH": auth})
    assert w.recv_until_closed() == [bare(506)]
    w.close()


def test_credentials(serve: Callable[..., RunningServer]) -> None:
    port = serve(auth=[("alice", "a-pw")]).server.address[1]
    for user, password in [("alice", "wrong"), ("bob", "a-pw"), (None, None), ("alice", None)]:
        w = Wire(port, login=False)
        assert w.login(user, password) == bare(501)
        w.assert_closed()
        w.close()
    with Wire(port, user="alice", password="a-pw", features=ALL_FEATURES) as w:
        assert w.welcome is not None and w.welcome["CODE"] == 100
        assert w.call("ctx_coro")["MESSAGE"]["RESULT"]["user"] == "alice"


def test_anonymous_server_refuses_credentials(port: int) -> None:
    w = Wire(port, login=False)
    assert w.login("someone", "pw") == bare(501)
    w.assert_closed()
    w.close()


# -- half-close and disconnects --------------------------------------------------------
@pytest.mark.parametrize("options", [OLD, NEW], ids=["separator", "length"])
def test_half_close_still_gets_every_reply(port: int, options: dict[str, Any]) -> None:
    key = new_id()
    with Wire(port, **options) as w, Wire(port) as other:
        w.send(
            w.request("add", 1, 2, id="h1"),
            w.request("block", key, id="h2"),
            w.request("count", 2, id="h3"),
        )
        assert result(other, "wait_event", "started:" + key) is True
        w.sock.shutdown(socket.SHUT_WR)
        result(other, "release", key)
        got = by_id(w.recv_until_closed())
        assert got["h1"] == [ok("h1", 3)] and got["h2"] == [ok("h2", key)]
        assert [m["CODE"] for m in got["h3"]] == [201, 202, 202, 206]


@pytest.mark.parametrize("how", ["reset", "eof-with-zero-half-close"])
def test_client_disconnect_mid_call_cancels_it(
    serve: Callable[..., RunningServer], how: str
) -> None:
    port = (
        serve(half_close_timeout=0).server.address[1]
        if how != "reset"
        else serve().server.address[1]
    )
    key = new_id()
    with Wire(port) as observer:
        w = Wire(port, **NEW)
        w.send(w.request("block", key))
        assert result(observer, "wait_event", "started:" + key) is True
        if how == "reset":
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()
        assert result(observer, "wait_event", "cancelled:" + key) is True
        assert result(observer, "wait_event", "finally:" + key) is True


def test_return_false_call_survives_its_client(serve: Callable[..., RunningServer]) -> None:
    port = serve(half_close_timeout=0).server.address[1]
    key = new_id()
    with Wire(port) as observer:
        w = Wire(port, **NEW)
        w.send(w.request("block", key, RETURN=False))
        assert result(observer, "wait_event", "started:" + key) is True
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()
        result(observer, "release", key)
        assert result(observer, "wait_event", "finally:" + key) is True
        assert result(observer, "is_set", "cancelled:" + key) is False


def test_connection_error_closes_only_that_connection(port: int) -> None:
    with Wire(port) as a, Wire(port, **NEW) as b:
        a.send([1])
        assert a.recv_until_closed() == [bare(506)]
        assert b.call("add", 1, 2)["CODE"] == 200
        with pytest.raises(Closed):
            a.send(a.request("add", 1, 2))
            a.recv()


def test_oneway_call_counts_towards_max_inflight(serve: Callable[..., RunningServer]) -> None:
    port = serve(max_inflight=1).server.address[1]
    key = new_id()
    with Wire(port, **NEW) as w, Wire(port) as other:
        w.send(w.request("block", key, id="ow", ONEWAY=True))
        assert result(other, "wait_event", "started:" + key) is True
        w.send(w.request("add", 1, 2, id="over"))
        reply = w.recv()
        assert reply["CODE"] == 503 and reply["MESSAGE"]["ID"] == "over"
        result(other, "release", key)
        assert result(other, "wait_event", "finally:" + key) is True
        w.send(w.request("add", 1, 2, id="ow"))  # the ID is free again
        assert w.recv() == ok("ow", 3)


def test_duplicate_id_of_a_running_stream_400(port: int) -> None:
    key = new_id()
    with Wire(port, **NEW) as w:
        w.send(w.request("gen_block", key, id="s-dup"))
        assert [m["CODE"] for m in w.recv_n(2)] == [201, 202]
        assert result(w, "wait_event", "started:" + key) is True
        w.send(w.request("add", 1, 2, id="s-dup"))
        reply = w.recv()
        assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "s-dup"
        rel = new_id()
        w.send(w.request("release", key, id=rel))
        got = by_id(w.recv_n(3))
        assert got[rel] == [ok(rel, True)]
        assert got["s-dup"] == [
            {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": "s-dup", "RESULT": 1}},
            {"MPRPC": "0.1", "CODE": 206, "MESSAGE": {"ID": "s-dup"}},
        ]


@pytest.mark.parametrize(
    ("method", "code"),
    [("add", 200), ("add_coro", 200), ("add_thread", 408), ("add_process", 408), ("nope", 401)],
)
def test_deadline_zero_at_arrival(port: int, method: str, code: int) -> None:
    """Pins current behaviour where the documents are silent: with DEADLINE 0, a call that
    finishes within the read that brought it (inline, or a coroutine that does not await)
    is answered; one handed to a pool is not (408); lookup errors come first."""
    with Wire(port, **NEW) as w:
        reply = w.call(method, 1, 2, DEADLINE=0)
        assert reply["CODE"] == code
