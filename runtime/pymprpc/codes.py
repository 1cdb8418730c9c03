"""Status codes of docs/protocol.md; `pymprpc.errors` maps each error code to its exception."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Status codes of docs/protocol.md; the exception for each lives in `pymprpc.errors`."""

    WELCOME = 100
    PONG = 101
    RESULT = 200
    STREAM_START = 201
    STREAM_ITEM = 202
    STREAM_END = 206
    EXPIRE_RESULT = 300
    EXPIRE_STREAM_START = 301
    REQUEST_ERROR = 400
    NOT_FOUND = 401
    PARAM_ERROR = 402
    RESTRICT_ACCESS = 403
    RUNTIME_ERROR = 404
    RESULT_LIMIT = 405
    UNSUPPORTED_SYS_METHOD = 406
    CANCELLED = 407
    DEADLINE_EXCEEDED = 408
    SERVER_ERROR = 500
    LOGIN_ERROR = 501
    REQUIREMENT_ERROR = 502
    UNAVAILABLE = 503
    IDLE_TIMEOUT = 504
    PROTOCOL_ERROR = 505
    PROTOCOL_SYNTAX_ERROR = 506
