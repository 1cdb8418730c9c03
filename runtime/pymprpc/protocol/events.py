"""Events: what a connection hands its I/O shell after parsing incoming messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MPRPCError
from .constants import Compression, Feature

# -- received by a server ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The client's credentials were accepted and the welcome reply is queued."""

    username: str | None
    features: frozenset[Feature]


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A call to run. `returns=False` means keep the outcome for `system.getresult`;
    `oneway` (feature `oneway`) that the outcome is neither sent nor kept."""

    id: str
    method: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    returns: bool = True
    deadline: float | None = None
    metadata: dict[str, str] | None = None  # feature `metadata`; None when absent
    oneway: bool = False
    # The call's frame size in bytes: set only on a connection that measures sizes
    # (`ServerConnection.measure_sizes`); unset (AttributeError) otherwise, so a call
    # costs nothing for it.
    size: int = field(init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """The client no longer wants the outcome of call `id` (feature `cancel`)."""

    id: str


ServerEvent = Authenticated | CallRequest | CancelRequest

# -- received by a client ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's 100 reply: what the connection now runs with."""

    version: str | None
    description: str | None
    debug: bool
    compression: Compression | None
    idle_timeout: float | None
    features: frozenset[Feature]


@dataclass(frozen=True, slots=True)
class Pong:
    """Heartbeat answer (101)."""


@dataclass(frozen=True, slots=True)
class Result:
    """A call's value (200, or 300 when the method is deprecated)."""

    id: str
    value: Any
    deprecated: bool = False
    metadata: dict[str, str] | None = None  # response metadata (feature `metadata`)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A stream begins (201, or 301 when deprecated)."""

    id: str
    deprecated: bool = False
    metadata: dict[str, str] | None = None  # response metadata (feature `metadata`)


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a stream (202)."""

    id: str
    value: Any


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """A stream finished normally (206)."""

    id: str


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Call `id` failed; `error` is the exception to raise to the caller."""

    id: str
    error: MPRPCError


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The whole connection failed (5xx, login failure, protocol violation)."""

    error: MPRPCError


ClientEvent = (
    Welcome | Pong | Result | StreamStart | StreamItem | StreamEnd | CallFailed | ConnectionFailed
)
