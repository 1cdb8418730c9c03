"""A servicer method whose parameters are not named as the interface declares them is
refused when registered, naming the method and what to do (review 21: it registered,
then every call failed with a TypeError, 404, as the server passes typed arguments by
name); nothing of the service is registered then."""

from __future__ import annotations

from typing import Any

import pytest
from servicers import StubCalculator

from generated_examples.calculator.server import register_calculator
from pymprpc import Server
from pymprpc.testing import sync_client_for

pytestmark = pytest.mark.timeout(30)


class Renamed(StubCalculator):
    def add(self, x: int, b: int) -> int:  # type: ignore[override]
        return x + b


class PositionalOnly(StubCalculator):
    def add(self, a: int, b: int, /) -> int:  # type: ignore[override]
        return a + b


class CatchAll(StubCalculator):
    def add(self, *args: Any, **kwargs: Any) -> int:
        return sum(kwargs.values()) + sum(args)


@pytest.mark.parametrize("servicer", [Renamed(), PositionalOnly()], ids=["renamed", "pos-only"])
def test_a_method_that_cannot_take_its_parameters_by_name_is_refused(servicer: Any) -> None:
    server = Server(("127.0.0.1", 0))
    with pytest.raises(TypeError) as caught:
        register_calculator(server, servicer)
    text = str(caught.value)
    assert text.startswith("add: ") and "(a, b)" in text and "name its parameters" in text
    # Nothing of it was registered: the same server takes a right servicer afterwards.
    register_calculator(server, StubCalculator())
    with sync_client_for(server) as rpc:
        assert rpc.add(2, 3) == 5


def test_methods_that_take_them_by_name_serve() -> None:
    for servicer in (StubCalculator(), CatchAll()):
        server = Server(("127.0.0.1", 0))
        register_calculator(server, servicer)
        with sync_client_for(server) as rpc:
            assert rpc.add(2, 3) == 5
