"""The asyncio MPRPC server."""

from .executors import ExecutorKind
from .server import Server

MPRPCServer = Server

__all__ = ["ExecutorKind", "MPRPCServer", "Server"]
