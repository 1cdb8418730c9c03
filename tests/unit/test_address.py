"""`Address`: one type for clients and server; credentials survive quoting, never printed."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pymprpc
import pymprpc.client
from pymprpc.address import Address
from pymprpc.server import Server


def test_one_address_type() -> None:
    assert pymprpc.client.Address is Address is pymprpc.Address
    server = Server(Address.parse("tcp://127.0.0.1:6000"))
    assert server.address == ("127.0.0.1", 6000)
    assert Server("tcp://127.0.0.1:6001").address == ("127.0.0.1", 6001)
    assert Server(("127.0.0.1", 6002)).address == ("127.0.0.1", 6002)
    assert Address.parse(("h", 1)) == Address("h", 1)


def test_credentials_are_kept_out_of_text() -> None:
    addr = Address.parse("tls://bob:hunter2@example.org:443")
    assert (addr.username, addr.password, addr.tls) == ("bob", "hunter2", True)
    assert "hunter2" not in str(addr) and "hunter2" not in repr(addr)
    assert str(addr) == "tls://example.org:443"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("http://h:1", "tcp://user:password@host:port"),
        ("tcp://h", "needs a host and a port"),
        ("tcp://h:99999", "bad port"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Address.parse(text)


@given(
    user=st.text(min_size=1, max_size=20),
    password=st.text(max_size=20),
    port=st.integers(1, 65535),
    tls=st.booleans(),
)
def test_quoted_credentials_round_trip(user: str, password: str, port: int, tls: bool) -> None:
    scheme = "tls" if tls else "tcp"
    text = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"
    assert Address.parse(text) == Address("127.0.0.1", port, user, password, tls)
