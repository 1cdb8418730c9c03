"""Addresses and options: one clear line for a user's mistake, never the password."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import pytest

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import LoginError

from ._kit import arun, make_server, serving

CLIENTS = [RPC, AsyncRPC]


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    "addr,words",
    [
        ("tcp://u:s3cret@127.0.0.1", "needs a host and a port"),
        ("tcp://u:s3cret@127.0.0.1:99999", "bad port"),
        ("http://u:s3cret@h:1", "must look like"),
        ("tcp://u:s3cret@h:1/db", "more than a host and a port"),
        ("tcp://u:s3cret@h:1?x=1", "more than a host and a port"),
        ("tcp://u:s3/cret@h:1", "percent-encoded"),
        ("tcp://u:s3cret@[::1:5000", "cannot be parsed"),
    ],
)
def test_bad_address_one_line_no_password(cls: Any, addr: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        cls(addr)
    text = str(info.value)
    assert words in text
    assert "s3cret" not in text and "cret" not in text
    assert "\n" not in text


# Found: an address that is not a str (None from os.environ.get, an int, bytes) gave
# AttributeError "'NoneType' object has no attribute 'find'" instead of a clear error.


@pytest.mark.parametrize("cls", CLIENTS)
@pytest.mark.parametrize(
    "addr", [None, 5000, b"tcp://127.0.0.1:5000"], ids=["None", "int", "bytes"]
)
def test_address_not_a_string_is_a_clear_error(cls: Any, addr: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        cls(addr)
    assert "address" in str(info.value), str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
def test_features_given_as_one_string(cls: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        cls("tcp://127.0.0.1:1", features="cancel")
    assert "'cancel'" in str(info.value) and "features" in str(info.value), str(info.value)


@pytest.mark.parametrize("cls", CLIENTS)
def test_unknown_feature_names_the_option(cls: Any) -> None:
    with pytest.raises(ValueError) as info:
        cls("tcp://127.0.0.1:1", features=["cancel", "nope"])
    text = str(info.value)
    assert "features" in text and "length-framing" in text, text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ssl_option_of_wrong_type(kind: str) -> None:
    cls = RPC if kind == "sync" else AsyncRPC
    with pytest.raises(TypeError, match="ssl"):
        cls("tcp://127.0.0.1:1", ssl=1)  # type: ignore[arg-type]


def _auth_server() -> Server:
    server = make_server(auth=[("alice", "p@ss:w/rd#?[]")])
    return server


@pytest.mark.timeout(30)
def test_percent_encoded_password_both_clients() -> None:
    quoted = urllib.parse.quote("p@ss:w/rd#?[]", safe="")
    with serving(_auth_server()) as url:
        good = url.replace("tcp://", f"tcp://alice:{quoted}@")
        with RPC(good) as rpc:
            assert rpc.echo(1) == 1

        async def main() -> Any:
            async with AsyncRPC(good) as rpc:
                return await rpc.echo(2)

        assert arun(main()) == 2


@pytest.mark.timeout(30)
def test_wrong_password_same_error_both_clients_without_password() -> None:
    with serving(_auth_server()) as url:
        bad = url.replace("tcp://", "tcp://alice:wr0ngpass@")
        with pytest.raises(LoginError) as sync_info:
            RPC(bad).connect()

        async def main() -> BaseException:
            try:
                await AsyncRPC(bad).connect()
            except LoginError as exc:
                return exc
            raise AssertionError("logged in")

        async_exc = arun(main())
    assert str(sync_info.value) == str(async_exc)
    assert "wr0ngpass" not in str(async_exc)
    assert str(async_exc).startswith("authentication failed for tcp://")


@pytest.mark.timeout(30)
def test_ipv6_literal() -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = Server(("::1", 0))

    @server.register_function()
    async def echo(x: Any) -> Any:
        return x

    try:
        with serving(server):
            url = f"tcp://[::1]:{server.port}"
            with RPC(url) as rpc:
                assert rpc.echo("v6") == "v6"

            async def main() -> Any:
                async with AsyncRPC(url) as rpc:
                    return await rpc.echo("v6a")

            assert arun(main()) == "v6a"
    except OSError as exc:  # no ::1 on this host
        pytest.skip(str(exc))


@pytest.mark.timeout(30)
def test_plain_mprpc_features_empty() -> None:
    with serving(make_server()) as url:
        with RPC(url, features=()) as rpc:
            assert rpc.server_info is not None
            assert not rpc.server_info.features
            assert rpc.echo({"a": [1, 2]}) == {"a": [1, 2]}
            assert list(rpc.count(3)) == [0, 1, 2]

        async def main() -> Any:
            async with AsyncRPC(url, features=()) as rpc:
                assert rpc.server_info is not None and not rpc.server_info.features
                return await rpc.echo(3), [x async for x in await rpc.count(3)]

        assert arun(main()) == (3, [0, 1, 2])


@pytest.mark.timeout(30)
def test_refused_connection_same_error_both_clients() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"tcp://u:s3cret@127.0.0.1:{port}"
    with pytest.raises(ConnectionError) as sync_info:
        RPC(url).connect()

    async def main() -> BaseException:
        try:
            await AsyncRPC(url).connect()
        except ConnectionError as exc:
            return exc
        raise AssertionError("connected")

    async_exc = asyncio.run(main())
    assert str(sync_info.value) == str(async_exc)
    assert "s3cret" not in str(async_exc)
    assert "Connection refused" in str(async_exc)
