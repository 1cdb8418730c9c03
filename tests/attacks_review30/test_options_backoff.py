"""Contracts 4 and 5: Server options are type-checked with messages that say what to do,
and nothing valid is refused; the login back-off WARNING states the real block."""

from __future__ import annotations

import logging

import pytest

from pymprpc import Server, errors
from pymprpc.client import RPC
from pymprpc.testing import serve_in_thread


@pytest.mark.parametrize("name", ["version", "description"])
@pytest.mark.parametrize("value", [1, 1.5, b"1.0", ["1"]])
def test_text_options_refused_with_advice(name: str, value: object) -> None:
    with pytest.raises(TypeError) as info:
        Server(("127.0.0.1", 0), **{name: value})
    text = str(info.value)
    assert name in text and "str" in text and f"{name}=str(" in text


@pytest.mark.parametrize("name", ["debug", "reuse_port"])
@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_flags_must_be_bool(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        Server(("127.0.0.1", 0), **{name: value})


def test_empty_user_name_refused() -> None:
    with pytest.raises(ValueError) as info:
        Server(("127.0.0.1", 0), auth=[("", "pw")])
    assert "user" in str(info.value).lower()


class Documented(Server):
    """A server whose docstring is its description."""


def test_valid_text_options_accepted_and_sent() -> None:
    class MyStr(str):
        pass

    server = Server(
        ("127.0.0.1", 0),
        version=MyStr("1.2.3-rc.1+build"),
        description=Documented.__doc__,
        debug=True,
        grace_period=1,
    )
    with serve_in_thread(server) as running, RPC(running.url) as rpc:
        info = rpc.server_info
        assert info is not None
        assert info.version == "1.2.3-rc.1+build"
        assert info.description == Documented.__doc__


@pytest.mark.parametrize(
    ("backoff", "said"), [(0.5, ["0.5s", "1s", "2s"]), (0.1, ["0.1s", "0.2s", "0.4s"])]
)
def test_backoff_warning_states_the_block(
    backoff: float, said: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    import time

    server = Server(
        ("127.0.0.1", 0),
        auth=[("u", "right")],
        login_attempts=1,
        login_backoff=backoff,
        grace_period=1,
    )
    caplog.set_level(logging.WARNING, "pymprpc")
    with serve_in_thread(server) as running:
        url = running.url.replace("tcp://", "tcp://u:wrong@")
        for i in range(4):
            with pytest.raises(errors.LoginError):
                RPC(url).connect()
            time.sleep(backoff * 2 ** max(i - 1, 0) + 0.05)  # past the block
    texts = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
    blocks = [t.rsplit("refused for ", 1)[1] for t in texts if "refused for" in t]
    assert blocks[:3] == said
