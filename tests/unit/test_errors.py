from __future__ import annotations

import pymprpc.errors as errors
from pymprpc.codes import Code


def test_every_error_code_has_exactly_one_class() -> None:
    error_codes = {c for c in Code if c >= 400}
    assert set(errors.ERRORS_BY_CODE) == {int(c) for c in error_codes}
    for code, cls in errors.ERRORS_BY_CODE.items():
        assert cls.code == code


def test_families() -> None:
    assert issubclass(errors.ParamError, errors.CallError)
    assert issubclass(errors.LoginError, errors.ServerError)
    assert issubclass(errors.ConnectionLostError, ConnectionError)
    assert issubclass(errors.DeadlineExceeded, TimeoutError)


def test_error_for_code_builds_the_mapped_class_with_details() -> None:
    err = errors.error_for_code(404, "boom", exception="ValueError", id="i1", data={"X": 1})
    assert isinstance(err, errors.RPCRuntimeError)
    assert (err.id, err.data, err.exception) == ("i1", {"X": 1}, "ValueError")
    assert str(err) == "ValueError: boom"


def test_unknown_codes_fall_back_by_family() -> None:
    assert type(errors.error_for_code(499)) is errors.CallError
    assert type(errors.error_for_code(599)) is errors.RpcException
    assert "authentication failed" in str(errors.error_for_code(501))


def test_modern_names_are_the_legacy_classes() -> None:
    pairs = {
        "NotFoundError": "NotFindError",
        "AccessDeniedError": "RestrictAccessError",
        "RemoteError": "RPCRuntimeError",
        "UnsupportedSystemMethodError": "UnsupportSysMethodError",
        "CallCancelled": "CancelledError",
        "InternalServerError": "RpcException",
        "DependencyError": "RequirementException",
        "UnavailableError": "RpcUnavailableException",
        "IdleTimeoutError": "TimeoutException",
        "ProtocolError": "ProtocolException",
        "ProtocolSyntaxError": "ProtocolSyntaxException",
        "DeprecatedMethodWarning": "ExpireWarning",
        "DeprecatedStreamWarning": "ExpireStreamWarning",
    }
    for modern, legacy in pairs.items():
        assert getattr(errors, modern) is getattr(errors, legacy), modern
        assert modern in errors.__all__ and legacy in errors.__all__
    # Either spelling catches an error the server reports.
    try:
        raise errors.error_for_code(401, "no method named 'x'")
    except errors.NotFoundError as exc:
        assert isinstance(exc, errors.NotFindError)
    # The modern name says it is not asyncio's CancelledError.
    import asyncio

    assert errors.CallCancelled is not asyncio.CancelledError
    assert issubclass(errors.CallCancelled, errors.CallError)


def test_a_validation_error_survives_copy_and_pickle() -> None:
    """A server copies an error to answer it (a typed result that does not fit raised
    ValidationError, and the copy raised TypeError instead: the call got no answer)."""
    import copy
    import pickle

    from pymprpc.errors import ValidationError

    error = ValidationError("value", "integer out of range")
    error.id = "abc"
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(twin) is ValidationError
        assert (twin.path, twin.problem, twin.id, str(twin)) == (
            "value",
            "integer out of range",
            "abc",
            str(error),
        )
