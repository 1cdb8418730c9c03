"""The REAL pymprpc 0.0.3 blocking client (`pymprpc.client.RPC`, Python 3.11/3.12) against
today's `pymprpc.Server`.

0.0.3's blocking client reads and writes through `telnetlib.Telnet`, which speaks the
telnet protocol: it drops every NUL (0x00) and XON (0x11) byte it reads, treats 0xff as a
telnet command, and doubles every 0xff it writes. JSON (`debug=True`, what the usage
page's examples use) never contains those bytes, so the page's examples work; MessagePack
and compressed payloads usually do, and then break, whatever the server (see
test_reference_003.py: 0.0.3's own server fares no better). Those are pinned below as
0.0.3 limitations.
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)

USAGE_PAGE = {
    "methodHelp": "有help",
    "lenConnections": 1,
    "lenUndoneTasks": 1,  # the call asking
    "testclassmethod": 3,
    "testclasscoro": 5,
    "testcoro": 11,
    "testfunc": 9,
    "testcorogen": list(range(3, 13)),
    "testclasscorogen": list(range(3, 13)),
}


def test_usage_page_blocking_example(modern, new_server):
    """seed/index.rst's blocking example, as written (debug=True: JSON), line by line."""
    srv = new_server()
    res = modern.client("usage_page", url=srv.url())
    welcome = res.value("connect")
    assert welcome["CODE"] == 100 and welcome["DEBUG"] is True and "FEATURES" not in welcome
    methods = res.value("listMethods")
    assert {
        "testfunc",
        "testcoro",
        "testcorogen",
        "testclassmethod",
        "testclasscoro",
        "testclasscorogen",
        "system.listMethods",
    } <= set(methods)
    for step, expected in USAGE_PAGE.items():
        assert res.value(step) == expected, step
    # Pinned difference: 0.0.3's server answered str(inspect.signature(f)), "(a, b)";
    # this one names the method. Nothing in 0.0.3's client parses it.
    assert res.value("methodSignature") == "testclassmethod(a, b)"
    assert res.value("close") is None


def test_positional_and_keyword_arguments(modern, new_server):
    srv = new_server()
    res = modern.client("args", url=srv.url())
    assert res.value("kw(1)") == [1, 2, 3]
    assert res.value("kw(1, b=5)") == [1, 5, 3]
    assert res.value("kw(a=1, c=9)") == [1, 2, 9]
    assert res.value("kw(1, 2, c=4)") == [1, 2, 4]
    assert res.value("testfunc(a=1, b=2)") == 3


JSON_VALUES = {
    "unicode": "héllo wörld ✓ 中文 😀",
    "empty str": "",
    "nested": {"a": [1, {"b": [None, True, False, {"c": {"d": ["deep"]}}]}], "e": {}},
    "list": [1, "two", 3.5, None, [], {}],
    "None": None,
    "True": True,
    "False": False,
    "float": 0.1,
    "negative float": -1.5e300,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "uint64 max": 2**64 - 1,
    "2**70": 2**70,  # JSON carries it; MessagePack could not
    "0": 0,
    "17": 17,
    "-1": -1,
    "255": 255,
    "16 items": list(range(1, 17)),
    "str of 40": "abcdefghij" * 4,
}


def test_values_round_trip_in_json(modern, new_server):
    srv = new_server()
    res = modern.client("values", url=srv.url(), values=list(JSON_VALUES))
    for name, expected in JSON_VALUES.items():
        assert res.value(name) == expected, name
    assert res.value("after") == 3


def test_nan_and_infinity_are_refused_in_json(modern, new_server):
    """Pinned, documented difference (docs/protocol.md, "JSON is strict"): 0.0.3's client
    sends NaN/Infinity tokens (Python's json), this server reads them but will not send
    them back: 405 with a readable message, and the connection goes on. 0.0.3's server
    echoed them."""
    srv = new_server()
    res = modern.client("nan", url=srv.url())
    for step, word in (("echo(nan)", "nan"), ("echo(inf)", "inf")):
        err = res.raised(step)
        assert (err["raised"], err["code"]) == ("ResultLimitError", 405)
        assert f"MESSAGE.RESULT is {word}, which strict JSON cannot carry" in err["message"]
    assert res.value("after") == 3


def test_str_and_bytes_in_msgpack(modern, new_server):
    """msgpack < 1 packs bytes and str alike as raw: the server receives a str for a
    bytes argument (0.0.3 limitation: its client cannot mark bytes). A bytes result goes
    out as bin, which old msgpack reads as bytes. (An integral idle timeout: see
    test_msgpack_mode_login_needs_an_integral_idle_timeout.)"""
    srv = new_server(timeout=180)
    res = modern.client("bytes", url=srv.url(), debug=False)
    assert res.value("typeof('abc')") == ["str", "abc"]
    assert res.value("typeof(b'abc')") == ["str", "abc"]
    assert res.value("make_bytes('abc')") == {"bytes": "616263"}
    # 0.0.3 limitation: non-UTF-8 bytes go out as a raw string that is not UTF-8; the
    # server cannot decode it and closes the connection with 506 (0.0.3's own server
    # failed to decode it too, and stopped reading the connection without a word).
    err = res.raised("echo(b'\\xfe\\x80')")
    assert (err["raised"], err["code"]) == ("ProtocolSyntaxException", 506)
    assert res.raised("after")["raised"] in ("ConnectionResetError", "EOFError", "BrokenPipeError")


def test_bytes_in_json(modern, new_server):
    """JSON has no bytes: 0.0.3's client fails locally (TypeError); a bytes result gets a
    readable 405 instead of 0.0.3's silence."""
    srv = new_server()
    res = modern.client("bytes", url=srv.url(), debug=True)
    assert res.raised("typeof(b'abc')")["raised"] == "TypeError"
    err = res.raised("make_bytes('abc')")
    assert (err["raised"], err["code"]) == ("ResultLimitError", 405)
    assert "MESSAGE.RESULT is bytes" in err["message"]
    assert res.value("after") == 3


def test_msgpack_mode_is_mangled_by_telnetlib(modern, new_server):
    """0.0.3 limitation (telnetlib, see the module doc): in MessagePack mode a reply
    holding a 0x00 or 0x11 byte (the integers 0 and 17, a float, an array of 16+ items
    such as listMethods' answer) is corrupted on reading, and a request holding 0xff (-1,
    large integers) is corrupted on writing: the server answers 506 and closes. Values
    whose encoding avoids those bytes work."""
    srv = new_server(timeout=180)
    values = ["unicode", "nested", "None", "True", "str of 40", "0", "17", "16 items", "-1"]
    res = modern.client("values", url=srv.url(), debug=False, values=values)
    assert res.value("unicode") == JSON_VALUES["unicode"]
    assert res.value("nested") == JSON_VALUES["nested"]
    assert res.value("None") is None and res.value("True") is True
    assert res.value("str of 40") == JSON_VALUES["str of 40"]
    for step in ("0", "17", "16 items"):  # read back without their 0x00/0x11 bytes
        err = res.raised(step)
        assert err["raised"] == "ValueError", (step, err)
        assert "Unpack failed" in err["message"] or "max_array_len" in err["message"], err
    err = res.raised("-1")  # sent with its 0xff doubled
    assert (err["raised"], err["code"]) == ("ProtocolSyntaxException", 506)


def test_msgpack_mode_login_needs_an_integral_idle_timeout(modern, new_server):
    """0.0.3 limitation: the welcome reply's TIMEOUT, a float 180.0 by default as in
    0.0.3's server (a MessagePack float64 holds 0x00 bytes), or 0 when disabled, cannot
    pass telnetlib: the old blocking client in MessagePack mode cannot even log in. It
    can with an integral timeout. Against 0.0.3's own server it never got further than
    the login anyway (test_reference_003.py)."""
    for timeout, ok in ((180.0, False), (0, False), (None, False), (60, True)):
        srv = new_server(timeout=timeout)
        res = modern.client("login", url=srv.url(), debug=False)
        if ok:
            assert res.value("connect")["TIMEOUT"] == timeout and res.value("call") == 3
        else:
            assert "Unpack failed" in res.raised("connect")["message"], timeout


def test_call_errors(modern, new_server):
    srv = new_server()
    res = modern.client("errors", url=srv.url())
    expected = {
        "boom": ("RPCRuntimeError", 404, "kaput"),
        "unknown method": ("NotFindError", 401, "no method named 'nosuch'"),
        "too few args": ("ParamError", 402, "missing a required argument: 'b'"),
        "too many args": ("ParamError", 402, "too many positional arguments"),
        "unknown keyword": ("ParamError", 402, "unexpected keyword argument 'd'"),
        # raised by 0.0.3's client itself, before sending: system.* names it does not know
        "unknown system method": ("UnsupportSysMethodError", 406, "system.nosuch"),
        # Pinned, documented difference: 0.0.3's server answered "" for unknown names.
        "methodHelp(unknown)": ("NotFindError", 401, "nosuch"),
        "methodSignature(unknown)": ("NotFindError", 401, "nosuch"),
    }
    for step, (name, code, text) in expected.items():
        err = res.raised(step)
        assert (err["raised"], err["code"]) == (name, code), step
        assert text in err["message"], (step, err["message"])
    assert res.value("after") == 3  # the connection survived every call error


@pytest.mark.parametrize(
    ("auth", "user", "password", "ok"),
    [
        ([("admin", "admin")], "admin", "admin", True),
        ([("admin", "admin")], "admin", "wrong", False),
        ([("admin", "admin")], None, None, False),
        # 0.0.3's server never answered an anonymous login when it had no account
        # configured (its clients hung); this one welcomes it.
        (None, None, None, True),
        (None, "admin", "admin", False),
    ],
    ids=["right", "wrong-password", "no-credentials", "anonymous", "credentials-on-anonymous"],
)
def test_login(modern, new_server, auth, user, password, ok):
    srv = new_server(auth=auth)
    res = modern.client("login", url=srv.url(user, password))
    if ok:
        assert res.value("connect")["CODE"] == 100 and res.value("call") == 3
    else:
        err = res.raised("connect")
        assert (err["raised"], err["code"], err["message"]) == ("LoginError", 501, "Login Error")


@pytest.mark.parametrize("debug", [True, False], ids=["json", "msgpack"])
@pytest.mark.parametrize("compreser", ["zlib", "bz2", "lzma"])
def test_compression_cannot_pass_telnetlib(modern, new_server, compreser, debug):
    """0.0.3 limitation: the server detects the compression and answers compressed (the
    welcome says so), but compressed bytes hold NULs, which telnetlib drops: the old
    blocking client cannot decompress the welcome. (Its asyncio client can:
    test_old_async_client.py.)"""
    srv = new_server(timeout=180)
    res = modern.client("login", url=srv.url(), debug=debug, compreser=compreser)
    err = res.raised("connect")
    assert err["module"] in ("zlib", "builtins", "_lzma"), err
    assert "decompress" in err["where"] or "Invalid data stream" in err["message"], err


def test_stream_that_fails_hangs_the_old_client(modern, new_server):
    """0.0.3 limitation: its blocking client reads a stream until 206 and ignores any
    other code, so the 404 this server sends when the generator raises part-way is
    skipped and it waits for ever (0.0.3's server sent nothing at all: the same hang)."""
    srv = new_server()
    res = modern.client("stream_fail", url=srv.url(), hang=2)
    assert res.value("count(3)") == [0, 1, 2]
    assert res.hung == "count_then_fail(3)"


def test_deprecated_methods_warn(modern, new_server):
    srv = new_server()
    res = modern.client("deprecated", url=srv.url())
    assert res.value("old_add") == 3 and res.warnings("old_add") == ["ExpireWarning"]
    assert res.value("old_count") == [0, 1, 2]
    assert res.warnings("old_count") == ["ExpireStreamWarning"]
    assert res.value("after") == 3


def test_idle_timeout(modern, new_server):
    """No heartbeat in 0.0.3's blocking client: after the idle timeout the server sends
    504 and closes; the next call reads that 504 (TimeoutException), the one after fails
    on the closed socket, and reconnect() brings it back, as with 0.0.3's server."""
    srv = new_server(timeout=1)
    res = modern.client("idle", url=srv.url(), idle=1.8)
    assert res.value("before") == 3
    err = res.raised("after idle")
    assert (err["raised"], err["code"]) == ("TimeoutException", 504)
    assert res.raised("again")["raised"] in ("BrokenPipeError", "ConnectionResetError", "EOFError")
    assert res.value("after reconnect") == 9


def test_many_sequential_calls_on_one_connection(modern, new_server):
    srv = new_server()
    res = modern.client("many", url=srv.url(), n=300)
    assert res.value("calls") == sum(i + 1 for i in range(300))
    # One Method object reuses its ID for each call: fine, each finished first.
    assert res.value("same ID twice") == [3, 7]
    assert res.value("streams") == [[0, 1, 2]] * 20


def test_big_values(modern, new_server):
    """Half a megabyte each way works; past the server's max_message_size (1 MiB here)
    the server answers 505 and closes (0.0.3 had no bound)."""
    srv = new_server(max_message_size=1 << 20)
    res = modern.client("big", url=srv.url(), results=[500_000], arguments=[500_000, 2_000_000])
    assert res.value("result of 500000") == 500_000
    assert res.value("argument of 500000") == 500_000
    err = res.raised("argument of 2000000")
    assert (err["raised"], err["code"]) == ("ProtocolException", 505)


def test_separator_in_values(modern, new_server):
    srv = new_server()
    res = modern.client("separator", url=srv.url())
    # A result holding ##PRO-END## is refused with a readable 405; the connection goes on.
    err = res.raised("result holds separator")
    assert (err["raised"], err["code"]) == ("ResultLimitError", 405)
    assert "frame separator" in err["message"]
    assert res.value("after result") == 3
    # 0.0.3 limitation: its client frames an argument holding the separator as is; the
    # server sees a broken frame, answers 506 and closes.
    err = res.raised("argument holds separator")
    assert (err["raised"], err["code"]) == ("ProtocolSyntaxException", 506)


def test_close_releases_the_connection(modern, new_server):
    srv = new_server()
    res = modern.client("close", url=srv.url())
    assert res.value("lenConnections") == 1
    assert res.value("close") is None
    # 0.0.3 limitation: a call after close() fails with telnetlib's AttributeError.
    assert res.raised("call after close")["raised"] == "AttributeError"
    deadline = time.monotonic() + 5
    while srv.connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.connections() == 0


def test_shutdown_answers_a_running_call_503(modern, new_server):
    """A call still running when the server shuts down gets 503 (no 407 for a client
    that did not negotiate `cancel`): 0.0.3's client raises RpcUnavailableException."""
    srv = new_server(grace_period=0.3)
    out = {}
    worker = threading.Thread(
        target=lambda: out.update(res=modern.client("slow_call", url=srv.url(), seconds=10))
    )
    worker.start()
    srv.wait_for_a_running_call()
    srv.stop()
    worker.join(30)
    err = out["res"].raised("sleep")
    assert (err["raised"], err["code"]) == ("RpcUnavailableException", 503)


def test_close_during_a_call(modern, new_server):
    """0.0.3's client closes its socket with a call still running (no message: the
    protocol has none). The server sees a plain EOF, which it treats as a half-close
    (docs/protocol.md): the call runs to its end, its reply then fails to reach the gone
    client, and the connection is cleaned up."""
    srv = new_server()
    res = modern.client("sleep_then_close", url=srv.url(), seconds=1.0)
    assert res.value("close") is None
    deadline = time.monotonic() + 10
    while srv.connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.connections() == 0
