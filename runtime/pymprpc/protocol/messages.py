"""Building protocol maps and validating received ones.

Builders return plain dicts in wire layout; parsers take a decoded value and return an
event, or raise `RemoteProtocolError` saying what is wrong with it (its `reply_code` is
the 505/506 a server answers).
"""

from __future__ import annotations

import math
from typing import Any, Final

from ..errors import MPRPCError, RemoteProtocolError, RequestError, error_for_code
from .constants import (
    MAX_METADATA_BYTES,
    MAX_METADATA_PAIRS,
    PING,
    PONG,
    VERSION,
    Code,
    Compression,
    Feature,
    Key,
    shared_features,
)
from .events import (
    CallFailed,
    CallRequest,
    ClientEvent,
    ConnectionFailed,
    Pong,
    Result,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)

# Codes of the per-call path as plain ints: reading an IntEnum member costs more than
# packing a small map, and these are read for every message.
_RESULT: Final = int(Code.RESULT)
_EXPIRE_RESULT: Final = int(Code.EXPIRE_RESULT)
_STREAM_START: Final = int(Code.STREAM_START)
_EXPIRE_STREAM_START: Final = int(Code.EXPIRE_STREAM_START)
_STREAM_ITEM: Final = int(Code.STREAM_ITEM)
_STREAM_END: Final = int(Code.STREAM_END)
_WELCOME: Final = int(Code.WELCOME)
_PONG: Final = int(Code.PONG)


def describe(value: Any) -> str:
    """A short description of a received value for an error message: its repr if small,
    else its type (the repr of a hostile 16 MiB value is not built)."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:40]
    if isinstance(value, str | bytes) and len(value) <= 40:
        return repr(value)
    return f"a {type(value).__name__}"


# -- builders ----------------------------------------------------------------------


def auth_request(
    username: str | None, password: str | None, features: frozenset[Feature]
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        Key.MPRPC: VERSION,
        Key.AUTH: {Key.USERNAME: username, Key.PASSWORD: password},
    }
    if features:
        # Old servers ignore unknown keys; without features we look exactly like 0.0.3.
        msg[Key.FEATURES] = sorted(features)
    return msg


def welcome(
    *,
    version: str | None,
    description: str | None,
    debug: bool,
    compression: Compression | None,
    idle_timeout: float | None,
    features: frozenset[Feature] | None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        Key.MPRPC: VERSION,
        Key.CODE: Code.WELCOME.value,
        Key.VERSION: version,
        Key.DESC: description,
        Key.DEBUG: debug,
        Key.COMPRESER: compression.value if compression else None,
        Key.TIMEOUT: idle_timeout,
    }
    if features is not None:
        msg[Key.FEATURES] = sorted(features)
    return msg


def ping() -> dict[str, Any]:
    return {Key.MPRPC: VERSION, Key.HEARTBEAT: PING}


def pong() -> dict[str, Any]:
    return {Key.MPRPC: VERSION, Key.CODE: Code.PONG.value, Key.HEARTBEAT: PONG}


def call(
    id: str,
    method: str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    returns: bool,
    deadline: float | None,
    metadata: dict[str, str] | None = None,
    oneway: bool = False,
    explicit_return: bool = False,
) -> dict[str, Any]:
    """A call map. `explicit_return`: carry `RETURN: true` too (the default it states),
    for a peer that negotiated nothing: pymprpc 0.0.3's server answers a call only when
    its RETURN is true, and never when it is missing."""
    msg: dict[str, Any] = {Key.MPRPC: VERSION, Key.ID: id, Key.METHOD: method}
    if oneway:
        msg[Key.ONEWAY] = True  # feature `oneway`: nothing is sent back, nothing kept
    elif not returns or explicit_return:
        msg[Key.RETURN] = returns
    if args:
        msg[Key.ARGS] = list(args)
    if kwargs:
        msg[Key.KWARGS] = kwargs
    if deadline is not None:
        msg[Key.DEADLINE] = deadline
    if metadata:
        msg[Key.METADATA] = metadata
    return msg


def cancel(id: str) -> dict[str, Any]:
    return {Key.MPRPC: VERSION, Key.ID: id, Key.CANCEL: True}


def response(code: Code, id: str | int, **fields: Any) -> dict[str, Any]:
    return {Key.MPRPC: VERSION, Key.CODE: int(code), Key.MESSAGE: {Key.ID: id, **fields}}


def result(
    id: str, value: Any, *, deprecated: bool = False, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """A 200 (300 if deprecated) reply: the per-call message, built without detours."""
    code = _EXPIRE_RESULT if deprecated else _RESULT
    message = {Key.ID: id, Key.RESULT: value}
    if metadata:
        message[Key.METADATA] = metadata
    return {Key.MPRPC: VERSION, Key.CODE: code, Key.MESSAGE: message}


def stream_item(id: str, value: Any) -> dict[str, Any]:
    """A 202 reply: one item of a stream."""
    message = {Key.ID: id, Key.RESULT: value}
    return {Key.MPRPC: VERSION, Key.CODE: _STREAM_ITEM, Key.MESSAGE: message}


def call_error(id: str | int, error: MPRPCError, debug_frame: str | None) -> dict[str, Any]:
    code = error.code or Code.SERVER_ERROR
    fields: dict[str, Any] = {
        Key.EXCEPTION: error.exception or type(error).__name__,
        Key.MESSAGE: error.message,
    }
    data = dict(error.data or {})
    if debug_frame is not None:
        data[Key.FRAME] = debug_frame
    else:
        data.pop(Key.FRAME, None)
    if data:
        fields[Key.DATA] = data
    return response(code, id, **fields)


def connection_error(code: Code) -> dict[str, Any]:
    return {Key.MPRPC: VERSION, Key.CODE: code.value}


# -- parsers -----------------------------------------------------------------------


def check_envelope(msg: Any) -> dict[str, Any]:
    """Return `msg` if it is a map of protocol version 0.1.

    Raises:
        RemoteProtocolError: not a map (506), or another protocol version (505).
    """
    if not isinstance(msg, dict):
        raise RemoteProtocolError(f"message is a {type(msg).__name__}, not a map")
    version = msg.get(Key.MPRPC)
    if version != VERSION:
        raise RemoteProtocolError(
            f"unsupported protocol version {describe(version)}: this peer speaks MPRPC {VERSION!r}",
            syntax=False,
        )
    return msg


def parse_auth(
    msg: dict[str, Any],
) -> tuple[str | None, str | None, frozenset[Feature]]:
    """Credentials and announced features of an auth request (506 if malformed)."""
    auth = msg.get(Key.AUTH)
    if not isinstance(auth, dict):
        raise RemoteProtocolError("AUTH must be a map with USERNAME and PASSWORD")
    username = auth.get(Key.USERNAME)
    password = auth.get(Key.PASSWORD)
    if not isinstance(username, str | None) or not isinstance(password, str | None):
        raise RemoteProtocolError("USERNAME and PASSWORD must be strings or null")
    raw = msg.get(Key.FEATURES) or []
    if not isinstance(raw, list):
        raise RemoteProtocolError("FEATURES must be an array of strings")
    known = {f.value for f in Feature}
    features = frozenset(Feature(f) for f in raw if isinstance(f, str) and f in known)
    return username, password, features


def check_metadata(raw: Any) -> dict[str, str]:
    """`raw` if it is valid call metadata: a map of str to str within the size bounds.

    Raises:
        ValueError: saying what is wrong (the caller turns it into its protocol error).
    """
    if not isinstance(raw, dict):
        raise ValueError(f"METADATA must be a map of strings to strings, got {type(raw).__name__}")
    if len(raw) > MAX_METADATA_PAIRS:
        raise ValueError(
            f"METADATA has {len(raw)} pairs, more than the {MAX_METADATA_PAIRS} allowed"
        )
    size = 0
    for key, value in raw.items():
        if type(key) is not str or type(value) is not str:
            raise ValueError(
                f"METADATA must map strings to strings, got {key!r:.50}: {value!r:.50}"
            )
        size += len(key.encode()) + len(value.encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"METADATA has {size} bytes, more than the {MAX_METADATA_BYTES} allowed")
    return raw


def parse_call(
    msg: dict[str, Any],
    accept_deadline: bool,
    accept_metadata: bool = False,
    accept_oneway: bool = False,
) -> CallRequest:
    """Validate a call request; RequestError (400, carrying the ID) if malformed.

    `ONEWAY` is honoured only where feature `oneway` was negotiated (`accept_oneway`)."""
    id = msg[Key.ID]
    if not isinstance(id, str) or not id:
        raise RequestError(f"ID must be a non-empty string, got {describe(id)}")
    method = msg.get(Key.METHOD)
    if not isinstance(method, str) or not method:
        raise RequestError("request has no METHOD (a non-empty string)", id=id)
    args = msg.get(Key.ARGS)
    if args is None:
        args = []
    elif not isinstance(args, list):
        raise RequestError(f"ARGS must be an array, got {type(args).__name__}", id=id)
    kwargs = msg.get(Key.KWARGS)
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise RequestError("KWARGS must be a map with string keys", id=id)
    returns = msg.get(Key.RETURN, True)
    if not isinstance(returns, bool):
        raise RequestError(f"RETURN must be a boolean, got {describe(returns)}", id=id)
    deadline = None
    if accept_deadline and msg.get(Key.DEADLINE) is not None:
        raw = msg[Key.DEADLINE]
        if (
            not isinstance(raw, int | float)
            or isinstance(raw, bool)
            or not math.isfinite(raw)
            or raw < 0
        ):
            raise RequestError(
                f"DEADLINE must be a non-negative number, got {describe(raw)}", id=id
            )
        deadline = float(raw)
    metadata = None
    if accept_metadata and msg.get(Key.METADATA) is not None:
        try:
            metadata = check_metadata(msg[Key.METADATA])
        except ValueError as exc:
            raise RequestError(str(exc), id=id) from None
    oneway = accept_oneway and msg.get(Key.ONEWAY) is True
    return CallRequest(id, method, args, kwargs, returns and not oneway, deadline, metadata, oneway)


# The keys of a plain call: no DEADLINE, METADATA, ONEWAY or CANCEL in play, and RETURN
# only as true.
_PLAIN_CALL_KEYS: Final = frozenset(
    {Key.MPRPC, Key.ID, Key.METHOD, Key.ARGS, Key.KWARGS, Key.RETURN}
)

PlainCall = tuple[str, str, list[Any], dict[str, Any]]


def plain_call(msg: Any) -> PlainCall | None:
    """`(id, method, args, kwargs)` of a plain call: a map of this protocol version with
    no key but ID, METHOD, ARGS, KWARGS and RETURN (true), each of the exact type
    `parse_call` accepts; None for anything else (which `check_envelope` and
    `parse_call` then judge).

    A fast test, not a second rule book: it accepts only maps `parse_call` accepts as
    they are, with the values it would give (`returns=True` and nothing else set), and
    leaves every refusal, and its message, to the general path.
    """
    if (
        type(msg) is not dict
        or not msg.keys() <= _PLAIN_CALL_KEYS
        or msg.get(Key.MPRPC) != VERSION
        # RETURN true is the default it states (0.0.3's clients send it on every call).
        or msg.get(Key.RETURN, True) is not True
    ):
        return None
    id = msg.get(Key.ID)
    method = msg.get(Key.METHOD)
    args = msg.get(Key.ARGS)
    kwargs = msg.get(Key.KWARGS)
    if type(id) is not str or not id or type(method) is not str or not method:
        return None
    if args is None:
        args = []
    elif type(args) is not list:
        return None
    if kwargs is None:
        kwargs = {}
    elif type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        return None
    return id, method, args, kwargs


def _error_from_message(code: int, message: Any) -> tuple[str | None, MPRPCError]:
    if not isinstance(message, dict):
        return None, error_for_code(code)
    id = message.get(Key.ID)
    text = message.get(Key.MESSAGE)
    exc = message.get(Key.EXCEPTION)
    data = message.get(Key.DATA)
    error = error_for_code(
        code,
        text if isinstance(text, str) else "" if text is None else str(text),
        exception=exc if isinstance(exc, str) else None,
        id=id if isinstance(id, str) else None,
        data=data if isinstance(data, dict) else None,
    )
    return (id if isinstance(id, str) else None), error


def _bad_welcome(key: str, expected: str, value: Any) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"malformed welcome reply from the server: {key} must be {expected}, got {describe(value)}"
    )


def _welcome(msg: dict[str, Any]) -> Welcome:
    """The 100 reply as an event; 506 naming the field if any field has a wrong type."""
    version, desc = msg.get(Key.VERSION), msg.get(Key.DESC)
    if not isinstance(version, str | None):
        raise _bad_welcome(Key.VERSION, "a string or null", version)
    if not isinstance(desc, str | None):
        raise _bad_welcome(Key.DESC, "a string or null", desc)
    debug = msg.get(Key.DEBUG)
    if not isinstance(debug, bool | None):
        raise _bad_welcome(Key.DEBUG, "a boolean", debug)
    comp = msg.get(Key.COMPRESER)
    if comp is not None and (
        not isinstance(comp, str) or comp not in {c.value for c in Compression}
    ):
        raise _bad_welcome(Key.COMPRESER, "null, 'zlib', 'bz2' or 'lzma'", comp)
    timeout = msg.get(Key.TIMEOUT)
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise _bad_welcome(Key.TIMEOUT, "a non-negative number of seconds or null", timeout)
    raw = msg.get(Key.FEATURES)
    if raw is not None and (not isinstance(raw, list) or not all(isinstance(f, str) for f in raw)):
        raise _bad_welcome(Key.FEATURES, "an array of strings", raw)
    known = {f.value for f in Feature}
    # Names this client does not know are ignored: a newer server may offer more.
    features = shared_features(frozenset(Feature(f) for f in raw or () if f in known))
    return Welcome(
        version=version,
        description=desc,
        debug=bool(debug),
        compression=Compression(comp) if comp is not None else None,
        idle_timeout=float(timeout) if timeout else None,
        features=features,
    )


def parse_response(msg: Any) -> ClientEvent:
    """Turn a message received by a client into an event (505/506 if malformed)."""
    if type(msg) is not dict or msg.get(Key.MPRPC) != VERSION:
        msg = check_envelope(msg)  # raises, saying what is wrong
    code = msg.get(Key.CODE)
    if type(code) is not int:  # bool is an int subclass, but not a code
        raise RemoteProtocolError(f"response has no integer CODE (got {describe(code)})")
    message = msg.get(Key.MESSAGE)
    if 200 <= code < 400:
        id = message.get(Key.ID) if type(message) is dict else None
        if type(id) is not str:
            raise RemoteProtocolError(f"response {code} has no MESSAGE with an ID")
        if code == _STREAM_ITEM:
            return StreamItem(id, message.get(Key.RESULT))
        metadata = message.get(Key.METADATA)
        if metadata is not None:
            try:
                metadata = check_metadata(metadata)
            except ValueError as exc:
                raise RemoteProtocolError(f"response {code}: {exc}") from None
        if code in (_RESULT, _EXPIRE_RESULT):
            return Result(id, message.get(Key.RESULT), code == _EXPIRE_RESULT, metadata)
        if code in (_STREAM_START, _EXPIRE_STREAM_START):
            return StreamStart(id, code == _EXPIRE_STREAM_START, metadata)
        if code == _STREAM_END:
            return StreamEnd(id)
        raise RemoteProtocolError(f"unknown response code {code}")
    if code == _WELCOME:
        return _welcome(msg)
    if code == _PONG:
        return Pong()
    if not 400 <= code < 600:
        # Not a code of the table nor a future 4xx/5xx error: the server is broken, not
        # reporting a failure (an RpcException would blame the server's method).
        raise RemoteProtocolError(f"unknown response code {code} from the server")
    id, error = _error_from_message(code, message)
    if id is not None:
        return CallFailed(id, error)
    if code < 500:
        raise RemoteProtocolError(f"call error {code} without an ID: {error}")
    return ConnectionFailed(error)
