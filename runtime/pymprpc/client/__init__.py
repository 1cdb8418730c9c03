"""MPRPC clients: `AsyncRPC` (asyncio) and `RPC` (blocking sockets)."""

from .async_client import AsyncRPC, AsyncStream
from .common import Address
from .sync_client import RPC

AsyncRpc = AsyncRPC  # the spelling used in pymprpc 0.0.3's prose

__all__ = ["RPC", "Address", "AsyncRPC", "AsyncRpc", "AsyncStream"]
