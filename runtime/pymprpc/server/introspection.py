"""The `system.*` methods of docs/protocol.md, bound to one server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NotFindError

if TYPE_CHECKING:
    from .server import Server


def system_methods(server: Server) -> dict[str, Callable[..., Any]]:
    """name -> coroutine function, for registration on `server`."""

    def lookup(name: str) -> Any:
        method = server.registry.get(name) if isinstance(name, str) else None
        if method is None:
            raise NotFindError(f"no method named {name!r}")
        return method

    async def listMethods() -> list[str]:  # noqa: N802 - protocol name
        """Names of every method this server offers."""
        return server.registry.names()

    async def methodSignature(name: str) -> str:  # noqa: N802
        """The signature of method `name`."""
        return str(lookup(name).signature_text)

    async def methodHelp(name: str) -> str:  # noqa: N802
        """The documentation of method `name`."""
        return str(lookup(name).doc)

    async def lenConnections() -> int:  # noqa: N802
        """Number of open client connections."""
        return len(server.handlers)

    async def lenUndoneTasks() -> int:  # noqa: N802
        """Number of calls currently running on the server, this one included."""
        # A call is registered only once its eager first step suspends: not yet, here.
        return len(server.tasks) + (asyncio.current_task() not in server.tasks)

    return {
        "system.listMethods": listMethods,
        "system.methodSignature": methodSignature,
        "system.methodHelp": methodHelp,
        "system.lenConnections": lenConnections,
        "system.lenUndoneTasks": lenUndoneTasks,
    }


def getresult_method(server: Server) -> Callable[..., Any]:
    async def getresult(ID: str) -> Any:  # noqa: N803 - protocol name
        """The kept outcome of a RETURN-false call (a stream is streamed)."""
        return await server.kept.fetch(ID)

    return getresult
