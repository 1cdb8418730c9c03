"""`Address`: where a peer listens, with the credentials and transport to reach it.

One type for both sides: clients parse `tcp://user:password@host:port` (or `tls://`),
a server accepts the same string, an `Address`, or a `(host, port)` pair.
"""

from __future__ import annotations

import ssl as ssl_module
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["Address"]


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed `tcp://user:password@host:port` (or `tls://...`) address."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs
    tls: bool = False

    @classmethod
    def parse(cls, addr: str | Address | tuple[str, int]) -> Address:
        """Parse `addr` (an `Address` or a `(host, port)` pair is taken as it is).

        Raises:
            ValueError: the string is not `tcp://[user:password@]host:port` (or `tls://`).
        """
        if isinstance(addr, Address):
            return addr
        if isinstance(addr, tuple):
            host, port = addr
            return cls(host=host, port=int(port))
        parts = urlsplit(addr)
        if parts.scheme not in ("tcp", "tls"):
            raise ValueError(
                f"address must look like 'tcp://user:password@host:port', got {addr!r}"
            )
        try:
            parsed_port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in address {addr!r}: {exc}") from None
        if not parts.hostname or parsed_port is None:
            raise ValueError(f"address needs a host and a port: {addr!r}")
        return cls(
            host=parts.hostname,
            port=parsed_port,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "tls",
        )

    def ssl_context(self, given: ssl_module.SSLContext | None) -> ssl_module.SSLContext | None:
        """The TLS context to use: `given`, else a default one for `tls://`, else None."""
        if given is not None:
            return given
        return ssl_module.create_default_context() if self.tls else None

    def __str__(self) -> str:
        # Never shows the credentials: this text ends up in error messages and logs.
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"
