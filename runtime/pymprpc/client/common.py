"""What both clients share: address parsing, options, dotted method proxies."""

from __future__ import annotations

import ssl as ssl_module
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import ExpireStreamWarning, ExpireWarning
from ..protocol import Compression

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed `tcp://user:password@host:port` (or `tls://...`) address."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, addr: str) -> Address:
        """Parse `tcp://[user:password@]host:port` or `tls://...` (percent-escapes decoded).

        Raises:
            ValueError: another scheme, or no host or port.
        """
        parts = urlsplit(addr)
        if parts.scheme not in ("tcp", "tls"):
            raise ValueError(
                f"address must look like 'tcp://user:password@host:port', got {addr!r}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in address {addr!r}: {exc}") from None
        if not parts.hostname or port is None:
            raise ValueError(f"address needs a host and a port: {addr!r}")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "tls",
        )

    def ssl_context(self, given: ssl_module.SSLContext | None) -> ssl_module.SSLContext | None:
        """The context to connect with: `given`, else the default one for a `tls://` address."""
        if given is not None:
            return given
        return ssl_module.create_default_context() if self.tls else None

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"


def parse_compression(compreser: str | Compression | None) -> Compression | None:
    """The `Compression` named by a client's `compreser=` option (ValueError if unknown)."""
    if compreser is None:
        return None
    try:
        return Compression(compreser)
    except ValueError:
        raise ValueError(
            f"unknown compreser {compreser!r}: use 'zlib', 'bz2', 'lzma' or None"
        ) from None


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call options; `timeout` is seconds (None: no deadline)."""

    timeout: float | None = None


def warn_deprecated(method: str, stream: bool, stacklevel: int) -> None:
    """Warn that remote `method` is deprecated (the server answered 300 or 301)."""
    category = ExpireStreamWarning if stream else ExpireWarning
    warnings.warn(f"remote method {method!r} is deprecated", category, stacklevel=stacklevel)


class MethodProxy(Generic[R]):
    """`rpc.a.b(...)` calls remote method "a.b"; `.with_options(timeout=...)` sets a deadline."""

    __slots__ = ("_invoke", "_name", "_options")

    def __init__(
        self,
        invoke: Callable[[str, CallOptions | None, tuple[Any, ...], dict[str, Any]], R],
        name: str,
        options: CallOptions | None = None,  # None: the client's defaults at call time
    ) -> None:
        self._invoke = invoke
        self._name = name
        self._options = options

    def __getattr__(self, attr: str) -> MethodProxy[R]:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return MethodProxy(self._invoke, f"{self._name}.{attr}", self._options)

    def with_options(self, *, timeout: float | None = None) -> MethodProxy[R]:
        """This method with a per-call deadline of `timeout` seconds (None: none)."""
        options = replace(self._options or CallOptions(), timeout=timeout)
        return MethodProxy(self._invoke, self._name, options)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Call the remote method (an awaitable on `AsyncRPC`, the result on `RPC`)."""
        return self._invoke(self._name, self._options, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name!r}>"
