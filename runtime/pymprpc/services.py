"""The services a server hosts, as `system.listServices()` describes them, for both ends.

A server keeps one `ServiceInfo` per service it serves (`Server.register_service`, which
the `register_<service>()` functions mprpcgen generates call): its name, the version its
interface file declares, the prefix it is served under and its methods. Clients read the
table with `list_services(client)`, or find their own service with `service_info(client)`:

    with CalculatorClient(url) as client:
        info = service_info(client)  # await it with an async client
        if info is None or info.version != client.VERSION: ...

Both need a server that registered its introspection methods
(`Server.register_introspection_functions()`); others answer `406`
(`UnsupportSysMethodError`), as for any unknown `system.*` method, and pymprpc 0.0.3's
server `401`, which these functions raise as `UnsupportSysMethodError` too.

On the wire each service is a map. Later versions add keys to it (method signatures, for
instance): readers ignore keys they do not know, as `ServiceInfo.from_wire` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from .errors import NotFindError, UnsupportSysMethodError, ValidationError

if TYPE_CHECKING:
    from .client.async_client import AsyncRPC
    from .client.sync_client import RPC
    from .client.typed import AsyncTypedClient, TypedClient

__all__ = [
    "INTROSPECTION_METHODS",
    "LIST_SERVICES",
    "ServiceInfo",
    "find_service",
    "list_services",
    "service_info",
]

LIST_SERVICES = "system.listServices"
# What `Server.register_introspection_functions()` registers.
INTROSPECTION_METHODS = frozenset(
    {
        "system.listMethods",
        "system.methodSignature",
        "system.methodHelp",
        LIST_SERVICES,
        "system.lenConnections",
        "system.lenUndoneTasks",
    }
)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One service a server serves: an entry of `system.listServices()`.

    Attributes:
        name: the service's name (`service Calculator` in an interface file).
        version: the version its interface file declares (`version "1.2.0"`), or None.
        prefix: what its method names are prefixed with on this server ("" for none): a
            service may be served several times, under different prefixes.
        methods: its method names as called, without the prefix.
        doc: what the service is for (the interface file's doc comment), or "".
    """

    name: str
    version: str | None = None
    prefix: str = ""
    methods: tuple[str, ...] = ()
    doc: str = ""

    @property
    def wire_names(self) -> tuple[str, ...]:
        """The names a client calls: `prefix + method` for each method."""
        return tuple(self.prefix + method for method in self.methods)

    def to_wire(self) -> dict[str, Any]:
        """The map `system.listServices()` sends for this service."""
        return {
            "name": self.name,
            "version": self.version,
            "prefix": self.prefix,
            "methods": list(self.methods),
            "doc": self.doc,
        }

    @classmethod
    def from_wire(cls, value: Any, where: str = LIST_SERVICES) -> ServiceInfo:
        """The `ServiceInfo` a `system.listServices()` map describes; keys this version
        does not know are ignored (a newer server may send more).

        Raises:
            ValidationError: `value` is not such a map (`where` names it in the message).
        """
        if not isinstance(value, dict):
            raise ValidationError(where, f"expected a map, got {type(value).__name__}")
        name = _field(value, "name", str, where)
        version = value.get("version")
        if version is not None and not isinstance(version, str):
            raise ValidationError(
                f"{where}.version", f"expected a string or nil, got {type(version).__name__}"
            )
        methods = value.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ValidationError(f"{where}.methods", "expected a list of strings")
        return cls(
            name=name,
            version=version,
            prefix=_field(value, "prefix", str, where, ""),
            methods=tuple(methods),
            doc=_field(value, "doc", str, where, ""),
        )


_REQUIRED: Any = object()


def _field(
    value: dict[Any, Any], key: str, kind: type, where: str, default: Any = _REQUIRED
) -> Any:
    if key not in value:
        if default is _REQUIRED:
            raise ValidationError(where, f"missing key {key!r}")
        return default
    item = value[key]
    if not isinstance(item, kind):
        raise ValidationError(
            f"{where}.{key}", f"expected {kind.__name__}, got {type(item).__name__}"
        )
    return item


def parse_services(reply: Any) -> list[ServiceInfo]:
    """The entries of a `system.listServices()` reply.

    Raises:
        ValidationError: the reply is not a list of service maps.
    """
    if not isinstance(reply, list):
        raise ValidationError(LIST_SERVICES, f"expected a list, got {type(reply).__name__}")
    return [ServiceInfo.from_wire(item, f"{LIST_SERVICES}[{i}]") for i, item in enumerate(reply)]


def find_service(
    services: Iterable[ServiceInfo], name: str, prefix: str = ""
) -> ServiceInfo | None:
    """The entry of service `name` served under `prefix`, or None if there is none."""
    for info in services:
        if info.name == name and info.prefix == prefix:
            return info
    return None


@overload
def list_services(client: RPC | TypedClient) -> list[ServiceInfo]: ...


@overload
def list_services(client: AsyncRPC | AsyncTypedClient) -> Awaitable[list[ServiceInfo]]: ...


def list_services(client: Any) -> Any:
    """Every service the server of `client` serves (`system.listServices()`).

    `client` is a blocking or asyncio client, untyped (`RPC`, `AsyncRPC`) or generated by
    mprpcgen (its `with_options` apply); with an asyncio client, await the result.

    Raises:
        UnsupportSysMethodError: the server did not register its introspection methods
            (406), or predates `system.listServices` (pymprpc 0.0.3's answers 401).
        ValidationError: the server's reply is not a list of service maps.
    """
    reply = _ask(client)
    if inspect.isawaitable(reply):
        return _parse_later(reply)
    return parse_services(reply)


@overload
def service_info(client: TypedClient) -> ServiceInfo | None: ...


@overload
def service_info(client: AsyncTypedClient) -> Awaitable[ServiceInfo | None]: ...


def service_info(client: Any) -> Any:
    """What the server says of the service a generated client calls, under the client's
    `prefix`: its `version` (compare it with the client's `VERSION`), methods and doc;
    None if the server does not serve that service there. With an asyncio client, await
    the result.

    Raises:
        TypeError: `client` is not a client generated by mprpcgen (0.1.0 or later).
        UnsupportSysMethodError: the server did not register its introspection methods.
        ValidationError: the server's reply is not a list of service maps.
    """
    name = getattr(type(client), "SERVICE", None)
    prefix = getattr(client, "_prefix", None)
    if not isinstance(name, str) or not isinstance(prefix, str):
        raise TypeError(
            f"service_info() needs a client generated by mprpcgen, got "
            f"{type(client).__name__}; use list_services() with other clients"
        )
    reply = _ask(client)
    if inspect.isawaitable(reply):
        return _find_later(reply, name, prefix)
    return find_service(parse_services(reply), name, prefix)


def _ask(client: Any) -> Any:
    from .client.typed import AsyncTypedClient, TypedClient  # the clients need not load here

    try:
        if isinstance(client, TypedClient | AsyncTypedClient):
            return client._call(LIST_SERVICES, [])  # through its options (`with_options`)
        return client.call(LIST_SERVICES)
    except NotFindError as exc:
        raise _not_offered(exc) from None


def _not_offered(exc: NotFindError) -> UnsupportSysMethodError:
    """What a server that does not know `system.listServices` at all (401: pymprpc 0.0.3,
    whose server answers any unknown name so) means for these functions: not offered."""
    return UnsupportSysMethodError(
        f"the server does not offer {LIST_SERVICES} (it answered 401, no such method): "
        "servers older than this protocol's services, pymprpc 0.0.3 among them, list none",
        id=exc.id,
    )


async def _reply(reply: Awaitable[Any]) -> Any:
    try:
        return await reply
    except NotFindError as exc:
        raise _not_offered(exc) from None


async def _parse_later(reply: Awaitable[Any]) -> list[ServiceInfo]:
    return parse_services(await _reply(reply))


async def _find_later(reply: Awaitable[Any], name: str, prefix: str) -> ServiceInfo | None:
    return find_service(parse_services(await _reply(reply)), name, prefix)
