"""pytest fixtures for testing pymprpc services: enable with
`pytest_plugins = ["pymprpc.pytest_plugin"]` in a `conftest.py`.

- `mprpc_serve(server)`: serve `server` in a background thread for this test; returns
  its `pymprpc.testing.RunningServer` (`.url`, `.url_for(user, password)`).
- `mprpc_client(server, client=RPC, **options)`: the same, and a connected blocking
  client (`RPC` or a generated `TypedClient` subclass), closed after the test.

Async tests use `pymprpc.testing.client_for` directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .client import RPC
from .server import Server
from .testing import RunningServer, serve_in_thread, sync_client_for

__all__ = ["mprpc_client", "mprpc_serve"]


@pytest.fixture
def mprpc_serve() -> Iterator[Callable[[Server], RunningServer]]:
    """Factory: serve a server in a thread until the test ends."""
    with contextlib.ExitStack() as stack:

        def serve(server: Server) -> RunningServer:
            return stack.enter_context(serve_in_thread(server))

        yield serve


@pytest.fixture
def mprpc_client() -> Iterator[Callable[..., Any]]:
    """Factory: serve a server in a thread and return a connected blocking client."""
    with contextlib.ExitStack() as stack:

        def connect(server: Server, client: Callable[..., Any] = RPC, **options: Any) -> Any:
            return stack.enter_context(sync_client_for(server, client, **options))

        yield connect
