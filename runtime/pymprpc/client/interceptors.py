"""Client interceptors: middleware around every outgoing call, for both clients.

A client interceptor is called as `interceptor(ctx, call_next)` with a `ClientCallContext`
and returns what `call_next(ctx)` returns (the call's value, or its stream). With
`AsyncRPC` it is `async def` and awaits `call_next(ctx)`; with `RPC` it is a plain
function. It may send other metadata (`call_next(ctx.replace(metadata=...))`), refuse the
call by raising, time it, and see its outcome and its response metadata
(`ctx.response_metadata`, filled once `call_next` returned). Interceptors run in the
order given: the first is outermost.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..address import Address
from ..context import EMPTY_METADATA, MessageSizes, Metadata
from ..options import check_seconds

__all__ = ["ClientCallContext", "ClientInterceptor", "compose_client"]

ClientCallNext = Callable[["ClientCallContext"], Any]
# `async def (ctx, call_next)` for AsyncRPC, `def (ctx, call_next)` for RPC.
ClientInterceptor = Callable[["ClientCallContext", ClientCallNext], Any]


@dataclass(frozen=True, slots=True)
class ClientCallContext:
    """One outgoing call, as client interceptors see it.

    Attributes:
        method: the remote method's name.
        args: positional arguments.
        kwargs: keyword arguments.
        timeout: the call's deadline in seconds, or None.
        metadata: string pairs sent with the call (when the server negotiated
            `metadata`; otherwise they are not sent).
        address: the server's address.
        response_metadata: what the server sent back with the reply (filled when the call
            returns; shared by every copy `replace` makes).
        sizes: the call's message sizes when an interceptor asked for them (an
            interceptor with a true `message_sizes` attribute; see
            `pymprpc.context.MessageSizes`), else None.
        kind: "call" (a reply is awaited), "delay" (`delay()`: RETURN false, the call's
            ID comes back for `system.getresult`) or "notify" (`notify()`: oneway,
            nothing comes back and no reply size is ever reported).
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    metadata: Metadata = EMPTY_METADATA
    address: Address | None = None
    sizes: MessageSizes | None = field(default=None, compare=False, repr=False)
    response_metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    kind: str = "call"

    @property
    def peer(self) -> tuple[str, int] | None:
        """The server's `(host, port)`."""
        if self.address is None:
            return None
        return self.address.host, self.address.port

    def replace(self, **changes: Any) -> ClientCallContext:
        """A copy with some fields changed (response metadata stays shared).

        Raises:
            TypeError, ValueError: a `timeout` that is not None or a finite number of
                seconds.
        """
        if "timeout" in changes:
            check_seconds("timeout", changes["timeout"], none=True, negative=True)
        if "metadata" in changes and not isinstance(changes["metadata"], Metadata):
            changes["metadata"] = Metadata(changes["metadata"])
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "response_metadata", self.response_metadata)
        return new


def compose_client(
    interceptors: Sequence[ClientInterceptor], terminal: ClientCallNext
) -> ClientCallNext:
    """`terminal` wrapped by `interceptors`, the first outermost (sync or async alike:
    each step returns what its interceptor returns, a value or an awaitable)."""
    call = terminal
    for interceptor in reversed(interceptors):
        call = functools.partial(_step, interceptor, call)
    return call


def _step(interceptor: ClientInterceptor, call_next: ClientCallNext, ctx: ClientCallContext) -> Any:
    return interceptor(ctx, call_next)


def as_metadata(metadata: Mapping[str, str] | None) -> Metadata:
    """`metadata` as `Metadata` (TypeError naming a key or value that is not a str)."""
    if metadata is None:
        return EMPTY_METADATA
    return metadata if isinstance(metadata, Metadata) else Metadata(metadata)
