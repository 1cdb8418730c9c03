"""pymprpc: MessagePack-RPC (MPRPC 0.1) for Python — asyncio server, async and sync clients."""

import logging

from . import errors
from .address import Address
from .client import RPC, AsyncRPC, AsyncStream
from .context import CallContext, current_call
from .protocol import Code, Compression, Feature
from .server import ExecutorKind, Server

# A library logs; the application decides where records go (no "No handlers" warning).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# The distribution's version, in this one place: pyproject.toml (hatch) and mprpcgen read it.
__version__ = "0.1.0"

__all__ = [
    "RPC",
    "Address",
    "AsyncRPC",
    "AsyncStream",
    "CallContext",
    "Code",
    "Compression",
    "ExecutorKind",
    "Feature",
    "Server",
    "current_call",
    "errors",
    "__version__",
]
