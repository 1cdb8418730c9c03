"""MPRPC clients: `AsyncRPC` (asyncio) and `RPC` (blocking sockets), two thin shells
around `BaseRPC`, which holds everything that is not I/O."""

from .async_client import AsyncRPC, AsyncStream
from .base import BaseRPC, ClientOptions
from .common import Address
from .sync_client import RPC

AsyncRpc = AsyncRPC  # the spelling used in pymprpc 0.0.3's prose

__all__ = ["RPC", "Address", "AsyncRPC", "AsyncRpc", "AsyncStream", "BaseRPC", "ClientOptions"]
