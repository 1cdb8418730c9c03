"""Client options and addresses (README "### Clients", docs/protocol.md "Calls")."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

from pymprpc.client import RPC, AsyncRPC
from pymprpc.errors import DeadlineExceeded, LoginError
from pymprpc.testing import RunningServer, serve_in_thread

from ._kit import make_server


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    with serve_in_thread(make_server()) as running:
        yield running


@pytest.mark.parametrize(
    ("option", "value", "error", "words"),
    [
        ("timeout", "1", TypeError, "timeout must be a number of seconds"),
        ("timeout", float("nan"), ValueError, "finite"),
        ("heart_beat", 0, ValueError, "more than 0"),
        ("connect_timeout", -1, ValueError, "more than 0"),
        ("max_message_size", 0, ValueError, "1 or more"),
        ("stream_buffer_size", 0, ValueError, "1 or more"),
        ("features", ["bogus"], ValueError, "unknown feature 'bogus'"),
        ("features", "cancel", TypeError, "write features=['cancel']"),
        ("compression", "gzip", ValueError, "unknown compression 'gzip'"),
    ],
)
def test_wrong_client_options_are_refused_saying_what_is_wrong(
    running: RunningServer, option: str, value: Any, error: type[Exception], words: str
) -> None:
    """README: "Both clients take the same options and give the same errors, messages and
    warnings". A wrong option value is refused, the same way by both clients, with a
    message naming the option."""
    with pytest.raises(error, match=re.escape(words)) as sync_error:
        RPC(running.url, **{option: value}).connect()

    async def make() -> None:
        await AsyncRPC(running.url, **{option: value}).connect()

    with pytest.raises(error) as async_error:
        asyncio.run(make())
    assert str(async_error.value) == str(sync_error.value)


def test_address_with_a_path_is_refused_and_the_password_hidden() -> None:
    """README: "An address is `tcp://[user:password@]host:port` ... and nothing more: a
    path or query is refused. ... error messages show it as `***`"."""
    with pytest.raises(ValueError, match="more than a host and a port") as error:
        RPC("tcp://admin:topsecret@127.0.0.1:5000/db")
    assert "topsecret" not in str(error.value)
    assert "***" in str(error.value)


def test_percent_encoded_password_logs_in() -> None:
    """README: "A password containing any of `: / ? # [ ] @` must be percent-encoded
    (`urllib.parse.quote(password, safe='')`)"."""
    from urllib.parse import quote

    password = "p:a/s?s#w[o]r@d"
    server = make_server(auth=[("admin", password)])
    with serve_in_thread(server) as running:
        url = running.url.replace("tcp://", f"tcp://admin:{quote(password, safe='')}@")
        with RPC(url) as rpc:
            assert rpc.echo(1) == 1
        with pytest.raises(LoginError), RPC(running.url.replace("tcp://", "tcp://admin:x@")):
            pass


def test_per_call_timeout_zero_or_negative_has_expired(running: RunningServer) -> None:
    """docs/protocol.md: "A timeout of 0 or less means the call has expired already: it
    raises `DeadlineExceeded` and never returns a value." (per call, with_options)."""
    with RPC(running.url) as rpc:
        for timeout in (0, -1):
            with pytest.raises(DeadlineExceeded):
                rpc.echo.with_options(timeout=timeout)(1)
        assert rpc.echo(2) == 2


def test_client_wide_negative_timeout_is_refused_per_call_one_expired(
    running: RunningServer,
) -> None:
    """docs/protocol.md: "A per-call timeout (`with_options(timeout=...)`) of 0 or less
    means the call has expired already ... The client-wide default (`RPC(timeout=...)`)
    must be 0 or more: a negative one is refused when the client is made." (This review
    found the two treated differently while the docs said "a timeout of 0 or less" for
    both; the docs now say which is which.)"""
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds, 0 or more"):
        RPC(running.url, timeout=-1)
    with RPC(running.url) as rpc, pytest.raises(DeadlineExceeded):
        rpc.echo.with_options(timeout=-1)(1)


def test_huge_per_call_timeout_works(running: RunningServer) -> None:
    """README: `timeout` is a "per-call deadline in seconds"; a huge one is just far."""
    with RPC(running.url) as rpc:
        assert rpc.slow.with_options(timeout=1e300)(0.01, "v") == "v"


def test_features_empty_sends_no_features_key() -> None:
    """docs/protocol.md: "`features=()` sends no `FEATURES` key at all"."""
    from ._kit import Fake

    with Fake() as fake, RPC(fake.url, features=()):
        pass
    assert fake.received and "FEATURES" not in fake.received[0]
    assert fake.received[0]["AUTH"] == {"USERNAME": None, "PASSWORD": None}
