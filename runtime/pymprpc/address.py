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
        shown = _without_password(addr)
        try:
            parts = urlsplit(addr)
        except ValueError as exc:  # brackets urllib reads as a bad IPv6 host
            raise ValueError(
                f"address {shown!r} cannot be parsed ({_no_password(str(exc), addr)})"
                + _encoding_hint(addr)
            ) from None
        if parts.scheme not in ("tcp", "tls"):
            raise ValueError(
                f"address must look like 'tcp://user:password@host:port', got {shown!r}"
                + _encoding_hint(addr)
            )
        try:
            parsed_port = parts.port
        except ValueError as exc:
            # (urllib's message may quote part of a password cut at a '#', '/' or '?')
            why = "not a number from 0 to 65535" if "range" in str(exc) else "not a number"
            raise ValueError(
                f"bad port in address {shown!r}: {why}" + _encoding_hint(addr)
            ) from None
        if not parts.hostname or parsed_port is None:
            raise ValueError(f"address needs a host and a port: {shown!r}" + _encoding_hint(addr))
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"address has more than a host and a port: {shown!r} (a pymprpc address is "
                "'tcp://[user:password@]host:port', or 'tls://...')" + _encoding_hint(addr)
            )
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
        # An IPv6 host is bracketed, so the text parses back to this address.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls' if self.tls else 'tcp'}://{host}:{self.port}"


# Characters that end a URL's user information early unless percent-encoded.
_RESERVED = frozenset(":/?#[]@")


def _userinfo(addr: str) -> tuple[int, int] | None:
    """Where the `user:password` part of `addr` starts and ends (up to its last '@',
    which a password with reserved characters may precede), or None if it has none."""
    start = addr.find("://")
    start = 0 if start < 0 else start + 3  # (no scheme: the user may still be there)
    end = addr.rfind("@", start)
    return None if end < 0 else (start, end)


def _without_password(addr: str) -> str:
    """`addr` with its password, if any, replaced by '***' (for error messages)."""
    span = _userinfo(addr)
    if span is None:
        return addr
    start, end = span
    colon = addr.find(":", start, end)
    if colon < 0:
        return addr
    return f"{addr[: colon + 1]}***{addr[end:]}"


def _no_password(text: str, addr: str) -> str:
    """`text` (urllib's message about `addr`), unless `addr` holds a password: urllib
    may quote any part of it."""
    return text if _without_password(addr) == addr else "brackets read as an IPv6 host"


def _encoding_hint(addr: str) -> str:
    """Advice for an address whose password holds characters a URL reserves."""
    span = _userinfo(addr)
    if span is None:
        return ""
    start, end = span
    colon = addr.find(":", start, end)
    password = addr[colon + 1 : end] if colon >= 0 else ""
    if not _RESERVED.intersection(password):
        return ""
    return (
        "; a password containing any of : / ? # [ ] @ must be percent-encoded "
        "(urllib.parse.quote(password, safe=''))"
    )
