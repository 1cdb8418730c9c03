"""Fixtures: one contract server per test module (a real server on 127.0.0.1, port 0),
and raw connections in each of the framings a client may speak."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pymprpc.testing import RunningServer

from . import app
from .wire import ALL_FEATURES, Wire

# name -> Wire options: a 0.0.3 client (separator framing, MessagePack), a 0.0.3 debug
# client (JSON), and a client that negotiated every extension (length framing).
FRAMINGS: dict[str, dict[str, Any]] = {
    "separator": {"features": None},
    "json": {"features": None, "json_mode": True},
    "length": {"features": ALL_FEATURES},
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = app.serve()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def intercepted() -> Iterator[RunningServer]:
    """A server with an interceptor (`app.reply_metadata`): request metadata `want` comes
    back as response metadata `got`."""
    running = app.serve(echo_metadata=True)
    yield running
    running.stop()


@pytest.fixture(params=["bare", "intercepted"])
def either(request: pytest.FixtureRequest) -> RunningServer:
    """Each of the two: calls without interceptors take the plain path, with one the other."""
    name = "server" if request.param == "bare" else "intercepted"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def iport(intercepted: RunningServer) -> int:
    return int(intercepted.server.address[1])


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """serve(**options): a server of its own for this test, stopped after it."""
    started: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        started.append(app.serve(**options))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def port(server: RunningServer) -> int:
    return int(server.server.address[1])


@pytest.fixture(params=list(FRAMINGS))
def framing(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wire(port: int, framing: str) -> Iterator[Wire]:
    """A logged-in raw connection in each framing."""
    with Wire(port, **FRAMINGS[framing]) as connection:
        yield connection
