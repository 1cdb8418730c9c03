"""Process workers for plain functions: a pool driven by the event loop, forked early."""

from .pool import ProcessPool, RemoteFunctionError, default_size, single_threaded
from .targets import TargetTable

__all__ = ["ProcessPool", "RemoteFunctionError", "TargetTable", "default_size", "single_threaded"]
