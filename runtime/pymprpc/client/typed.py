"""Bases of the clients mprpcgen generates: connection handling, shared by every service."""

from __future__ import annotations

from typing import Any, Self

from .async_client import AsyncRPC
from .sync_client import RPC


class TypedClient:
    """A blocking client; `rpc` is the underlying `RPC` (options pass through to it)."""

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = RPC(addr, **options)

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


class AsyncTypedClient:
    """An asyncio client; `rpc` is the underlying `AsyncRPC` (options pass through to it)."""

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = AsyncRPC(addr, **options)

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
