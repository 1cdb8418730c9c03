"""The wire protocol as docs/protocol.md states it, spoken by hand over a socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import ALL_FEATURES, SEP, Raw, make_server


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    with serve_in_thread(make_server(auth=[("u", "p")])) as running:
        yield running


@pytest.fixture(scope="module")
def small() -> Iterator[RunningServer]:
    """Messages of at most 1000 bytes, arrays and maps of at most 10 elements."""
    server = make_server(auth=[("u", "p")], max_message_size=1000, max_collection_len=10)

    @server.register_function()
    async def size(x: Any) -> int:
        return len(x)

    with serve_in_thread(server) as running:
        yield running


def port_of(running: RunningServer) -> int:
    return int(running.server.address[1])


def first_message(running: RunningServer, message: Any) -> tuple[dict[str, Any], bool]:
    with Raw(port_of(running), login=False) as raw:
        raw.send(message)
        return raw.recv(), raw.closed()


AUTH = {"USERNAME": "u", "PASSWORD": "p"}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"MPRPC": "0.1", "ID": "a", "METHOD": "echo"}, 501),
        ({"MPRPC": "0.1", "AUTH": [1]}, 506),
        ({"MPRPC": "0.1", "AUTH": {"USERNAME": 1, "PASSWORD": "p"}}, 506),
        ({"MPRPC": "0.1", "AUTH": AUTH, "FEATURES": "cancel"}, 506),
        ({"MPRPC": "0.1", "AUTH": {"USERNAME": "u", "PASSWORD": "x"}}, 501),
        ([1, 2], 506),
        ({"AUTH": AUTH}, 505),
        ({"MPRPC": "0.2", "AUTH": AUTH}, 505),
    ],
)
def test_auth_and_envelope_checks(running: RunningServer, message: Any, code: int) -> None:
    """docs/protocol.md, Authentication: "the first message has no `AUTH` key | `501`,
    close", "`AUTH` is not a map, `USERNAME`/`PASSWORD` not a string or null, `FEATURES`
    not an array | `506`, close", "no pair matches | `501`, close"; Envelope checks: "not a
    map: `506`", "`MPRPC` missing or not "0.1": `505`" (bare code, then close)."""
    reply, closed = first_message(running, message)
    assert reply == {"MPRPC": "0.1", "CODE": code}
    assert closed


def test_no_credentials_configured_refuses_a_user_name() -> None:
    """docs/protocol.md: "no credentials configured and a non-empty user name or password
    | `501`, close"; an empty one logs in."""
    with serve_in_thread(make_server()) as running:
        port = port_of(running)
        with Raw(port, login=False) as raw:
            raw.send({"MPRPC": "0.1", "AUTH": {"USERNAME": "bob", "PASSWORD": None}})
            assert raw.recv() == {"MPRPC": "0.1", "CODE": 501}
            assert raw.closed()
        with Raw(port, user="", password="") as raw:
            assert raw.welcome["CODE"] == 100


def test_welcome_reply_fields(running: RunningServer) -> None:
    """docs/protocol.md: the welcome reply carries CODE 100, VERSION, DESC, DEBUG,
    COMPRESER, TIMEOUT, and "FEATURES ... only if the auth request had a FEATURES key";
    unknown names are ignored."""
    with Raw(port_of(running), user="u", password="p") as raw:
        assert raw.welcome["CODE"] == 100 and "FEATURES" not in raw.welcome
        assert raw.welcome["DEBUG"] is False and raw.welcome["COMPRESER"] is None
        assert raw.welcome["TIMEOUT"] == 180
    with Raw(port_of(running), user="u", password="p", features=["zzz", "cancel"]) as raw:
        assert raw.welcome["FEATURES"] == ["cancel"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"ID": 5, "METHOD": "echo"}, "ID"),
        ({"ID": "", "METHOD": "echo"}, "ID"),
        ({"ID": "a"}, "METHOD"),
        ({"ID": "a", "METHOD": ""}, "METHOD"),
        ({"ID": "a", "METHOD": "echo", "ARGS": {"x": 1}}, "ARGS"),
        ({"ID": "a", "METHOD": "echo", "KWARGS": {1: 1}}, "KWARGS"),
        ({"ID": "a", "METHOD": "echo", "RETURN": "no"}, "RETURN"),
        ({"ID": "a", "METHOD": "echo", "DEADLINE": -1}, "DEADLINE"),
        ({"ID": "a", "METHOD": "echo", "DEADLINE": float("nan")}, "DEADLINE"),
        ({"ID": "a", "METHOD": "echo", "DEADLINE": True}, "DEADLINE"),
        ({"ID": "a", "METHOD": "echo", "METADATA": {"k": 1}}, "METADATA"),
        ({"ID": "a", "METHOD": "echo", "METADATA": {str(i): "" for i in range(65)}}, "65"),
        ({"ID": "a", "METHOD": "echo", "METADATA": {"k": "é" * 4096}}, "8193 bytes"),
        ({"ID": 3, "CANCEL": True}, "CANCEL"),
    ],
)
def test_malformed_requests_are_400_carrying_their_id(
    running: RunningServer, fields: dict[str, Any], words: str
) -> None:
    """docs/protocol.md, Calls: "`ID` an integer or an empty string | `400` carrying that
    ID", "`METHOD` missing, empty or not a string | `400`", "`ARGS` not an array,
    `KWARGS` not a map with string keys, `RETURN` not a boolean | `400`", "`DEADLINE`
    ... not a finite number ≥ 0 | `400`", "`METADATA` ... more than 64 pairs, or more
    than 8 KiB of keys and values (UTF-8) | `400`"; no DATA for those."""
    with Raw(port_of(running), user="u", password="p", features=ALL_FEATURES) as raw:
        reply = raw.call(**fields)
        assert reply["CODE"] == 400
        assert reply["MESSAGE"]["ID"] == fields["ID"]
        assert words in reply["MESSAGE"]["MESSAGE"]
        assert "DATA" not in reply["MESSAGE"]
        assert raw.call(ID="next", METHOD="echo", ARGS=[1])["MESSAGE"]["RESULT"] == 1


def test_metadata_at_its_limits_is_accepted(running: RunningServer) -> None:
    """docs/protocol.md: "at most 64 pairs and 8 KiB of keys and values (UTF-8)"."""
    with Raw(port_of(running), user="u", password="p", features=ALL_FEATURES) as raw:
        many = {str(i): "" for i in range(64)}
        assert raw.call(ID="a", METHOD="echo", METADATA=many)["CODE"] == 200
        big = {"k": "é" * 4095 + "v"}  # 1 + 8190 + 1 bytes
        assert raw.call(ID="b", METHOD="echo", METADATA=big)["CODE"] == 200


@pytest.mark.parametrize("fields", [{"ID": 1.5, "METHOD": "echo"}, {"METHOD": "echo"}])
def test_no_usable_id_is_506_and_close(running: RunningServer, fields: dict[str, Any]) -> None:
    """docs/protocol.md: "`ID` neither a string nor an integer | `506`, close"; "one
    without `ID` must be a ping (`HEARTBEAT: "ping"`), else it is `506` and close"."""
    with Raw(port_of(running), user="u", password="p") as raw:
        assert raw.call(**fields) == {"MPRPC": "0.1", "CODE": 506}
        assert raw.closed()


def test_ping_pong_and_second_auth(running: RunningServer) -> None:
    """docs/protocol.md: "pong (server): `{"MPRPC": "0.1", "CODE": 101, "HEARTBEAT":
    "pong"}`"; "A second auth request on a ready connection is `505`"."""
    with Raw(port_of(running), user="u", password="p") as raw:
        assert raw.call(HEARTBEAT="ping") == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}
        assert raw.call(AUTH=AUTH) == {"MPRPC": "0.1", "CODE": 505}
        assert raw.closed()


def test_cancel_without_the_feature_is_400(running: RunningServer) -> None:
    """docs/protocol.md: "Without the feature a CANCEL message is `400`"."""
    with Raw(port_of(running), user="u", password="p") as raw:
        reply = raw.call(ID="c", CANCEL=True)
        assert reply["CODE"] == 400 and reply["MESSAGE"]["ID"] == "c"


def test_unnegotiated_extension_keys_are_ignored(running: RunningServer) -> None:
    """docs/protocol.md: "Without the feature neither side sends the key, and a server
    ignores it" (metadata); "Without the feature `DEADLINE` is ignored"; "`ONEWAY` on a
    connection that did not negotiate the feature is ignored (the request is an ordinary
    call)"."""
    with Raw(port_of(running), user="u", password="p") as raw:
        assert raw.call(ID="m", METHOD="echo", ARGS=[1], METADATA=5)["CODE"] == 200
        assert raw.call(ID="d", METHOD="echo", ARGS=[1], DEADLINE=-1)["CODE"] == 200
        assert raw.call(ID="o", METHOD="echo", ARGS=[1], ONEWAY=True)["CODE"] == 200


def test_duplicate_in_flight_id(running: RunningServer) -> None:
    """docs/protocol.md: "`ID` equal to a call still in flight on this connection | `400`
    for the duplicate; the original call goes on"."""
    with Raw(port_of(running), user="u", password="p") as raw:
        raw.send({"MPRPC": "0.1", "ID": "d", "METHOD": "slow", "ARGS": [0.3, "first"]})
        reply = raw.call(ID="d", METHOD="echo", ARGS=["second"])
        assert reply["CODE"] == 400 and "duplicate" in reply["MESSAGE"]["MESSAGE"]
        assert raw.recv()["MESSAGE"] == {"ID": "d", "RESULT": "first"}


def test_cancelled_id_is_free_at_once(running: RunningServer) -> None:
    """docs/protocol.md, `cancel`: "sends nothing more for that ID; the ID is free at
    once: a new call may reuse it, and gets only its own replies"."""
    with Raw(port_of(running), user="u", password="p", features=ALL_FEATURES) as raw:
        raw.send({"MPRPC": "0.1", "ID": "r", "METHOD": "slow", "ARGS": [0.3, "old"]})
        raw.send({"MPRPC": "0.1", "ID": "r", "CANCEL": True})
        assert raw.call(ID="r", METHOD="echo", ARGS=["new"])["MESSAGE"]["RESULT"] == "new"
        time.sleep(0.5)
        assert raw.call(HEARTBEAT="ping")["CODE"] == 101  # nothing for the old call


def test_deadline_zero_is_408(running: RunningServer) -> None:
    """docs/protocol.md, `deadline`: "When it passes the server cancels the call ... and
    answers `408` for that ID"."""
    with Raw(port_of(running), user="u", password="p", features=ALL_FEATURES) as raw:
        reply = raw.call(ID="t", METHOD="slow", ARGS=[1, 1], DEADLINE=0)
        assert reply["CODE"] == 408 and reply["MESSAGE"]["ID"] == "t"
        assert reply["MESSAGE"]["MESSAGE"].startswith("deadline of")


def request_of_size(size: int) -> dict[str, Any]:
    for pad in range(size):
        message = {"MPRPC": "0.1", "ID": "big", "METHOD": "size", "ARGS": ["a" * pad]}
        if len(msgpack.packb(message)) == size:
            return message
    raise AssertionError(size)


@pytest.mark.parametrize("features", [None, ["length-framing"]])
def test_max_message_size_by_bytes(small: RunningServer, features: list[str] | None) -> None:
    """Server option table: "`max_message_size` | largest message either way ... (505 and
    close)"; docs/protocol.md: "An encoded message larger than the maximum message size is
    never sent: ... the server answers the call with `405`". Exactly the limit passes."""
    port = port_of(small)
    with Raw(port, user="u", password="p", features=features) as raw:
        request = request_of_size(1000)
        reply = raw.call(**request)
        assert reply["MESSAGE"] == {"ID": "big", "RESULT": len(request["ARGS"][0])}
    with Raw(port, user="u", password="p", features=features) as raw:
        assert raw.call(**request_of_size(1001)) == {"MPRPC": "0.1", "CODE": 505}
        assert raw.closed()
    with Raw(port, user="u", password="p", features=features) as raw:
        reply = raw.call(ID="x", METHOD="echo", ARGS=["a" * 960])  # fits; its echo does not
        assert reply["CODE"] == 405 and reply["MESSAGE"]["ID"] == "x"
        assert "exceeds the maximum message size of 1000 bytes" in reply["MESSAGE"]["MESSAGE"]


def test_result_of_exactly_the_limit_is_delivered(small: RunningServer) -> None:
    """docs/protocol.md: "a frame longer than the maximum message size" is refused: one of
    exactly that size is not."""
    with Raw(port_of(small), user="u", password="p") as raw:
        for n in range(900, 1000):
            expected = {"MPRPC": "0.1", "CODE": 200, "MESSAGE": {"ID": "e", "RESULT": "a" * n}}
            if len(msgpack.packb(expected)) == 1000:
                break
        assert raw.call(ID="e", METHOD="echo", ARGS=["a" * n]) == expected
        reply = raw.call(ID="e", METHOD="echo", ARGS=["a" * (n + 1)])
        assert reply["CODE"] == 405


def test_max_collection_len(small: RunningServer) -> None:
    """Server option table: "`max_collection_len` | longest MessagePack array or map ... in
    a received message, refused from its header before anything is built (505 and
    close)"."""
    with Raw(port_of(small), user="u", password="p") as raw:
        assert raw.call(ID="c", METHOD="echo", ARGS=[list(range(10))])["CODE"] == 200
        assert raw.call(ID="c", METHOD="echo", ARGS=[list(range(11))]) == {
            "MPRPC": "0.1",
            "CODE": 505,
        }
        assert raw.closed()


def test_json_detection_and_digit_limit(running: RunningServer) -> None:
    """docs/protocol.md, Detection: "`{`, space, tab, CR or LF mean JSON"; the welcome's
    "`DEBUG` ... state[s] what it detected"; "a JSON number of more digits than Python
    converts ... (4,300 by default ...)" is `506`."""
    sock = socket.create_connection(("127.0.0.1", port_of(running)), timeout=5)
    with sock:
        auth = {"MPRPC": "0.1", "AUTH": AUTH}
        sock.sendall(b"\r\n\t " + json.dumps(auth).encode() + SEP)
        welcome = json.loads(sock.recv(1000).split(SEP)[0])
        assert welcome["CODE"] == 100 and welcome["DEBUG"] is True
        call = b'{"MPRPC": "0.1", "ID": "j", "METHOD": "echo", "ARGS": [' + b"1" * 4301 + b"]}"
        sock.sendall(call + SEP)
        assert json.loads(sock.recv(1000).split(SEP)[0]) == {"MPRPC": "0.1", "CODE": 506}


def test_oversized_json_first_message_is_answered_in_json(running: RunningServer) -> None:
    """docs/protocol.md: "A first message refused before it could be decoded (over
    `max_auth_message_size`, say) is answered in JSON if the connection's first byte is
    one of JSON's"; limit 64 KiB, `505`."""
    sock = socket.create_connection(("127.0.0.1", port_of(running)), timeout=5)
    with sock:
        sock.sendall(b'{"MPRPC": "0.1", "X": "' + b"a" * 70_000 + b'"}' + SEP)
        data = b""
        while SEP not in data:
            chunk = sock.recv(1000)
            assert chunk, data
            data += chunk
        assert json.loads(data.split(SEP)[0]) == {"MPRPC": "0.1", "CODE": 505}


def test_compression_bomb_before_login_is_505(running: RunningServer) -> None:
    """docs/protocol.md, Memory bounds: "a 65-byte bz2 payload announcing 16 million maps is
    refused after 64 KiB of inflation"; Decoding limits: "a payload that inflates beyond
    it is `505`"; "truncated compressed data is `506`"."""
    import bz2
    import zlib

    auth = {"MPRPC": "0.1", "AUTH": AUTH}
    bomb = bz2.compress(msgpack.packb({**auth, "X": b"\0" * 2_000_000}))
    truncated = zlib.compress(msgpack.packb(auth))[:-3]
    for payload, code in ((bomb, 505), (truncated, 506)):
        with Raw(port_of(running), login=False) as raw:
            raw.send_payload(payload)
            assert raw.recv() == {"MPRPC": "0.1", "CODE": code}
