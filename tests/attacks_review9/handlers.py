"""Review9's handlers at module level (the process pool needs them importable)."""

from __future__ import annotations

from typing import Any

from pymprpc import current_call


def who() -> list[Any]:
    """What the call context says, and a response metadata pair naming the executor."""
    call = current_call()
    call.set_response_metadata("seen-x", call.metadata.get("x", "-"))
    return [call.method, call.user, dict(call.metadata), call.time_remaining() is not None]


def fail() -> None:
    raise ValueError("from a plain function")
