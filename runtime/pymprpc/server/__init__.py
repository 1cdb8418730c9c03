"""The asyncio MPRPC server."""

from .executors import ExecutorKind
from .registry import DuplicateMethodError
from .server import Server

MPRPCServer = Server

__all__ = ["DuplicateMethodError", "ExecutorKind", "MPRPCServer", "Server"]
