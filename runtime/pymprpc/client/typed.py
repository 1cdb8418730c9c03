"""Bases of the clients mprpcgen generates: connection handling, shared by every service."""

from __future__ import annotations

import copy
from typing import Any, Final, Self

from .async_client import AsyncRPC
from .common import skip_caller_in_warnings
from .sync_client import RPC

_CLIENT_DEFAULT: Final[Any] = object()


class _Options:
    _timeout: Any = _CLIENT_DEFAULT

    def with_options(self, *, timeout: float | None) -> Self:
        """A view of this client whose calls have a deadline of `timeout` seconds.

        `None`: no deadline. The view shares the client's connection:
        `client.with_options(timeout=2).add(1, 2)`.
        """
        view = copy.copy(self)
        view._timeout = timeout
        return view


class TypedClient(_Options):
    """A blocking client; `rpc` is the underlying `RPC` (options pass through to it)."""

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = RPC(addr, **options)

    @skip_caller_in_warnings  # the generated method: warnings name the line calling it
    def _call(self, method: str, args: list[Any]) -> Any:
        if self._timeout is _CLIENT_DEFAULT:
            return self.rpc.call(method, *args)  # no proxy to build: the common case
        return self.rpc.method(method).with_options(timeout=self._timeout)(*args)

    def __enter__(self) -> Self:
        self.rpc.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.rpc.close()

    def connect(self) -> None:
        """Open the connection and authenticate."""
        self.rpc.connect()

    def close(self) -> None:
        """Close the connection."""
        self.rpc.close()


class AsyncTypedClient(_Options):
    """An asyncio client; `rpc` is the underlying `AsyncRPC` (options pass through to it)."""

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = AsyncRPC(addr, **options)

    @skip_caller_in_warnings
    async def _call(self, method: str, args: list[Any]) -> Any:
        if self._timeout is _CLIENT_DEFAULT:
            return await self.rpc.call(method, *args)  # no proxy to build: the common case
        return await self.rpc.method(method).with_options(timeout=self._timeout)(*args)

    async def __aenter__(self) -> Self:
        await self.rpc.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.rpc.close()

    async def connect(self) -> None:
        """Open the connection and authenticate."""
        await self.rpc.connect()

    async def close(self) -> None:
        """Close the connection."""
        await self.rpc.close()
