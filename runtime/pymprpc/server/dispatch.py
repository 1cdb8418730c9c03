"""Turning a call request into an outcome: resolve, bind, run, and map failures to codes."""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final

from .. import errors
from ..errors import (
    MPRPCError,
    ResultLimitError,
    RPCRuntimeError,
    ValidationError,
    exception_text,
    traceback_text,
    type_name,
)
from ..protocol import CallRequest
from ..schema import (
    ANY,
    FLOAT,
    INT_MAX,
    INT_MIN,
    Enum,
    List,
    Map,
    Optional,
    Schema,
    Struct,
    encode_async_stream,
)
from .executors import ExecutorKind, Executors, RemoteFunctionError
from .registry import Kind, Method, Registry

# Read for every call: module constants cost less than enum member lookups.
_COROUTINE: Final = Kind.COROUTINE
_STREAM: Final = Kind.STREAM
_INLINE: Final = ExecutorKind.INLINE
_CORO: Final = types.CoroutineType
_GENERATOR: Final = types.GeneratorType
# Result types that are never streams (is_stream answers False without the ABC check).
PLAIN_RESULTS: Final = frozenset({int, float, str, bytes, bool, type(None), list, dict, tuple})
_PLAIN: Final = PLAIN_RESULTS


class UnsentResult(ResultLimitError):
    """405: what a worker process returned that it could not pickle (too deep) and no
    connection could send either. The handler answers and logs it as the
    connection answers and logs such a value returned on any other executor (sent as a
    ResultLimitError, `exception` says so; read as one)."""

    def __str__(self) -> str:
        return self.message


def worker_failure(method: Method, exc: RemoteFunctionError) -> Exception:
    """What a worker's failure `exc` to run or answer `method` is reported as.

    The coded `pymprpc.errors` exception the function raised (rebuilt: answered with its
    code, as on any executor); for a result too deep to pickle that no connection could
    send either, the 405 the connection answers it with (untyped methods); for a typed
    method whose result the worker could not send back and is not of the declared type
    (a lock where a struct is declared), the ValidationError a wrong result gets on a
    thread, with why it could not be sent; otherwise `exc` itself (a result of the
    declared type that could not be sent is reported as that).
    """
    if exc.coded is not None:
        name, message, exception, data = exc.coded
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, MPRPCError):
            return cls(message, exception=exception, data=data)  # answered with its code
    schema = method.schema
    if exc.refusal is not None and (schema is None or schema.result is ANY):
        # Too deep to pickle and to send: as the connection answers it on any executor.
        return UnsentResult(
            f"{method.name}(): result not delivered: {exc.refusal}", exception="ResultLimitError"
        )
    if exc.unsent_type is None or schema is None or schema.result is ANY:
        return exc
    if exc.unsent_type in _class_names(schema.result):
        return exc  # "expected Node, got Node" would say nothing
    return ValidationError(
        f"{method.name}()", f"expected {schema.result.name}, got {exc.unsent_type} ({exc})"
    )


def _class_names(schema: Schema[Any]) -> frozenset[str]:
    """The names of the Python classes a value of `schema`'s type may have at its top."""
    if isinstance(schema, Optional):
        return _class_names(schema.inner) | {"NoneType"}
    if isinstance(schema, List):
        return frozenset({"list"})
    if isinstance(schema, Map):
        return frozenset({"dict"})
    if isinstance(schema, (Struct, Enum)):
        return frozenset({schema.cls.__name__})
    if schema is FLOAT:
        return frozenset({"float", "int"})
    return frozenset({schema.name})


class Dispatcher:
    """Runs methods of one registry on the right executor."""

    def __init__(self, registry: Registry, executors: Executors) -> None:
        self.registry = registry
        self.executors = executors

    def prepare(self, request: CallRequest) -> tuple[Method, list[Any], dict[str, Any]]:
        """The method for `request` and the arguments to call it with (401/402/406)."""
        method = self.registry.resolve(request.method)
        args, kwargs = method.bind(request.args, request.kwargs)
        return method, args, kwargs

    def run(self, method: Method, args: list[Any], kwargs: dict[str, Any]) -> Awaitable[Any]:
        """Awaitable of the call's wire value, or of an async iterator of wire values for
        a stream."""
        schema = method.schema
        if method.kind is _COROUTINE and (
            schema is None or (schema.result is ANY and schema.stream is None)
        ):
            # Nothing to check or convert: awaited as it is, one coroutine frame less.
            awaitable: Awaitable[Any] = method.func(*args, **kwargs)
            return awaitable
        return self._run(method, args, kwargs)

    async def _run(self, method: Method, args: list[Any], kwargs: dict[str, Any]) -> Any:
        kind = method.kind
        if kind is _COROUTINE:
            return self.encode_result(method, await method.func(*args, **kwargs))
        if kind is _STREAM:
            value = method.func(*args, **kwargs)
        else:
            executor = method.executor or self.executors.default
            if executor is _INLINE:
                value = method.func(*args, **kwargs)
            else:
                try:
                    value = await self.executors.run(executor, method, args, kwargs)
                except RemoteFunctionError as exc:
                    error = worker_failure(method, exc)
                    if error is exc:
                        raise
                    raise error from None
            if type(value) is _CORO:
                # A plain function that returns a coroutine (a decorator's sync wrapper
                # around an `async def`, say): its coroutine runs on the loop, as the
                # function's author meant; sent back as it is it could not be encoded.
                value = await value
            elif type(value) is _GENERATOR:
                value.close()
                if method.schema is not None and method.schema.result is not ANY:
                    raise ValidationError(
                        f"{method.name}()",
                        f"expected {method.schema.result.name}, got generator "
                        "(streams must be async generator functions: async def ... yield)",
                    )
                raise TypeError(_generator_advice(method.name))
        return self.encode_result(method, value)

    @staticmethod
    def encode_result(method: Method, value: Any) -> Any:
        """The wire value of what `method` returned (a stream's items encoded as they
        come): what `run` does after the method returns, for a caller that awaited a
        typed coroutine itself.

        Raises:
            ValidationError: the value is not of the declared result type; the message
                names the method (`add(): expected int, got str`), and the call fails
                with 404 whoever the caller is.
        """
        schema = method.schema
        if schema is None:
            return value
        kind = schema._result_exact
        if type(value) is kind and (kind is not int or INT_MIN <= value <= INT_MAX):
            if schema.stream:
                raise _not_a_stream(method.name, value)
            return value  # of the declared plain type, as encode would return it
        if is_stream(value):
            if schema.stream is False:
                # Refused before its first step: an async generator that never started
                # needs no closing (no finalizer is registered before then).
                raise ValidationError(
                    f"{method.name}()",
                    f"expected {schema.result.name}, got a stream (declared unary: return "
                    "one value)",
                )
            if schema.result is ANY:
                return value
            return encode_async_stream(value, schema.result, f"{method.name}()")
        if schema.stream:
            raise _not_a_stream(method.name, value)
        if schema.result is ANY:
            return value
        try:
            return schema.result.encode(value, f"{method.name}()")
        except ValidationError:
            if type(value) is _CORO:
                value.close()  # refused, never to run: no "never awaited" warning later
            raise


def _not_a_stream(name: str, value: Any) -> ValidationError:
    if type(value) is _CORO:
        value.close()
    return ValidationError(
        f"{name}()",
        f"expected a stream, got {type(value).__name__} (declared a stream: make the method "
        "an async generator, `async def ... yield`)",
    )


def _generator_advice(name: str) -> str:
    return (
        f"{name!r} returned a generator, which cannot be sent: streams must be async "
        "generator functions (async def ... yield)"
    )


def is_stream(value: Any) -> bool:
    if type(value) in _PLAIN:
        return False  # the usual results, without the ABC check
    return inspect.isasyncgen(value) or isinstance(value, AsyncIterator)


def as_call_error(
    exc: BaseException, request: CallRequest, *, frame: bool = True
) -> tuple[MPRPCError, str]:
    """The protocol error for an exception raised by a call, and its traceback text (""
    unless `frame`: formatting it costs more than the rest of a failed call, and only a
    server in debug mode sends it)."""
    text = ""
    if isinstance(exc, MPRPCError) and exc.code is not None:
        # A coded error is the method's answer (a handler may raise ParamError itself).
        # One without a code (a result not of its declared type, or a ConnectionLostError
        # from a client the handler used) failed the method: 404 below, like any other.
        error = exc
        if frame:
            text = traceback_text(exc)
    elif isinstance(exc, RemoteFunctionError):
        error = RPCRuntimeError(exc.args[0], exception=exc.type_name)
        text = exc.frame
    else:
        error = RPCRuntimeError(exception_text(exc), exception=type_name(exc))
        if frame:
            text = traceback_text(exc)
    data = {"METHOD": request.method, "ARGS": request.args, "KWARGS": request.kwargs}
    if error.data:
        data.update(error.data)
    result = copy.copy(error)
    result.id, result.data = request.id, data
    return result, text
