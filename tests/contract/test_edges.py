"""Edges of what can be sent: values the encodings cannot carry, map keys, nesting depth,
and the legacy separator inside results, stream items and error texts."""

from __future__ import annotations

from typing import Any

import pytest

from pymprpc import RPC, errors
from pymprpc.testing import RunningServer

from .conftest import FRAMINGS
from .wire import Wire, new_id, ok

pytestmark = pytest.mark.timeout(60)


def reply_to(wire: Wire, method: str, *args: Any) -> dict[str, Any]:
    id = new_id()
    wire.send(wire.request(method, *args, id=id))
    reply = wire.recv()
    assert reply["MESSAGE"]["ID"] == id
    return reply  # type: ignore[no-any-return]


@pytest.mark.parametrize("framing", ["separator", "length"])
def test_msgpack_value_edges(port: int, framing: str) -> None:
    with Wire(port, **FRAMINGS[framing]) as w:
        assert reply_to(w, "value", "min-int")["MESSAGE"]["RESULT"] == -(2**63)
        assert reply_to(w, "value", "max-uint")["MESSAGE"]["RESULT"] == 2**64 - 1
        big = reply_to(w, "value", "big-int")
        assert big["CODE"] == 405 and big["MESSAGE"]["MESSAGE"] == (
            "value(): result not delivered: cannot encode as MessagePack: MESSAGE.RESULT is "
            "the integer "
            "18446744073709551616, outside MessagePack's 64-bit range"
        )
        surrogate = reply_to(w, "value", "surrogate")
        assert surrogate["CODE"] == 405 and "lone surrogate" in surrogate["MESSAGE"]["MESSAGE"]
        keys = reply_to(w, "value", "keys")
        assert keys["MESSAGE"]["RESULT"] == {1: "a", 2.5: "b", None: "c", False: "d", b"k": "e"}
        id = new_id()
        w.send(w.request("echo", {1: "x", None: "y", b"b": "z", 1.5: "f"}, id=id))
        assert w.recv() == ok(id, [[{1: "x", None: "y", b"b": "z", 1.5: "f"}], {}])


def test_json_value_edges(port: int) -> None:
    with Wire(port, **FRAMINGS["json"]) as w:
        assert reply_to(w, "value", "surrogate")["MESSAGE"]["RESULT"] == "a\ud800b"
        id = new_id()
        w.send(w.request("value", "surrogate", id=id))
        assert b"\\ud800" in w.recv_payload()  # escaped: valid JSON
        assert reply_to(w, "value", "json-keys")["MESSAGE"]["RESULT"] == {
            "1": "a",
            "2.5": "b",
            "null": "c",
            "false": "d",
        }
        keys = reply_to(w, "value", "keys")  # a bytes key: JSON cannot carry it
        assert keys["CODE"] == 405 and "JSON" in keys["MESSAGE"]["MESSAGE"]


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_nesting_far_too_deep_405(port: int, framing: str) -> None:
    # JSON's effective depth depends on the Python version (3.11: ~960; 3.12+: thousands).
    depth = 50_000 if framing == "json" else 1100
    with Wire(port, **FRAMINGS[framing]) as w:
        assert reply_to(w, "nest", 100)["CODE"] == 200
        deep = reply_to(w, "nest", depth)
        assert deep["CODE"] == 405 and "nests deeper than" in deep["MESSAGE"]["MESSAGE"]
        assert reply_to(w, "add", 1, 2)["CODE"] == 200


# docs/protocol.md: more than 1024 levels in MessagePack, 500 in JSON, the message's own
# levels included (a result's map and MESSAGE: 2; a call's map and ARGS: 2).
@pytest.mark.parametrize(("framing", "limit"), [("separator", 1022), ("json", 498)])
@pytest.mark.parametrize("side", ["server-result", "client-argument"])
def test_nesting_deeper_than_the_documented_levels_is_never_sent(
    server: RunningServer, side: str, framing: str, limit: int
) -> None:
    from .app import nest

    json = framing == "json"
    if side == "server-result":
        with Wire(server.server.address[1], **FRAMINGS[framing]) as w:
            assert reply_to(w, "nest", limit)["CODE"] == 200
            deep = reply_to(w, "nest", limit + 1)
            assert deep["CODE"] == 405 and "nests deeper than" in deep["MESSAGE"]["MESSAGE"]
    else:
        with RPC(server.url, debug=json) as rpc:
            assert rpc.length(nest(limit)) == 1  # nest(n) is n arrays around a scalar
            with pytest.raises(errors.LocalProtocolError, match="nests deeper than"):
                rpc.length(nest(limit + 1))


def test_stream_item_with_the_separator_405(port: int) -> None:
    with Wire(port, **FRAMINGS["separator"]) as w:
        id = new_id()
        w.send(w.request("gen_separator", id=id))
        messages = w.recv_n(3)
        assert [m["CODE"] for m in messages] == [201, 202, 405]
        assert messages[2]["MESSAGE"] == {
            "ID": id,
            "EXCEPTION": "ResultLimitError",
            "MESSAGE": "gen_separator(): stream item not delivered: the encoded message contains "
            "the 11-byte frame separator and cannot be sent with separator framing; use "
            "length framing",
        }
        assert reply_to(w, "add", 1, 2)["MESSAGE"]["RESULT"] == 3
    with Wire(port, **FRAMINGS["length"]) as w:
        id = new_id()
        w.send(w.request("gen_separator", id=id))
        items = [m["MESSAGE"].get("RESULT") for m in w.recv_n(5)]
        assert items == [None, 1, b"a##PRO-END##b", 3, None]


def test_error_text_with_the_separator_in_length_framing(port: int) -> None:
    with Wire(port, **FRAMINGS["length"]) as w:
        reply = reply_to(w, "raise_text", "##PRO-", "END##")
        assert reply["CODE"] == 404 and reply["MESSAGE"]["MESSAGE"] == "##PRO-END##"


@pytest.mark.parametrize("framing", ["separator", "json"])
@pytest.mark.parametrize("method", ["raise_text", "gen_raise_text"])
def test_error_text_with_the_separator_is_still_answered(
    port: int, framing: str, method: str
) -> None:
    with Wire(port, timeout=5, **FRAMINGS[framing]) as w:
        id, after = new_id(), new_id()
        w.send(w.request(method, "##PRO-", "END##", id=id), w.request("sleep", 0.2, id=after))
        seen: dict[str, list[int]] = {}
        while after not in seen:
            message = w.recv()
            seen.setdefault(message["MESSAGE"]["ID"], []).append(message["CODE"])
        assert seen[id][-1] in (404, 405)


def test_error_text_with_the_separator_reaches_the_legacy_client(server: RunningServer) -> None:
    with (
        RPC(server.url, features=(), timeout=3) as rpc,
        pytest.raises((errors.RPCRuntimeError, errors.ResultLimitError)),
    ):
        rpc.raise_text("##PRO-", "END##")
