"""Every exception pymprpc raises, and the one table mapping them to protocol codes.

`MPRPCError` is the root. Call errors (4xx) fail one call; server errors (5xx) concern the
whole connection. Classes carrying a `code` map 1:1 to the codes of docs/protocol.md;
`ConnectionLostError`, `LocalProtocolError`, `RemoteProtocolError` and `ValidationError`
are local conditions with no wire code (a server answers a `ValidationError` in its
arguments with 402, and a `RemoteProtocolError` with the 505/506 it names).

As in h11, a protocol violation is either *local* (`LocalProtocolError`: we were about to
send something the protocol forbids) or *remote* (`RemoteProtocolError`: the peer sent
bytes that break it). `ProtocolException` / `ProtocolSyntaxException` are what a server
*reported* (505/506 on the wire). `RemoteProtocolError` is a `ProtocolException` too, so
`except ProtocolException` catches every protocol failure of a connection, reported or
detected; `except RemoteProtocolError` only the peer's garbage.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, ClassVar

from .codes import Code

__all__ = [
    "MPRPCError",
    "CallError",
    "RequestError",
    "NotFindError",
    "ParamError",
    "RestrictAccessError",
    "RPCRuntimeError",
    "ResultLimitError",
    "UnsupportSysMethodError",
    "CancelledError",
    "DeadlineExceeded",
    "ServerError",
    "RpcException",
    "LoginError",
    "RequirementException",
    "RpcUnavailableException",
    "TimeoutException",
    "ProtocolException",
    "ProtocolSyntaxException",
    "ConnectionLostError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ValidationError",
    "ExpireWarning",
    "ExpireStreamWarning",
    "ERRORS_BY_CODE",
    "error_for_code",
    # modern names (aliases of the 0.0.3 names above, which keep working)
    "NotFoundError",
    "AccessDeniedError",
    "RemoteError",
    "UnsupportedSystemMethodError",
    "CallCancelled",
    "InternalServerError",
    "DependencyError",
    "UnavailableError",
    "IdleTimeoutError",
    "ProtocolError",
    "ProtocolSyntaxError",
    "DeprecatedMethodWarning",
    "DeprecatedStreamWarning",
]


class MPRPCError(Exception):
    """Root of pymprpc's exceptions.

    `message` is the human text, `exception` the remote exception type name (when the
    server reported one), `id` the call it concerns and `data` the optional DATA map.
    """

    code: ClassVar[Code | None] = None

    def __init__(
        self,
        message: str = "",
        *,
        exception: str | None = None,
        id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exception = exception
        self.id = id
        self.data = data

    @property
    def remote_traceback(self) -> str | None:
        """The server's traceback, sent only when the server runs in debug mode."""
        frame = (self.data or {}).get("FRAME")
        return frame if isinstance(frame, str) else None

    def __str__(self) -> str:
        if self.exception and self.exception != type(self).__name__:
            # The remote exception's name, then its message (a bare `raise ValueError()`
            # reads "ValueError", not "ValueError: RPCRuntimeError").
            return f"{self.exception}: {self.message}" if self.message else self.exception
        return self.message or self.__class__.__name__


# -- call errors (4xx): one call fails, the connection lives on -----------------------


class CallError(MPRPCError):
    """A single call failed (4xx)."""


class RequestError(CallError):
    """400: malformed request, duplicate in-flight ID, or unknown/expired result ID."""

    code = Code.REQUEST_ERROR


class NotFindError(CallError):
    """401: the server has no method of that name."""

    code = Code.NOT_FOUND


class ParamError(CallError):
    """402: the arguments do not match the method's signature."""

    code = Code.PARAM_ERROR


class RestrictAccessError(CallError):
    """403: the method is not allowed for this client."""

    code = Code.RESTRICT_ACCESS


class RPCRuntimeError(CallError):
    """404: the method raised; `exception` names the remote exception type."""

    code = Code.RUNTIME_ERROR


class ResultLimitError(CallError):
    """405: the result is too large, or cannot be delivered in this framing/encoding."""

    code = Code.RESULT_LIMIT


class UnsupportSysMethodError(CallError):
    """406: unknown `system.*` method."""

    code = Code.UNSUPPORTED_SYS_METHOD


class CancelledError(CallError):
    """407: the server cancelled the call (e.g. it is shutting down)."""

    code = Code.CANCELLED


class DeadlineExceeded(CallError, TimeoutError):
    """408: the call's deadline passed before it finished."""

    code = Code.DEADLINE_EXCEEDED


# How the server's 408 for a call's own deadline (the client's) begins: a client reading
# it knows the deadline was its own, not one a handler raised (a call of its own to
# another service that timed out), whose words it keeps.
SERVER_DEADLINE_TEXT = "deadline of "


# -- server errors (5xx): the whole connection is concerned ------------------------


class ServerError(MPRPCError):
    """The server reported a connection-level failure (5xx)."""


class RpcException(ServerError):
    """500: internal server error."""

    code = Code.SERVER_ERROR


class LoginError(ServerError):
    """501: authentication failed (wrong credentials, or a call before auth)."""

    code = Code.LOGIN_ERROR


class RequirementException(ServerError):
    """502: a service the server depends on failed."""

    code = Code.REQUIREMENT_ERROR


class RpcUnavailableException(ServerError):
    """503: the server is unavailable (shutting down, maintenance, overloaded)."""

    code = Code.UNAVAILABLE


class TimeoutException(ServerError, TimeoutError):
    """504: the server closed the connection after it was idle too long."""

    code = Code.IDLE_TIMEOUT


class ProtocolException(ServerError):
    """505: protocol error (bad version, bad frame, oversized message).

    Also the base of `RemoteProtocolError` (the server sent garbage, detected here)."""

    code: ClassVar[Code | None] = Code.PROTOCOL_ERROR


class ProtocolSyntaxException(ProtocolException):
    """506: the message is not a valid protocol message."""

    code = Code.PROTOCOL_SYNTAX_ERROR


# -- local conditions (no wire code) -----------------------------------------------


class ConnectionLostError(MPRPCError, ConnectionError):
    """The connection dropped (or was never made) while calls were pending."""


class ValidationError(MPRPCError, ValueError):
    """A value does not match its declared (IDL) type; `path` says where.

    Raised by `pymprpc.schema`; a server answers it with 402 (ParamError).
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        # Built from (path, problem), not from its message: copy.copy (a server's error
        # reply for a typed result that does not fit) and pickle need these.
        return (type(self), (self.path, self.problem), self.__dict__)


class LocalProtocolError(MPRPCError, ValueError):
    """We were about to violate the protocol (e.g. a payload containing the separator)."""


class RemoteProtocolError(ProtocolException):
    """The peer sent bytes that violate the protocol (bad frame, payload, message, or
    a reply out of order).

    `reply_code` is what a server answers before closing: 506 (`PROTOCOL_SYNTAX_ERROR`)
    for a message it cannot parse, 505 (`PROTOCOL_ERROR`) for a bad version, framing or
    size. A client raises it as is: the server did not report anything, it misbehaved.
    A `ProtocolException` (so `except ProtocolException` catches garbage from a server,
    as the 0.0.3 documentation promised) without a wire code of its own (`code` is None).
    """

    code = None  # detected here, not reported: `reply_code` is what a server answers

    def __init__(self, message: str, *, syntax: bool = True) -> None:
        super().__init__(message)
        self.reply_code: Code = Code.PROTOCOL_SYNTAX_ERROR if syntax else Code.PROTOCOL_ERROR


# -- warnings (3xx) ----------------------------------------------------------------


class ExpireWarning(UserWarning):
    """300: the method is deprecated; its result still follows."""

    code: ClassVar[Code] = Code.EXPIRE_RESULT


class ExpireStreamWarning(ExpireWarning):
    """301: the stream method is deprecated; its stream still follows."""

    code: ClassVar[Code] = Code.EXPIRE_STREAM_START


# -- modern names ------------------------------------------------------------------
# Aliases, not subclasses: `except NotFoundError` catches what a 0.0.3-style
# `except NotFindError` catches and the reverse, and the wire mapping stays 1:1.
# Where the legacy name misleads: `CancelledError` is not asyncio's, `TimeoutException`
# is the server's idle close (a call's deadline is `DeadlineExceeded`), `RPCRuntimeError`
# is an exception raised by the remote method.

NotFoundError = NotFindError  # 401
AccessDeniedError = RestrictAccessError  # 403
RemoteError = RPCRuntimeError  # 404
UnsupportedSystemMethodError = UnsupportSysMethodError  # 406
CallCancelled = CancelledError  # 407
InternalServerError = RpcException  # 500
DependencyError = RequirementException  # 502
UnavailableError = RpcUnavailableException  # 503
IdleTimeoutError = TimeoutException  # 504
ProtocolError = ProtocolException  # 505
ProtocolSyntaxError = ProtocolSyntaxException  # 506
DeprecatedMethodWarning = ExpireWarning  # 300
DeprecatedStreamWarning = ExpireStreamWarning  # 301


ERRORS_BY_CODE: dict[int, type[MPRPCError]] = {
    int(cls.code): cls
    for cls in (
        RequestError,
        NotFindError,
        ParamError,
        RestrictAccessError,
        RPCRuntimeError,
        ResultLimitError,
        UnsupportSysMethodError,
        CancelledError,
        DeadlineExceeded,
        RpcException,
        LoginError,
        RequirementException,
        RpcUnavailableException,
        TimeoutException,
        ProtocolException,
        ProtocolSyntaxException,
    )
    if cls.code is not None
}

_DEFAULT_TEXT: dict[int, str] = {
    Code.SERVER_ERROR: "the server failed",
    Code.LOGIN_ERROR: "authentication failed: check the user name and password in the address",
    Code.REQUIREMENT_ERROR: "a service the server depends on failed",
    Code.UNAVAILABLE: "the server is unavailable (shutting down or overloaded)",
    Code.IDLE_TIMEOUT: "the server closed the idle connection (enable heart_beat to keep it open)",
    Code.PROTOCOL_ERROR: "the server reported a protocol error and closed the connection",
    Code.PROTOCOL_SYNTAX_ERROR: "the server could not parse our message and closed the connection",
}


def error_for_code(
    code: int,
    message: str = "",
    *,
    exception: str | None = None,
    id: str | None = None,
    data: dict[str, Any] | None = None,
) -> MPRPCError:
    """Build the exception for a wire error code (unknown codes become RpcException)."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        cls = CallError if 400 <= code < 500 else RpcException
        message = message or f"unknown error code {code}"
    return cls(message or _DEFAULT_TEXT.get(code, ""), exception=exception, id=id, data=data)


def exception_text(exc: BaseException) -> str:
    """`str(exc)`, or a description of `exc` when its `__str__` itself raises (a custom
    `__str__` reading an attribute that was never set): turning a handler's failure into
    a reply must not fail in turn, or the call would never be answered."""
    return text_of(exc)


def printable(text: str, limit: int = 256) -> str:
    """`text` as a log line may show it: unchanged when it is printable and at most
    `limit` characters; otherwise escaped as `repr` escapes it (line breaks and other
    control characters included, so a peer's call ID or method name cannot forge a log
    line) and cut to `limit` characters, its length said."""
    if len(text) <= limit and text.isprintable():
        return text
    shown = repr(text[:limit])[1:-1]
    if len(text) > limit:
        shown += f"... ({len(text)} characters)"
    return shown


def quoted(text: str, limit: int = 256) -> str:
    """`repr(text)` for a message, cut after `limit` characters (its length said): a peer's
    50,000-character method name is not echoed whole into replies and logs."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def text_of(value: object, render: Callable[[object], str] = str) -> str:
    """`render(value)` (`str` or `repr`), or a description of `value` naming its type
    when that raises: for text made from user objects on a path that must not fail."""
    try:
        return render(value)
    except Exception as err:  # noqa: BLE001 - any failure of user code
        how = "repr" if render is repr else "str"
        return f"<{type_name(value)} object: its {how}() raised {type_name(err)}>"


_TYPE_NAME = type.__dict__["__name__"]
_TYPE_QUALNAME = type.__dict__["__qualname__"]
_TYPE_MODULE = type.__dict__["__module__"]


def type_name(value: object, attribute: str = "__name__") -> str:
    """The name of `value`'s class (`attribute`: `__name__`, `__qualname__` or
    `__module__`), read through `type`'s own descriptors: a metaclass may replace those
    attributes with properties that raise or return something else, and naming a
    failure must not fail ("?" when even that finds nothing: a class without a module)."""
    descriptor = {"__name__": _TYPE_NAME, "__qualname__": _TYPE_QUALNAME}.get(attribute)
    try:
        name = (descriptor or _TYPE_MODULE).__get__(type(value), type)
    except Exception:  # noqa: BLE001 - e.g. a class made without a __module__
        return "?"
    if issubclass(type(name), str):  # (not isinstance: that asks the object's __class__)
        # An exact copy: a str subclass set as a name may override its own methods.
        return str.__str__(name)
    try:
        return repr(name)  # (a module may be anything a class body set)
    except Exception:  # noqa: BLE001 - any failure of user code
        return "?"


def traceback_text(exc: BaseException) -> str:
    """`exc`'s traceback as `traceback.format_exception` writes it; if that fails (the
    exception's class, or one it is chained to, cannot be named: see `type_name`), its
    frames, then a last line made from what can be read."""
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - user code ran while formatting
        try:
            frames = "".join(traceback.format_tb(exc.__traceback__))
        except Exception:  # noqa: BLE001 - as above
            frames = ""
        head = "Traceback (most recent call last):\n" if frames else ""
        return f"{head}{frames}{type_name(exc, '__qualname__')}: {exception_text(exc)}\n"
