"""Bases of the clients mprpcgen generates: connection handling, shared by every service."""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Self, TypeAlias, TypeVar

from ..context import EMPTY_METADATA, Metadata
from ..errors import LocalProtocolError
from ..options import check_seconds
from ..schema import Signature
from .async_client import AsyncRPC
from .common import CLIENT_DEFAULT, MethodProxy, skip_caller_in_warnings
from .sync_client import RPC

_CLIENT_DEFAULT = CLIENT_DEFAULT

T = TypeVar("T")

Coro: TypeAlias = Coroutine[Any, Any, T]
"""What a generated async client's unary method returns: the coroutine of its call, as
an `async def` method's would be (`await client.add(1, 2)`, `asyncio.create_task(...)`,
`asyncio.gather(...)`); arguments are checked when it runs."""


class _Options:
    _timeout: Any = _CLIENT_DEFAULT
    _metadata: Metadata = EMPTY_METADATA
    # No option set: calls go through `rpc.call` (or the call itself), without building
    # a proxy. An attribute, kept by with_options, as it is read on every call.
    _plain: bool = True

    def with_options(
        self,
        *,
        timeout: float | None = CLIENT_DEFAULT,
        metadata: Mapping[str, str] | None = None,
    ) -> Self:
        """A view of this client whose calls have other options; it shares the client's
        connection: `client.with_options(timeout=2).add(1, 2)`.

        Args:
            timeout: a deadline of `timeout` seconds (None: none); not given: unchanged.
            metadata: string pairs sent with every call, added to any set before (sent
                only to a server that negotiated the `metadata` feature).

        Raises:
            TypeError: `timeout` is not a number (or None), or a metadata key or value is
                not a `str`.
            ValueError: `timeout` is infinite or NaN (a negative one has passed already:
                the call raises DeadlineExceeded).
        """
        view = copy.copy(self)
        if timeout is not CLIENT_DEFAULT:
            check_seconds("timeout", timeout, none=True, negative=True)
            view._timeout = timeout
        if metadata:
            view._metadata = self._metadata.with_items(Metadata(metadata))
        view._plain = view._timeout is _CLIENT_DEFAULT and not view._metadata
        view._options_set()
        return view

    def _options_set(self) -> None:
        """This view's options were just set (a subclass may precompute from them)."""

    def _proxy(self, proxy: MethodProxy[Any]) -> MethodProxy[Any]:
        return proxy.with_options(timeout=self._timeout, metadata=self._metadata)

    def _unsendable(self, method: str, args: list[Any], exc: LocalProtocolError) -> Exception:
        """What to raise for a call MessagePack refused: the ParamError naming the method
        and the parameter (`echo(): v[1]['k'] is the integer ...`) when the refused value
        sits in an argument (inside an `any` value: the rest was checked before), as for
        a value of the wrong type; else `exc`. Found by the method's wire name among the
        generated client's signatures (an error path: a search is fine)."""
        prefix = getattr(self, "_prefix", "")
        for sig in vars(getattr(type(self), "_methods", object)).values():
            if isinstance(sig, Signature) and prefix + sig.wire == method:
                return sig.unsendable(args, method) or exc
        return exc


class TypedClient(_Options):
    """A blocking client; `rpc` is the underlying `RPC` (options pass through to it)."""

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = RPC(addr, **options)
        # "Not connected" errors name the class the user made, not the RPC inside it.
        self.rpc._how_to_connect = f"use 'with {type(self).__name__}(...)' or call connect()"

    @skip_caller_in_warnings  # the generated method: warnings name the line calling it
    def _call(self, method: str, args: list[Any]) -> Any:
        try:
            if self._plain:
                return self.rpc.call(method, *args)  # the common case
            return self._proxy(self.rpc.method(method))(*args)
        except LocalProtocolError as exc:
            raise self._unsendable(method, args, exc) from None

    def _notify(self, method: str, args: list[Any]) -> None:
        """A generated oneway method's call (`rpc.notify`, with this view's metadata)."""
        try:
            if self._metadata:
                self.rpc._notify_with(method, tuple(args), self._metadata)
            else:
                self.rpc.notify(method, *args)
        except LocalProtocolError as exc:
            raise self._unsendable(method, args, exc) from None

    def __enter__(self) -> Self:
        self.rpc.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.rpc.close()

    def connect(self) -> None:
        """Open the connection and authenticate."""
        self.rpc.connect()

    def close(self) -> None:
        """Close the connection."""
        self.rpc.close()


class AsyncTypedClient(_Options):
    """An asyncio client; `rpc` is the underlying `AsyncRPC` (options pass through to it)."""

    # A generated method's call: `return self._typed_call(wire, (args...), typed=_sig)`,
    # the coroutine that encodes the arguments, calls `wire` and checks the result
    # against `_sig`. Without options or interceptors it is the client's own call
    # coroutine (`AsyncRPC._call`, its arguments in that order): no frame of ours.
    _typed_call: Callable[..., Coroutine[Any, Any, Any]]

    def __init__(self, addr: str, **options: Any) -> None:
        self.rpc = AsyncRPC(addr, **options)
        self.rpc._how_to_connect = f"use 'async with {type(self).__name__}(...)' or await connect()"
        self._options_set()

    def _options_set(self) -> None:
        plain = self._plain and not self.rpc.interceptors
        self._typed_call = self.rpc._call if plain else self._checked_call

    async def _checked_call(
        self, method: str, args: tuple[Any, ...], *, typed: Signature[Any]
    ) -> Any:
        """`_typed_call` with options or interceptors: through `_call` (a method proxy)."""
        wire_args = typed.encode_args(*args, method=method)
        return typed.decode_result(await self._call(method, wire_args))

    @skip_caller_in_warnings
    async def _call(self, method: str, args: list[Any]) -> Any:
        try:
            if self._plain:
                return await self.rpc.call(method, *args)
            return await self._proxy(self.rpc.method(method))(*args)
        except LocalProtocolError as exc:
            raise self._unsendable(method, args, exc) from None

    async def _notify(self, method: str, args: list[Any]) -> None:
        """A generated oneway method's call (`rpc.notify`, with this view's metadata)."""
        try:
            if self._metadata:
                await self.rpc._notify_with(method, tuple(args), self._metadata)
            else:
                await self.rpc.notify(method, *args)
        except LocalProtocolError as exc:
            raise self._unsendable(method, args, exc) from None

    def _call_typed(
        self, method: str, sig: Signature[Any], args: tuple[Any, ...]
    ) -> Coroutine[Any, Any, Any]:
        """What code generated before `_typed_call` calls: the same call."""
        rpc = self.rpc
        if self._plain and not rpc.interceptors:
            return rpc._call(method, args, {}, rpc.timeout, None, sig)
        return self._call_checked(method, sig, args)

    async def _call_checked(self, method: str, sig: Signature[Any], args: tuple[Any, ...]) -> Any:
        return sig.decode_result(await self._call(method, sig.encode_args(*args, method=method)))

    async def __aenter__(self) -> Self:
        await self.rpc.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.rpc.close()

    async def connect(self) -> None:
        """Open the connection and authenticate."""
        await self.rpc.connect()

    async def close(self) -> None:
        """Close the connection."""
        await self.rpc.close()
