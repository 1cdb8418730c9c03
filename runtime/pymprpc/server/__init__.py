"""The asyncio MPRPC server."""

from ..services import ServiceInfo
from .executors import ExecutorKind
from .registry import DuplicateMethodError, DuplicateServiceError
from .server import Server

MPRPCServer = Server

__all__ = [
    "DuplicateMethodError",
    "DuplicateServiceError",
    "ExecutorKind",
    "MPRPCServer",
    "Server",
    "ServiceInfo",
]
