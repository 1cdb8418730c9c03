"""`Server.atomic_registration()`: a block of registrations that raises leaves the
server's methods and services exactly as they were before it."""

from __future__ import annotations

from typing import Any

import pytest

from pymprpc.server import DuplicateMethodError, Server


def _server() -> Server:
    return Server(("127.0.0.1", 0), max_workers=1)


def _names(server: Server) -> list[str]:
    return [n for n in server._core.registry.names() if not n.startswith("system.")]


def _state(server: Server) -> tuple[dict[str, Any], tuple[Any, ...]]:
    registry = server._core.registry
    return {n: registry.get(n) for n in registry.names()}, server.services


def one() -> int:
    return 1


def two() -> int:
    return 2


class Oops(Exception):
    pass


def test_a_failing_block_takes_back_what_it_registered() -> None:
    server = _server()
    server.register_function(one)
    before = _state(server)
    with pytest.raises(Oops), server.atomic_registration():
        server.register_function(name="a")(two)
        server.register_function(name="b", executor="thread")(two)
        server.register_service("S", ["a", "b"])
        raise Oops
    assert _state(server) == before


def test_a_replaced_method_and_service_come_back() -> None:
    server = _server()
    server.register_function(name="x")(one)
    server.register_service("S", ["x"], version="1")
    before = _state(server)
    original = server._core.registry.get("x")
    with pytest.raises(Oops), server.atomic_registration():
        server.register_function(name="x", replace=True)(two)
        server.register_service("S", ["x"], version="2", replace=True)
        raise Oops
    assert _state(server) == before
    assert server._core.registry.get("x") is original
    assert server.services[0].version == "1"


def test_an_instance_and_its_dotted_names_are_taken_back() -> None:
    class Api:
        def ping(self) -> str:
            return "pong"

        class_attr = 1

    server = _server()
    before = _state(server)
    with pytest.raises(DuplicateMethodError), server.atomic_registration():
        server.register_instance(Api(), allow_dotted_names=True)
        server.register_instance(Api())  # `ping` again
    assert _state(server) == before
    assert server._core.registry._dotted == []


def test_a_successful_block_keeps_everything() -> None:
    server = _server()
    with server.atomic_registration():
        server.register_function(one)
        server.register_service("S", ["one"])
    assert server._core.registry.get("one") is not None
    assert [s.name for s in server.services] == ["S"]


def test_nested_blocks_undo_their_own_part() -> None:
    server = _server()
    with server.atomic_registration():
        server.register_function(one)
        with pytest.raises(Oops), server.atomic_registration():
            server.register_function(two)
            raise Oops
        assert server._core.registry.get("two") is None
    assert _names(server) == ["one"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, Oops])
def test_any_exception_rolls_back_and_propagates(exc: type[BaseException]) -> None:
    server = _server()
    with pytest.raises(exc), server.atomic_registration():
        server.register_function(one)
        raise exc
    assert _names(server) == []


def test_a_method_registered_again_after_a_rollback_is_the_new_one() -> None:
    server = _server()
    with pytest.raises(Oops), server.atomic_registration():
        server.register_function(name="f")(one)
        raise Oops
    server.register_function(name="f")(two)
    method = server._core.registry.get("f")
    assert method is not None and method.func is two
