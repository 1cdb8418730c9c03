"""pymprpc: MessagePack-RPC (MPRPC 0.1) for Python — asyncio server, async and sync clients."""

from . import errors
from .address import Address
from .client import RPC, AsyncRPC, AsyncStream
from .protocol import Code, Compression, Feature
from .server import ExecutorKind, Server

# The distribution's version, in this one place: pyproject.toml (hatch) and mprpcgen read it.
__version__ = "0.1.0"

__all__ = [
    "RPC",
    "Address",
    "AsyncRPC",
    "AsyncStream",
    "Code",
    "Compression",
    "ExecutorKind",
    "Feature",
    "Server",
    "errors",
    "__version__",
]
