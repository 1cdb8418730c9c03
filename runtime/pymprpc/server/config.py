"""`ServerConfig`: every option of a `Server`, in one frozen object."""

from __future__ import annotations

import logging
import resource
import ssl as ssl_module
from collections.abc import Sequence
from dataclasses import dataclass

from ..interceptors.chain import ServerInterceptor
from ..options import check_count, check_flag, check_seconds, check_text
from ..protocol import (
    ALL_FEATURES,
    DEFAULT_MAX_AUTH_MESSAGE_SIZE,
    DEFAULT_MAX_COLLECTION_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    Feature,
    ServerSettings,
)
from .executors import ExecutorChoice

log = logging.getLogger(__name__)

# File descriptors kept free for what is not a client connection: the listening socket,
# process-pool pipes, log files, the refusing 503 itself.
FD_RESERVE = 128
DEFAULT_MAX_CONNECTIONS = 10_000
MiB = 1024 * 1024
# Bytes of partial frames all connections together may buffer before reads pause:
# sixteen maximum-size messages arriving at once.
DEFAULT_MAX_BUFFERED_INPUT = 256 * MiB
# Bytes of replies waiting for one slow client beyond which its further calls wait to
# start (and once max_inflight of them wait, it is no longer read).
DEFAULT_MAX_OUTPUT_BUFFER = 4 * MiB


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never above the hard limit); the
    soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("cannot raise RLIMIT_NOFILE to %d: %s", target, exc)
    return DEFAULT_MAX_CONNECTIONS + FD_RESERVE if soft == resource.RLIM_INFINITY else soft


def default_max_connections() -> int:
    """10,000 connections, or fewer when the file-descriptor limit cannot hold them (so a
    flood gets the documented 503 instead of accept() failing with EMFILE)."""
    soft = raise_fd_limit(DEFAULT_MAX_CONNECTIONS + FD_RESERVE)
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft - FD_RESERVE))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `Server(...)`'s keyword arguments configure; see `Server` for each meaning."""

    host: str = "127.0.0.1"
    port: int = 5000
    idle_timeout: float | None = 180.0
    debug: bool = False
    ssl: ssl_module.SSLContext | None = None
    executor: ExecutorChoice | None = None  # None: functions in processes, methods in threads
    max_workers: int | None = None
    worker_spin: float | None = None  # None: the pool's default
    version: str | None = None
    description: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_auth_message_size: int = DEFAULT_MAX_AUTH_MESSAGE_SIZE
    max_collection_len: int = DEFAULT_MAX_COLLECTION_LEN
    max_buffered_input: int = DEFAULT_MAX_BUFFERED_INPUT
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_inflight: int = 1_000
    auth_timeout: float = 10.0
    half_close_timeout: float = 30.0
    kept_results: int = 1_000
    kept_results_bytes: int = 64 * MiB
    kept_results_ttl: float = 600.0
    grace_period: float = 10.0
    features: frozenset[Feature] = ALL_FEATURES
    reuse_port: bool = False
    backlog: int = 1024
    login_attempts: int = 5
    login_backoff: float = 1.0
    # Around every call, the first outermost (see pymprpc.interceptors).
    interceptors: Sequence[ServerInterceptor] = ()

    def __post_init__(self) -> None:
        # Refused here, naming the option: a str (read from the environment) or -1 taken
        # as "no limit" would otherwise fail at every connection, naming neither.
        check_count("port", self.port)
        if self.port > 65535:
            raise ValueError(f"port must be 0 to 65535, not {self.port!r}")
        check_seconds("idle_timeout", self.idle_timeout, none=True)
        check_text("version", self.version)
        check_text("description", self.description)
        check_flag("debug", self.debug)
        check_flag("reuse_port", self.reuse_port)
        for name in (
            "auth_timeout",
            "half_close_timeout",
            "kept_results_ttl",
            "grace_period",
            "login_backoff",
        ):
            check_seconds(name, getattr(self, name))
        check_count("max_workers", self.max_workers, minimum=1, none=True)
        for name in (
            "max_message_size",
            "max_auth_message_size",
            "max_collection_len",
            "max_connections",
        ):
            check_count(name, getattr(self, name), minimum=1)
        for name in (
            "max_buffered_input",
            "max_output_buffer",
            "max_inflight",
            "kept_results",
            "kept_results_bytes",
            "backlog",
            "login_attempts",
        ):
            check_count(name, getattr(self, name))

    def settings(self) -> ServerSettings:
        """What each connection announces and enforces."""
        return ServerSettings(
            version=self.version,
            description=self.description,
            idle_timeout=self.idle_timeout or None,
            debug=self.debug,
            max_message_size=self.max_message_size,
            max_auth_message_size=self.max_auth_message_size,
            max_collection_len=self.max_collection_len,
            features=self.features,
        )
