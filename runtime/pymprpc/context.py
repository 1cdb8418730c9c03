"""The call a handler is serving: `current_call()` and the `CallContext` it returns.

The server sets the context before a handler's first line runs (coroutines, streams, and
plain functions on every executor: it is carried into threads and sent to worker
processes), so a handler can ask who is calling, what metadata came with the call and how
much time it has left, without changing its signature.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CallContext",
    "CallSource",
    "MessageSizes",
    "Metadata",
    "current_call",
    "current_call_or_none",
    "end_call",
    "reset_current",
    "run_in_call",
    "set_current",
]


class Metadata(Mapping[str, str]):
    """An immutable mapping of string keys to string values sent with a call or a reply.

    Built from a mapping or pairs; both keys and values must be `str` (a `TypeError` says
    which is not). `with_items(...)` gives a copy with keys added or replaced.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = dict(items)
        for key, value in pairs.items():
            if type(key) is not str or type(value) is not str:
                raise TypeError(
                    f"metadata keys and values must be str, got {key!r}: {value!r} "
                    f"({type(key).__name__}: {type(value).__name__})"
                )
        self._items: dict[str, str] = pairs

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Metadata({self._items!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Metadata, (self._items,))

    def with_items(self, items: Mapping[str, str]) -> Metadata:
        """A copy with `items` added (replacing keys already present)."""
        return Metadata({**self._items, **items})

    def to_dict(self) -> dict[str, str]:
        """A plain dict copy (what goes on the wire)."""
        return dict(self._items)


EMPTY_METADATA = Metadata()

_log = logging.getLogger(__name__)


class MessageSizes:
    """The sizes, in bytes on the wire, of one call's messages: the hook for metrics.

    Measuring costs nothing unless asked for: the server and the clients measure only
    when one of their interceptors has a true `message_sizes` attribute (as
    `pymprpc.otel`'s do). Then each call's context carries one of these as `sizes`
    (`CallContext.sizes`, `ClientCallContext.sizes`; otherwise None) and:

    - `request` is the size of the call message: known before a server interceptor runs;
      on a client, set when the call is sent (read it once `call_next` returned).
    - every listener added with `on_response` is called with the size of each reply
      message of the call as it is sent (server) or received (client): one for a
      unary call (its result or error), and for a stream its start, each item and its
      end (or error). A stream's replies come after its interceptors returned.

    A size is the whole frame as the connection carries it: the encoded message
    (compressed when compression was negotiated) and its framing (the `##PRO-END##`
    separator or the 4-byte length prefix). Calls that send no reply (RETURN false,
    oneway) report none.
    """

    __slots__ = ("_listeners", "request")

    def __init__(self, request: int = 0) -> None:
        self.request = request
        self._listeners: list[Callable[[int], None]] = []

    def on_response(self, listener: Callable[[int], None]) -> None:
        """Call `listener(size)` for each reply message of this call from now on."""
        self._listeners.append(listener)

    def responded(self, size: int) -> None:
        """Report one reply message of `size` bytes (the runtime calls this).

        A listener that raises is logged and skipped: it runs while the reply is being
        sent or read, where its exception would lose the reply (server) or the whole
        connection (client) for a metrics bug. A listener added by a listener hears
        the next reply, not this one ("from now on"; a listener adding one at every reply
        would otherwise never let this loop end).
        """
        for listener in tuple(self._listeners):
            try:
                listener(size)
            except Exception:  # noqa: BLE001 - any listener bug: log it, keep the call
                _log.exception("message-size listener %r raised; ignored", listener)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the server knows about one call.

    Attributes:
        id: the call's ID as the client sent it.
        method: the method name as called (the wire name).
        peer: the client's address, `(host, port)`, or None when unknown.
        user: the authenticated user name, or None for an anonymous connection.
        peer_certificate: the client's TLS certificate (`ssl.SSLSocket.getpeercert()`
            form) when the connection uses TLS with client certificates, else None.
        deadline: when the call must be finished, in `time.monotonic()` seconds, or None.
        metadata: string key/value pairs the client sent with the call (empty when the
            connection did not negotiate the `metadata` feature).
        returns: False for a `RETURN: false` (kept-result) call.
        streaming: True when the method is a stream (its outcome is an async iterator).
        sizes: the call's message sizes when an interceptor asked for them (see
            `MessageSizes`), else None.
    """

    id: str
    method: str
    peer: tuple[str, int] | None = None
    user: str | None = None
    peer_certificate: dict[str, Any] | None = None
    deadline: float | None = None
    metadata: Metadata = EMPTY_METADATA
    returns: bool = True
    streaming: bool = False
    sizes: MessageSizes | None = field(default=None, compare=False, repr=False)
    # Filled by the handler or interceptors; sent back when `metadata` was negotiated.
    response_metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # add_done_callback's, shared by every copy (`replace`, or dataclasses.replace, which
    # copies it as an argument of __init__, as it does response_metadata): the server
    # ends the context it built, which runs the callbacks added to any copy.
    _ending: CallEnding = field(default_factory=lambda: CallEnding(), compare=False, repr=False)

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (0.0 once passed), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def replace(self, **changes: Any) -> CallContext:
        """A copy with some fields changed (for interceptors; response metadata is shared)."""
        if "metadata" in changes and not isinstance(changes["metadata"], Metadata):
            changes["metadata"] = Metadata(changes["metadata"])
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "response_metadata", self.response_metadata)
        object.__setattr__(new, "_ending", self._ending)
        return new

    def add_done_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(error)` once, when the server is done with this call.

        `error` is None when what the call returned was sent (a stream: every item and
        its end) or kept (`RETURN: false`), or when the call owed no reply (oneway, or
        cancelled by its client after it returned). Else it is the error the call was
        answered with (kept, for `RETURN: false`, for its fetch; logged, for oneway), an
        `MPRPCError`: a handler's `ValueError` is answered with an `RPCRuntimeError`
        (404), and a value the connection cannot send or keep (not encodable as
        MessagePack, or too large) with a `ResultLimitError` (405), after the
        interceptors' `call_next` returned it. When nobody was left to answer (its client
        cancelled it or went away), it is the exception the call ended with
        (`CancelledError`). This is how an interceptor (an access log, a span) learns the
        code its client got: `pymprpc.interceptors.outcome_code(error, ctx=ctx)` gives it.

        For server interceptors and code on the server's own process: a function on the
        process pool runs with a copy of the context, whose callbacks never run (nor do
        they outside a server, unless you call `end_call`). A callback added once the call
        is done runs at once (with a copy of its error, without the traceback). A
        callback that raises is logged and ignored (the call is answered by then).
        """
        self._ending.add(callback)

    def set_response_metadata(self, key: str, value: str) -> None:
        """Send `key: value` back with the reply (ignored by peers without `metadata`).

        A stream's response metadata leaves with its start, before an async generator's
        body runs: set it from an interceptor, or before returning the stream.

        Raises:
            TypeError: `key` or `value` is not a str.
        """
        if type(key) is not str or type(value) is not str:
            raise TypeError("response metadata keys and values must be str")
        self.response_metadata[key] = value


class CallEnding:
    """The callbacks `CallContext.add_done_callback` added, run once by `end`; one added
    later runs at once, with the outcome kept (see `untraced`)."""

    __slots__ = ("_callbacks", "_done", "_followers", "_outcome")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[BaseException | None], None]] | None = None
        self._done = False
        self._outcome: BaseException | None = None
        self._followers: list[CallEnding] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # A context pickled for another process (a user's process pool) or copied gets
        # callbacks of its own: these run in the server, and may not pickle.
        return (CallEnding, ())

    def add(self, callback: Callable[[BaseException | None], None]) -> None:
        if self._done:
            _run_callback(callback, self._outcome)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def follow(self, other: CallEnding) -> None:
        """End `other` too when this ends (a context an interceptor built afresh for the
        same call): once, however often it is passed on."""
        if other is self:
            return
        followers = self._followers
        if followers is None:
            followers = self._followers = []
        elif any(f is other for f in followers):
            return
        followers.append(other)
        if self._done:
            other.end(self._outcome)

    def end(self, error: BaseException | None) -> None:
        """Run the callbacks with the call's outcome (the server calls this, once)."""
        if self._done:
            return
        self._done = True
        self._outcome = untraced(error)
        # Dropped before they run: a callback that holds the context (most do) would
        # otherwise keep it and itself alive in a cycle through this list.
        callbacks, self._callbacks = self._callbacks, None
        while callbacks:
            _run_callback(callbacks.pop(0), error)
        followers, self._followers = self._followers, None
        for follower in followers or ():
            follower.end(error)


def _run_callback(callback: Callable[[BaseException | None], None], error: Any) -> None:
    try:
        callback(error)
    except Exception:  # noqa: BLE001 - a callback's bug must not undo the reply
        _log.exception("call done callback %r raised; ignored", callback)


def untraced(error: BaseException | None) -> BaseException | None:
    """`error`, or a copy of it without its traceback (kept after a call ended: the
    traceback's frames hold the call's context, which holds this, a reference cycle that
    would keep them all until a full garbage collection)."""
    if error is None or error.__traceback__ is None:
        return error
    try:
        copied = copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception class that does not copy
        copied = None
    if copied is None or copied.__traceback__ is not None or type(copied) is not type(error):
        return RuntimeError(f"the call ended with {type(error).__name__}")
    return copied


def end_call(ctx: CallContext | None, error: BaseException | None) -> None:
    """Run `ctx`'s done callbacks (see `CallContext.add_done_callback`) with `error`,
    once (later calls do nothing).

    The server does this when it is done with a call. Call it yourself to drive
    interceptors outside a server (a chain built with `pymprpc.interceptors.compose` in
    a unit test): `AccessLog`, for one, records a call only when its context ends.
    """
    if ctx is not None:
        ctx._ending.end(error)  # the server's side of add_done_callback


# What the server sets instead of a `CallContext` when no interceptor needs the context
# up front: a function building it (once; later calls return the same object), so a call
# whose handler never asks costs one partial and one context-variable store.
CallSource = Callable[[], CallContext]


_current: contextvars.ContextVar[CallContext | CallSource | None] = contextvars.ContextVar(
    "pymprpc_current_call", default=None
)


def current_call() -> CallContext:
    """The context of the call being served.

    Raises:
        LookupError: when called outside a call handler (or an interceptor).
    """
    value = _current.get()
    if type(value) is CallContext:
        return value
    if value is None:
        raise LookupError(
            "pymprpc.current_call() is only available while serving a call "
            "(inside a registered handler or a server interceptor)"
        )
    return value()  # type: ignore[operator]


def set_current(
    ctx: CallContext | CallSource | None,
) -> contextvars.Token[CallContext | CallSource | None]:
    """Make `ctx` the current call in this context (the server's dispatcher does this)."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[CallContext | CallSource | None]) -> None:
    """Undo a `set_current`."""
    _current.reset(token)


def current_call_source() -> CallContext | CallSource | None:
    """What the server set for the current call, without building anything: its
    context, a function building it on first use, or None outside a call."""
    return _current.get()


def current_call_or_none() -> CallContext | None:
    """The current call's context, or None outside a call (built if still lazy)."""
    value = _current.get()
    if value is None or type(value) is CallContext:
        return value
    return value()  # type: ignore[operator]


def run_in_call(
    ctx: CallContext | None, func: Callable[..., Any], args: Any, kwargs: Any
) -> tuple[Any, dict[str, str]]:
    """Run `func(*args, **kwargs)` with `ctx` as the current call, in another process.

    The hook for process pools: the parent sends the pickled `ctx` with the call, the
    worker runs the function through this, and sends back the response metadata the
    function set, which the parent adds to its own `ctx.response_metadata`.

    Returns:
        The function's value and the response metadata it set.
    """
    token = _current.set(ctx)
    try:
        value = func(*args, **kwargs)
    finally:
        _current.reset(token)
    return value, (dict(ctx.response_metadata) if ctx is not None else {})
