"""Typed results (mprpcgen's calculator) not of their declared type: the server refuses
each exactly as documented (404 ValidationError naming the method) whether the call took
the fast lane (one call per read, or pipelined in one read) or the general path (a server
with an interceptor); the typed async client raises ValidationError for a wrong result
whichever way the reply was read; a result of the right type, at the range's edges, comes
back unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from attacks_client.test_fast_lane_contract import Fake, FakeServer, ok
from attacks_server.fastlane_kit import Wire, passthrough, run_on
from servicers import StubCalculator

from generated_examples.calculator import AsyncCalculatorClient, register_calculator
from generated_examples.geometry.types import Shape
from pymprpc.errors import ValidationError
from pymprpc.server import Server

pytestmark = pytest.mark.timeout(60)

# (value slow_add returns, whether it is a valid `int` result)
RESULTS: list[tuple[Any, bool]] = [
    (3, True),
    (True, False),
    (False, False),
    (2**63 - 1, True),
    (2**64 - 1, True),
    (2**64, False),
    (-(2**63), True),
    (-(2**63) - 1, False),
    ("3", False),
    (3.0, False),
    (None, False),
    ([3], False),
    (b"3", False),
]


class Wrong(StubCalculator):
    async def slow_add(self, a: int, b: int = 1) -> Any:
        return RESULTS[a][0]

    async def count(self, n: int) -> Any:
        for i in range(n):
            yield RESULTS[i][0]

    async def translate(self, shape: Shape, dx: float = 0.0, dy: float = 0.0) -> Any:
        return [shape, "x", 1, None][int(dx)]


def _id(i: int) -> str:
    return f"c0ffee00-0000-4000-8000-{i:012d}"  # laid out as our client writes IDs


# Arguments of the wrong type or count (each refused before the handler runs).
BAD_ARGS: list[list[Any]] = [
    ["1", 2],
    [True, 1],
    [1.0, 1],
    [None, 1],
    [1, 2, 3],
    [],
    [[1], 1],
]


def _calls() -> list[dict[str, Any]]:
    calls = [
        {"MPRPC": "0.1", "ID": _id(i), "METHOD": "slow_add", "ARGS": [i, 0]}
        for i in range(len(RESULTS))
    ]
    calls += [
        {"MPRPC": "0.1", "ID": _id(100 + i), "METHOD": "slow_add", "ARGS": args}
        for i, args in enumerate(BAD_ARGS)
    ]
    return calls


def _view(m: Any) -> Any:
    msg = m.get("MESSAGE") or {}
    return (
        m.get("CODE"),
        msg.get("ID"),
        msg.get("RESULT"),
        msg.get("EXCEPTION"),
        msg.get("MESSAGE"),
    )


async def _replies(interceptors: list[Any], pipelined: bool, extra_conn: bool) -> list[Any]:
    server = Server(("127.0.0.1", 0), interceptors=interceptors)
    register_calculator(server, Wrong())
    await server.start()
    try:
        port = server.address[1]
        other = await Wire.open(port) if extra_conn else None  # held replies (PassWrites)
        wire = await Wire.open(port)
        calls = _calls()
        if pipelined:
            got = await wire.roundtrip(calls)
        else:
            got = [(await wire.roundtrip([c]))[0] for c in calls]
        await wire.close()
        if other is not None:
            await other.close()
        return sorted((_view(m) for m in got), key=lambda v: str(v[1]))
    finally:
        await server.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("extra_conn", [False, True])
def test_wrong_results_are_refused_alike_on_the_fast_lane_and_the_general_path(
    loop: str, pipelined: bool, extra_conn: bool
) -> None:
    fast = run_on(loop, lambda: _replies([], pipelined, extra_conn))
    general = run_on(loop, lambda: _replies([passthrough], pipelined, extra_conn))
    assert fast == general
    for code, _, _, exc, message in fast[len(RESULTS) :]:
        assert (code, exc) == (402, "ParamError"), (code, exc, message)
    for (value, valid), (code, _, result, exc, message) in zip(
        RESULTS, fast[: len(RESULTS)], strict=True
    ):
        if valid:
            assert (code, type(result), result) == (200, int, value)
        else:
            assert (code, exc) == (404, "ValidationError"), (value, code, exc, message)
            assert "slow_add" in message


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("read", ["alone", "together", "split"])
def test_the_typed_client_refuses_a_wrong_result_however_it_was_read(loop: str, read: str) -> None:
    async def script(f: Fake) -> None:
        while True:
            c = await f.next_call()
            if c["METHOD"] != "slow_add":
                f.send(ok(c["ID"], None))
                continue
            reply = ok(c["ID"], RESULTS[c["ARGS"][0]][0])
            if read == "together":  # with a reply for no call in the same read
                f.send(ok("unknown-id", 0), reply)
            elif read == "split":
                await f.send_split(reply)
            else:
                f.send(reply)

    async def main() -> None:
        fake = FakeServer(script)
        port = await fake.start()
        try:
            async with AsyncCalculatorClient(f"tcp://127.0.0.1:{port}") as calc:
                for i, (value, valid) in enumerate(RESULTS):
                    if type(value) is int and not -(2**63) <= value < 2**64:
                        continue  # MessagePack has no such int: no server can send it
                    if valid:
                        got = await calc.slow_add(i, 0)
                        assert (type(got), got) == (int, value)
                    else:
                        with pytest.raises(ValidationError, match="slow_add"):
                            await calc.slow_add(i, 0)
                assert await calc.slow_add(0, 0) == 3  # the connection is still fine
        finally:
            await fake.close()

    run_on(loop, main)
