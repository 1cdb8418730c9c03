"""Baselines: the REAL 0.0.3 clients against the REAL 0.0.3 server (both on the legacy
venv). They say what "keeps working" can mean: where 0.0.3 already failed against
itself, the failure is 0.0.3's own, not the new code's (the other files cite these)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def test_usage_page_examples_work_between_003_peers(legacy, old_server):
    """The harness drives 0.0.3 as its users did: both usage-page examples pass."""
    server = old_server(debug=True)  # the page's server and clients use debug=True
    res = legacy.client("usage_page", url=server.url(), debug=True)
    assert res.value("testcorogen") == list(range(3, 13))
    assert res.value("methodSignature") == "(a, b)"
    server = old_server()
    res = legacy.client("aio_usage_page", url=server.url(), debug=False)
    assert res.value("testclasscorogen") == list(range(3, 13))


def test_failed_stream_hangs_only_itself_between_003_peers(legacy, old_server):
    """Baseline for test_old_async_client.py::test_later_calls_survive_a_stream_that_fails:
    0.0.3's server sends nothing when a generator raises, the stream hangs, and the
    connection stays usable."""
    server = old_server()
    res = legacy.client("aio_stream_fail", url=server.url(), method="slow_count_then_fail", hang=2)
    assert res.steps["slow_count_then_fail(3)"] == {"hung": True, "items": [0, 1, 2]}
    assert res.value("after") == 3


def test_blocking_client_in_msgpack_mode_fails_against_003(legacy, old_server):
    """Baseline for the telnetlib pins in test_old_sync_client.py: with 0.0.3's default
    timeout (180.0, a float64 with NUL bytes) its blocking client in MessagePack mode
    cannot read the welcome; with timeout=None it logs in, but every reply carries a
    36-character ID that msgpack < 1 packs as raw16 (a 0x00 length byte): unreadable."""
    server = old_server()
    res = legacy.client("login", url=server.url(), debug=False)
    assert "Unpack failed" in res.raised("connect")["message"]
    server = old_server(timeout=None)
    res = legacy.client("login", url=server.url(), debug=False)
    assert res.value("connect")["TIMEOUT"] is None
    assert "Unpack failed" in res.raised("call")["message"]


@pytest.mark.parametrize("compreser", ["zlib", "bz2", "lzma"])
def test_blocking_client_with_compression_fails_against_003(legacy, old_server, compreser):
    """Baseline for test_old_sync_client.py::test_compression_cannot_pass_telnetlib."""
    server = old_server(debug=True, compreser=compreser)
    res = legacy.client("login", url=server.url(), debug=True, compreser=compreser, hang=1.5)
    assert res.hung == "connect" or "raised" in res.steps["connect"], res


def test_003_server_answers_unknown_system_methods_401(legacy, old_server):
    """Baseline for test_list_services_on_a_003_server_raises_unsupported: 0.0.3's own
    clients refuse unknown system.* names locally (406); its server has no 406 at all."""
    server = old_server()
    res = legacy.client("aio_errors", url=server.url())
    err = res.raised("unknown system method")
    assert (err["raised"], err["code"]) == ("UnsupportSysMethodError", 406)
    assert "utils.py" in err["where"]  # raised by the client, before sending
    err = res.raised("unknown method")
    assert (err["raised"], err["code"]) == ("NotFindError", 401)
