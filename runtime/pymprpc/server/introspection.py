"""The `system.*` methods of docs/protocol.md, bound to one server through a narrow view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import NotFindError, RequestError, quoted
from ..services import LIST_SERVICES, ServiceInfo
from .health import Health
from .kept_results import KeptResults, current_scope
from .registry import Method


class ServerView(Protocol):
    """What introspection reads of a server, and nothing else."""

    @property
    def kept(self) -> KeptResults: ...

    def method_names(self) -> list[str]: ...

    def method(self, name: str) -> Method | None: ...

    def services(self) -> list[ServiceInfo]: ...

    def connection_count(self) -> int: ...

    def running_calls(self) -> int: ...


def system_methods(server: ServerView) -> dict[str, Callable[..., Any]]:
    """name -> coroutine function, for registration on `server`."""

    def lookup(name: str) -> Method:
        method = server.method(name) if isinstance(name, str) else None
        if method is None:
            raise NotFindError(f"no method named {quoted(name)}")
        return method

    async def listMethods() -> list[str]:  # noqa: N802 - protocol name
        """Names of every method this server offers."""
        return server.method_names()

    async def methodSignature(name: str) -> str:  # noqa: N802
        """The signature of method `name`."""
        return str(lookup(name).signature_text)

    async def methodHelp(name: str) -> str:  # noqa: N802
        """The documentation of method `name`."""
        return str(lookup(name).doc)

    async def listServices() -> list[dict[str, Any]]:  # noqa: N802
        """The services this server serves: per service, a map of its name, version (nil
        if none is declared), prefix, method names (without the prefix) and doc."""
        return [info.to_wire() for info in server.services()]

    async def lenConnections() -> int:  # noqa: N802
        """Number of open client connections."""
        return server.connection_count()

    async def lenUndoneTasks() -> int:  # noqa: N802
        """Number of calls currently running on the server, this one included."""
        return server.running_calls()

    return {
        "system.listMethods": listMethods,
        "system.methodSignature": methodSignature,
        "system.methodHelp": methodHelp,
        LIST_SERVICES: listServices,
        "system.lenConnections": lenConnections,
        "system.lenUndoneTasks": lenUndoneTasks,
    }


def getresult_method(server: ServerView) -> Callable[..., Any]:
    async def getresult(ID: str) -> Any:  # noqa: N803 - protocol name
        """The kept outcome of a RETURN-false call made by the same account (or, when
        anonymous, on the same connection); a kept stream is streamed."""
        return await server.kept.fetch(current_scope.get(), ID)

    return getresult


def health_method(health: Health) -> Callable[..., Any]:
    """`system.health(service="")`: "SERVING", "NOT_SERVING" or "UNKNOWN" (a name never
    set); answered even while the server drains, when it is "NOT_SERVING"."""

    async def health_check(service: str = "") -> str:
        """The health of `service` ("" for the server as a whole): SERVING, NOT_SERVING
        or UNKNOWN."""
        if not isinstance(service, str):
            raise RequestError(f"service must be a string, got {type(service).__name__}")
        return str(health.get(service))

    return health_check
