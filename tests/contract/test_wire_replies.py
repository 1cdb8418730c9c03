"""Reply bytes and fields, exactly as docs/protocol.md documents them, over raw sockets in
every framing: separator (a 0.0.3 client), JSON debug mode, negotiated length framing."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack
import pytest

from .conftest import FRAMINGS
from .wire import ALL_FEATURES, SEPARATOR, Wire, bare, new_id, ok

pytestmark = pytest.mark.timeout(60)


def error(id: Any, code: int, exception: str, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ID": id, "EXCEPTION": exception, "MESSAGE": message}
    if data is not None:
        body["DATA"] = data
    return {"MPRPC": "0.1", "CODE": code, "MESSAGE": body}


def data(method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"METHOD": method, "ARGS": args, "KWARGS": kwargs or {}}


def test_welcome_reply_fields(wire: Wire, framing: str) -> None:
    expected: dict[str, Any] = {
        "MPRPC": "0.1",
        "CODE": 100,
        "VERSION": None,
        "DESC": None,
        "DEBUG": framing == "json",
        "COMPRESER": None,
        "TIMEOUT": 180,
    }
    if framing == "length":
        expected["FEATURES"] = sorted(ALL_FEATURES)
    assert wire.welcome is not None
    assert {**wire.welcome, "FEATURES": sorted(wire.welcome.get("FEATURES", []))} == {
        **expected,
        "FEATURES": expected.get("FEATURES", []),
    }
    assert ("FEATURES" in wire.welcome) == (framing == "length")


def test_empty_features_list_is_echoed_empty(port: int) -> None:
    with Wire(port, features=[]) as w:
        assert w.welcome is not None and w.welcome["FEATURES"] == []
        assert not w.length
        assert w.call("add", 1, 2)["CODE"] == 200


def test_unknown_feature_names_are_ignored(port: int) -> None:
    with Wire(port, features=["no-such-thing", "cancel"]) as w:
        assert w.welcome is not None and w.welcome["FEATURES"] == ["cancel"]


def test_success_reply_is_exact(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("add", 1, 2, id=id))
    assert wire.recv() == ok(id, 3)


@pytest.mark.parametrize("method", ["add", "add_coro", "add_thread", "add_process"])
def test_success_on_every_executor(wire: Wire, method: str) -> None:
    id = new_id()
    wire.send(wire.request(method, "a", "b", id=id))
    assert wire.recv() == ok(id, "ab")


def test_kwargs_and_missing_args(wire: Wire) -> None:
    id = new_id()
    wire.send({"MPRPC": "0.1", "ID": id, "METHOD": "echo", "KWARGS": {"k": [1, {"n": None}]}})
    assert wire.recv() == ok(id, [[], {"k": [1, {"n": None}]}])
    id = new_id()
    wire.send({"MPRPC": "0.1", "ID": id, "METHOD": "echo", "ARGS": None, "KWARGS": None})
    assert wire.recv() == ok(id, [[], {}])


def test_none_result(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("void", id=id))
    assert wire.recv() == ok(id, None)


def test_heartbeat(wire: Wire) -> None:
    assert wire.ping() == {"MPRPC": "0.1", "CODE": 101, "HEARTBEAT": "pong"}


def test_unknown_method_401(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("nope", 1, id=id))
    assert wire.recv() == error(
        id,
        401,
        "NotFindError",
        "no method named 'nope' (system.listMethods lists them)",
        data("nope", [1]),
    )


def test_unknown_system_method_406(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("system.nope", id=id))
    assert wire.recv() == error(
        id,
        406,
        "UnsupportSysMethodError",
        "unsupported system method 'system.nope'",
        data("system.nope", []),
    )


def test_wrong_arity_402(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("add", 1, id=id))
    assert wire.recv() == error(
        id, 402, "ParamError", "add(): missing a required argument: 'b'", data("add", [1])
    )
    id = new_id()
    wire.send(wire.request("add", 1, 2, 3, id=id))
    reply = wire.recv()
    assert reply["CODE"] == 402 and reply["MESSAGE"]["DATA"] == data("add", [1, 2, 3])
    id = new_id()
    wire.send(wire.request("add", 1, 2, id=id, KWARGS={"c": 1}))
    reply = wire.recv()
    assert reply["CODE"] == 402 and reply["MESSAGE"]["ID"] == id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ARGS": {"a": 1}}, "ARGS must be an array, got dict"),
        ({"ARGS": 5}, None),
        ({"KWARGS": [1]}, None),
        ({"RETURN": 1}, "RETURN must be a boolean, got 1"),
        ({"RETURN": "yes"}, None),
        ({"METHOD": ""}, "request has no METHOD (a non-empty string)"),
        ({"METHOD": 7}, "request has no METHOD (a non-empty string)"),
        ({"METHOD": None}, None),
    ],
)
def test_malformed_request_400(wire: Wire, fields: dict[str, Any], message: str | None) -> None:
    id = new_id()
    request = {"MPRPC": "0.1", "ID": id, "METHOD": "echo", "ARGS": [], **fields}
    wire.send(request)
    reply = wire.recv()
    assert reply["CODE"] == 400 and set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE"}
    assert reply["MESSAGE"]["ID"] == id and reply["MESSAGE"]["EXCEPTION"] == "RequestError"
    if message is not None:
        assert reply["MESSAGE"]["MESSAGE"] == message
    assert wire.call("add", 1, 2)["CODE"] == 200  # the connection stays usable


def test_method_missing_400(wire: Wire) -> None:
    wire.send({"MPRPC": "0.1", "ID": "x-1"})
    assert wire.recv() == error(
        "x-1", 400, "RequestError", "request has no METHOD (a non-empty string)"
    )


@pytest.mark.parametrize("framing", ["separator", "length"])  # JSON keys are always strings
def test_kwargs_non_string_keys_400(port: int, framing: str) -> None:
    with Wire(port, **FRAMINGS[framing]) as w:
        id = new_id()
        w.send({"MPRPC": "0.1", "ID": id, "METHOD": "echo", "KWARGS": {1: 2}})
        assert w.recv() == error(id, 400, "RequestError", "KWARGS must be a map with string keys")


@pytest.mark.parametrize("bad_id", [5, 0, -1, ""])
def test_integer_or_empty_id_400_carrying_it(wire: Wire, bad_id: Any) -> None:
    wire.send({"MPRPC": "0.1", "ID": bad_id, "METHOD": "add", "ARGS": [1, 2]})
    assert wire.recv() == error(
        bad_id, 400, "RequestError", f"ID must be a non-empty string, got {bad_id!r}"
    )
    assert wire.call("add", 1, 2)["CODE"] == 200


@pytest.mark.parametrize("bad_id", [1.5, [1], {"a": 1}, None, True])
def test_id_of_other_type_506_and_close(wire: Wire, bad_id: Any) -> None:
    wire.send({"MPRPC": "0.1", "ID": bad_id, "METHOD": "add", "ARGS": [1, 2]})
    assert wire.recv_until_closed() == [bare(506)]


def test_message_without_id_not_ping_506_and_close(wire: Wire) -> None:
    wire.send({"MPRPC": "0.1", "METHOD": "add", "ARGS": [1, 2]})
    assert wire.recv_until_closed() == [bare(506)]


@pytest.mark.parametrize("message", [[1, 2], "text", 5])
def test_not_a_map_506_and_close(wire: Wire, message: Any) -> None:
    wire.send(message)
    assert wire.recv_until_closed() == [bare(506)]


@pytest.mark.parametrize("version", [None, "0.2", 0.1])
def test_bad_version_505_and_close(wire: Wire, version: Any) -> None:
    message: dict[str, Any] = {"ID": new_id(), "METHOD": "add", "ARGS": [1, 2]}
    if version is not None:
        message["MPRPC"] = version
    wire.send(message)
    assert wire.recv_until_closed() == [bare(505)]


def test_garbage_payload_506_and_close(wire: Wire, framing: str) -> None:
    payload = b"{not json" if framing == "json" else b"\x81\xc1\xc1"
    wire.send_raw(wire.frame(payload))
    assert wire.recv_until_closed() == [bare(506)]


def test_second_auth_request_505_and_close(wire: Wire) -> None:
    wire.send({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}})
    assert wire.recv_until_closed() == [bare(505)]


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("ValueError", 404, "bad value"),
        ("SystemExit", 404, "the method raised SystemExit(3)"),
        ("KeyboardInterrupt", 404, "the method raised KeyboardInterrupt()"),
        ("GeneratorExit", 404, "the method raised GeneratorExit()"),
        ("CustomBase", 404, "the method raised CustomBase('custom')"),
        ("RestrictAccessError", 403, "raised by the method"),
        ("RpcException", 500, "raised by the method"),
        ("RpcUnavailableException", 503, "raised by the method"),
        ("ConnectionLostError", 404, "raised by the method"),
    ],
)
def test_handler_exception_in_coroutine(wire: Wire, kind: str, code: int, message: str) -> None:
    id = new_id()
    wire.send(wire.request("raise_coro", kind, id=id))
    assert wire.recv() == error(id, code, kind, message, data("raise_coro", [kind]))
    # The server and this connection keep serving; the ID is free again.
    wire.send(wire.request("add", 1, 2, id=id))
    assert wire.recv() == ok(id, 3)


@pytest.mark.parametrize("method", ["raise_coro", "raise_thread"])
def test_handler_raising_cancelled_error(wire: Wire, framing: str, method: str) -> None:
    """407 when CANCEL is negotiated, else 404; its ID is free again."""
    id = new_id()
    wire.send(wire.request(method, "CancelledError", id=id))
    code = 407 if framing == "length" else 404
    assert wire.recv() == error(
        id,
        code,
        "CancelledError",
        "the method raised CancelledError without its call being cancelled",
        data(method, ["CancelledError"]),
    )
    wire.send(wire.request("add", 1, 2, id=id))
    assert wire.recv() == ok(id, 3)


@pytest.mark.parametrize("method", ["raise_thread", "raise_process"])
@pytest.mark.parametrize("kind", ["ValueError", "SystemExit", "KeyboardInterrupt", "CustomBase"])
def test_handler_base_exceptions_in_pools(wire: Wire, method: str, kind: str) -> None:
    id = new_id()
    wire.send(wire.request(method, kind, id=id))
    reply = wire.recv()
    assert reply["CODE"] == 404
    assert reply["MESSAGE"]["ID"] == id and reply["MESSAGE"]["EXCEPTION"] == kind
    assert reply["MESSAGE"]["DATA"] == data(method, [kind])
    assert set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE", "DATA"}
    wire.send(wire.request(method.replace("raise", "add"), 1, 2, id=id))
    assert wire.recv() == ok(id, 3)


def test_unencodable_result_405(wire: Wire, framing: str) -> None:
    id = new_id()
    wire.send(wire.request("unencodable", id=id))
    encoding = "JSON" if framing == "json" else "MessagePack"
    reply = wire.recv()
    assert reply["CODE"] == 405 and set(reply["MESSAGE"]) == {"ID", "EXCEPTION", "MESSAGE"}
    assert reply["MESSAGE"]["ID"] == id and reply["MESSAGE"]["EXCEPTION"] == "ResultLimitError"
    if framing != "json":
        assert reply["MESSAGE"]["MESSAGE"] == (
            f"unencodable(): result not delivered: cannot encode as {encoding}: "
            "MESSAGE.RESULT['a'][2] is a set"
        )
    assert "set" in reply["MESSAGE"]["MESSAGE"]
    assert wire.call("add", 1, 2)["CODE"] == 200


def test_nan_result(wire: Wire, framing: str) -> None:
    """MessagePack carries NaN; strict JSON cannot (405 "strict JSON cannot carry")."""
    id = new_id()
    wire.send(wire.request("nan", id=id))
    reply = wire.recv()
    if framing == "json":
        assert reply["CODE"] == 405 and "strict JSON cannot carry" in reply["MESSAGE"]["MESSAGE"]
    else:
        assert reply["CODE"] == 200 and reply["MESSAGE"]["RESULT"] != reply["MESSAGE"]["RESULT"]


def test_bytes_result_in_json_mode_405(port: int) -> None:
    with Wire(port, json_mode=True) as w:
        reply = w.call("blob", 3)
        assert reply["CODE"] == 405 and reply["MESSAGE"]["EXCEPTION"] == "ResultLimitError"


def test_result_containing_separator(wire: Wire, framing: str) -> None:
    id = new_id()
    wire.send(wire.request("with_separator", id=id))
    if framing == "length":
        assert wire.recv() == ok(id, b"a##PRO-END##b")
    elif framing == "separator":
        assert wire.recv() == error(
            id,
            405,
            "ResultLimitError",
            "with_separator(): result not delivered: the encoded message contains the 11-byte "
            "frame separator"
            " and cannot be sent with separator framing; use length framing",
        )
    else:  # JSON cannot carry bytes at all
        assert wire.recv()["CODE"] == 405
    assert wire.call("add", 1, 2)["CODE"] == 200


def test_deprecated_method_300(wire: Wire) -> None:
    id = new_id()
    wire.send(wire.request("old_add", 1, 2, id=id))
    assert wire.recv() == ok(id, 3, code=300)


def test_json_encoding_on_the_wire(port: int) -> None:
    """A debug client gets compact UTF-8 JSON back, with non-ASCII kept as is."""
    with Wire(port, json_mode=True) as w:
        w.send(w.request("add", "é", "ü", id="j-1"))
        payload = w.recv_payload()
        assert (
            payload
            == json.dumps(ok("j-1", "éü"), separators=(",", ":"), ensure_ascii=False).encode()
        )


def test_msgpack_encoding_on_the_wire(port: int) -> None:
    with Wire(port) as w:
        w.send(w.request("blob", 2, id="m-1"))
        assert msgpack.unpackb(w.recv_payload(), raw=False) == ok("m-1", b"xx")


def test_length_frame_prefix(port: int) -> None:
    with Wire(port, features=["length-framing"]) as w:
        w.send(w.request("add", 1, 2, id="l-1"))
        head = w.sock.recv(4, __import__("socket").MSG_WAITALL)
        (size,) = struct.unpack(">I", head)
        body = b""
        while len(body) < size:
            body += w.sock.recv(size - len(body))
        assert msgpack.unpackb(body, raw=False) == ok("l-1", 3)


def test_calls_sent_with_the_auth_request_in_one_write(port: int) -> None:
    """The server reads bytes after the auth request with the negotiated framing, even
    when they arrive in the same read."""
    w = Wire(port, login=False)
    auth = w.encode(
        {
            "MPRPC": "0.1",
            "AUTH": {"USERNAME": None, "PASSWORD": None},
            "FEATURES": ["length-framing"],
        }
    )
    call = w.encode(w.request("add", 2, 3, id="same-read"))
    w.send_raw(auth + SEPARATOR + struct.pack(">I", len(call)) + call)
    assert w.recv()["CODE"] == 100
    w.length = True
    assert w.recv() == ok("same-read", 5)
    w.close()


def test_zlib_compressed_client(port: int) -> None:
    import zlib

    w = Wire(port, login=False)
    w.encode = lambda m: zlib.compress(msgpack.packb(m, use_bin_type=True))  # type: ignore[method-assign]
    w.decode = lambda p: msgpack.unpackb(zlib.decompress(p), raw=False)  # type: ignore[method-assign]
    assert w.login()["CODE"] == 100
    w.send(w.request("add", 1, 2, id="z-1"))
    assert w.recv() == ok("z-1", 3)
    w.close()


def test_zlib_welcome_states_compression(port: int) -> None:
    import zlib

    w = Wire(port, login=False)
    w.send_raw(
        zlib.compress(msgpack.packb({"MPRPC": "0.1", "AUTH": {"USERNAME": None, "PASSWORD": None}}))
        + SEPARATOR
    )
    welcome = msgpack.unpackb(zlib.decompress(w.recv_payload()), raw=False)
    assert welcome["CODE"] == 100 and welcome["COMPRESER"] == "zlib" and welcome["DEBUG"] is False
    w.close()


def test_system_health_and_introspection(wire: Wire) -> None:
    assert wire.call("system.health")["MESSAGE"]["RESULT"] == "SERVING"
    assert wire.call("system.health", "nobody")["MESSAGE"]["RESULT"] == "UNKNOWN"
    assert wire.call("system.health", 5)["CODE"] == 400
    methods = wire.call("system.listMethods")["MESSAGE"]["RESULT"]
    assert methods == sorted(methods) and "add" in methods and "count" in methods
    assert wire.call("system.methodHelp", "nope")["CODE"] == 401
    assert wire.call("system.lenUndoneTasks")["MESSAGE"]["RESULT"] >= 1


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("ValueError", 404, "bad value"),
        ("SystemExit", 404, "the method raised SystemExit(3)"),
        ("KeyboardInterrupt", 404, "the method raised KeyboardInterrupt()"),
        ("GeneratorExit", 404, "the method raised GeneratorExit()"),
        ("CustomBase", 404, "the method raised CustomBase('custom')"),
        (
            "CancelledError",
            None,
            "the method raised CancelledError without its call being cancelled",
        ),
        ("RpcUnavailableException", 503, "raised by the method"),
    ],
)
def test_stream_raising_part_way_ends_with_its_error(
    wire: Wire, framing: str, kind: str, code: int | None, message: str
) -> None:
    if code is None:
        code = 407 if framing == "length" else 404
    id = new_id()
    wire.send(wire.request("gen_raise", kind, id=id))
    assert wire.recv_n(3) == [
        {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
        {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": 0}},
        error(id, code, kind, message, data("gen_raise", [kind])),
    ]
    wire.send(wire.request("add", 1, 2, id=id))
    assert wire.recv() == ok(id, 3)


def test_unencodable_stream_item_ends_the_stream_405(wire: Wire, framing: str) -> None:
    id = new_id()
    wire.send(wire.request("gen_unencodable", id=id))
    messages = wire.recv_n(3)
    assert messages[:2] == [
        {"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": id}},
        {"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": 1}},
    ]
    assert messages[2]["CODE"] == 405 and set(messages[2]["MESSAGE"]) == {
        "ID",
        "EXCEPTION",
        "MESSAGE",
    }
    if framing != "json":
        assert messages[2]["MESSAGE"]["MESSAGE"] == (
            "gen_unencodable(): stream item not delivered: cannot encode as MessagePack: "
            "MESSAGE.RESULT is a set"
        )
    assert wire.call("add", 1, 2)["CODE"] == 200  # nothing more for that stream


@pytest.mark.parametrize(("method", "args", "code"), [("nope", [], 401), ("add", [1], 402)])
def test_return_false_refused_calls_are_kept(
    wire: Wire, method: str, args: list[Any], code: int
) -> None:
    """Lookup and binding happen once the call started: RETURN false keeps their error."""
    kept = new_id()
    wire.send(wire.request(method, *args, id=kept, RETURN=False))
    assert wire.ping()["CODE"] == 101
    reply = wire.call("system.getresult", kept)
    assert reply["CODE"] == code and reply["MESSAGE"]["DATA"]["METHOD"] == method


def test_return_false_malformed_request_is_answered(wire: Wire) -> None:
    wire.send({"MPRPC": "0.1", "ID": "r-bad", "METHOD": "echo", "ARGS": {}, "RETURN": False})
    assert wire.recv() == error("r-bad", 400, "RequestError", "ARGS must be an array, got dict")


def test_process_handler_raising_cancelled_error_407(port: int) -> None:
    with Wire(port, features=ALL_FEATURES) as w:
        id = new_id()
        w.send(w.request("raise_process", "CancelledError", id=id))
        reply = w.recv()
        assert (reply["CODE"], reply["MESSAGE"]["EXCEPTION"]) == (407, "CancelledError")


def test_process_handler_raising_cancelled_error_without_cancel_404(port: int) -> None:
    with Wire(port) as w:
        id = new_id()
        w.send(w.request("raise_process", "CancelledError", id=id))
        reply = w.recv()
        assert (reply["CODE"], reply["MESSAGE"]["EXCEPTION"]) == (404, "CancelledError")
        w.send(w.request("add_process", 1, 2, id=id))
        assert w.recv() == ok(id, 3)


@pytest.mark.parametrize(
    ("method", "args", "code", "result"),
    [
        ("legacy.add-one", [1], 200, 2),
        ("system.custom", [1], 200, 2),  # exact names first
        ("system.getresult.x", [], 406, None),  # then system.* refused
        ("inner.hello", ["x"], 200, "hello x"),  # then dotted names through the instance
        ("inner._secret", [], 401, None),
        ("_hidden", [], 401, None),
        ("inner.nope", [], 401, None),
        ("inner", [], 401, None),
    ],
)
def test_name_resolution(wire: Wire, method: str, args: list[Any], code: int, result: Any) -> None:
    id = new_id()
    wire.send(wire.request(method, *args, id=id))
    reply = wire.recv()
    if code == 200:
        assert reply == ok(id, result)
    else:
        assert reply["CODE"] == code and reply["MESSAGE"]["DATA"] == data(method, args)


def test_instance_methods_share_the_instance(wire: Wire) -> None:
    key = new_id()
    replies = [wire.call(*call) for call in (("put", key, [1, "v"]), ("get", key), ("aget", key))]
    assert [m["MESSAGE"]["RESULT"] for m in replies] == [None, [1, "v"], [1, "v"]]
