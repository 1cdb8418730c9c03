"""Fixtures: a real server on 127.0.0.1 with an ephemeral port, stopped after each test."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from service import Probe, build_server

from helpers import OldServer, ServerThread

pytest_plugins = ["pymprpc.pytest_plugin"]


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def serve(probe: Probe) -> Iterator[Callable[..., ServerThread]]:
    """serve(**server_options) -> a started ServerThread, stopped after the test."""
    started: list[ServerThread] = []

    def start(**options: Any) -> ServerThread:
        thread = ServerThread(build_server(probe, **options)).__enter__()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.__exit__(None, None, None)


@pytest.fixture
def srv(serve: Callable[..., ServerThread]) -> ServerThread:
    return serve()


@pytest.fixture
def fake() -> Iterator[Callable[..., OldServer]]:
    """fake(on_call, welcome=...) -> a hand-written MPRPC 0.1 server (see OldServer),
    closed after."""
    made: list[OldServer] = []

    def make(on_call: Callable[[socket.socket, dict[str, Any]], None], **options: Any) -> OldServer:
        made.append(OldServer(on_call, **options))
        return made[-1]

    yield make
    for f in made:
        f.close()
