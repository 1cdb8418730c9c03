"""Every kind of plain function a server runs, called with positional arguments by its
exact name (the pool's fast lane when the server has no interceptors) and otherwise,
must answer exactly as on a server with a pass-through interceptor (the general path),
and as the README says: on asyncio and uvloop, one call per read, pipelined in one
write, and laid out as pymprpc's client writes a call (36-character IDs)."""

from __future__ import annotations

from typing import Any

import pytest
from attacks_server.fastlane_kit import ALL, call, run_on

from .pool_kit import by_id, diff, open_wire, serving

pytestmark = pytest.mark.timeout(120)

BIG = b"z" * 300_000

# (id, method, args, extra keys); the id is the key of the expected outcome below.
CALLS: list[tuple[str, str, list[Any], dict[str, Any]]] = [
    ("add1", "add", [2, 3], {}),
    ("add2", "add", [2], {}),
    ("add3", "add", [], {}),
    ("add4", "add", [1, 2, 3], {}),
    ("add5", "add", ["x", 1], {}),
    ("add6", "add", [2], {"KWARGS": {"b": 5}}),
    ("add7", "add", [], {"KWARGS": {"a": 1, "c": 5}}),
    ("star1", "star", [], {}),
    ("star2", "star", [1, 2, 3], {}),
    ("hs1", "head_star", [1, 2], {}),
    ("hs2", "head_star", [], {}),
    ("kw1", "kwonly", [1], {}),
    ("kw2", "kwonly", [1, 2], {}),
    ("kw3", "kwonly", [1], {"KWARGS": {"k": 5}}),
    ("kwr1", "kwonly_required", [1], {}),
    ("po1", "posonly", [1], {}),
    ("po2", "posonly", [1, 2], {}),
    ("po3", "posonly", [], {"KWARGS": {"a": 1}}),
    ("vk1", "varkw", [1], {}),
    ("vk2", "varkw", [1], {"KWARGS": {"z": 2}}),
    ("na1", "noargs", [], {}),
    ("na2", "noargs", [1], {}),
    ("dl1", "deco_logged", [2], {}),
    ("dl2", "deco_logged", [2, 4], {}),
    ("dl3", "deco_logged", [1, 2, 3], {}),
    ("dl4", "deco_logged", [], {}),
    ("du1", "deco_unit", [2], {}),
    ("du2", "deco_unit", [2], {"KWARGS": {"unit": "m"}}),
    ("du3", "deco_unit", [1, 2, 3], {}),
    ("ds1", "deco_stacked", [2], {}),
    ("ds2", "deco_stacked", [2, 2], {}),
    ("df1", "deco_fixed", [1], {}),
    ("df2", "deco_fixed", [1, 2], {}),
    ("cf1", "ctx_fields", [], {}),
    ("cf2", "ctx_fields", [], {"METADATA": {"a": "b"}}),
    ("cf3", "ctx_fields", [], {"DEADLINE": 60}),
    ("ct1", "ctx_twice", [], {}),
    ("cth", "ctx_from_thread", [], {}),
    ("sm1", "set_meta", ["v"], {}),
    ("sm2", "set_meta_then_raise", ["w"], {}),
    ("sm3", "set_meta_many", [3], {}),
    ("rc1", "returns_coro", [1], {}),
    ("rg1", "returns_gen", [3], {}),
    ("rl1", "returns_lock", [], {}),
    ("rn1", "returns_noload", [], {}),
    ("rs1", "returns_set", [], {}),
    ("rb1", "returns_bigint", [], {}),
    ("rnone", "returns_none", [], {}),
    ("rby1", "returns_bytes", [10], {}),
    ("rby2", "returns_bytes", [300_000], {}),
    ("ai1", "arg_info", [BIG], {}),
    ("ai2", "arg_info", [b"ab"], {}),
    ("r_value", "raises", ["value"], {}),
    ("r_boom", "raises", ["boom"], {}),
    ("r_exit", "raises", ["exit"], {}),
    ("r_exit0", "raises", ["exit0"], {}),
    ("r_int", "raises", ["interrupt"], {}),
    ("r_custom", "raises", ["custom"], {}),
    ("r_genexit", "raises", ["genexit"], {}),
    ("r_stopiter", "raises", ["stopiter"], {}),
    ("r_cancelled", "raises", ["cancelled"], {}),
    ("r_timeout", "raises", ["timeout"], {}),
    ("r_unprintable", "raises", ["unprintable"], {}),
    ("r_withlock", "raises", ["withlock"], {}),
    ("r_recursion", "raises", ["recursion"], {}),
    ("r_key", "raises", ["nope"], {}),
    ("wh1", "where", [], {}),
    ("ta1", "typed_add", [1, 2], {}),
    ("ta2", "typed_add", ["1", 2], {}),
    ("ta3", "typed_add", [1], {}),
    ("ta4", "typed_add", [2**63, 1], {}),
    ("ta5", "typed_add", [2**64 - 1, 1], {}),
    ("ta6", "typed_add", [1.0, 2], {}),
    ("ta7", "typed_add", [True, 2], {}),
    ("ta8", "typed_add", [1], {"KWARGS": {"b": 2}}),
    ("tl1", "typed_len", ["abc"], {}),
    ("tl2", "typed_len", [b"abc"], {}),
    ("tw1", "typed_wrong", [5], {}),
    ("tco", "typed_coro", [5], {}),
    ("pa1", "p_add", [1, 2], {}),
    ("pw1", "p_where2", [], {}),
    ("pc1", "p_coro", [1], {}),
    ("t_add", "t_add", [1, 2], {}),
    ("t_where", "t_where", [], {}),
    ("t_ctx", "t_ctx", [], {}),
    ("t_coro", "t_coro", [7], {}),
    ("t_gen", "t_gen", [2], {}),
    ("t_raises", "t_raises", ["exit"], {}),
    ("t_meta", "t_meta", ["tm"], {}),
    ("i_add", "i_add", [1, 2], {}),
    ("i_where", "i_where", [], {}),
    ("i_ctx", "i_ctx", [], {}),
    ("i_coro", "i_coro", [7], {}),
    ("i_gen", "i_gen", [2], {}),
    ("i_raises", "i_raises", ["value"], {}),
    ("i_meta", "i_meta", ["im"], {}),
    ("a_where", "a_where", [], {}),
    ("a_ctx", "a_ctx", [], {}),
    ("a_coro", "a_coro", [7], {}),
    ("a_add", "a_add", [1, 2], {}),
    ("x_where", "x_where", [], {}),
    ("x_coro", "x_coro", [7], {}),
    ("x_add", "x_add", [1, 2], {}),
    ("c_where", "c_where", [], {}),
    ("c_boom", "c_boom", [], {}),
    ("c_ctx", "c_ctx", [], {}),
    ("c_dec1", "c_decorated", [1], {}),
    ("c_dec2", "c_decorated", [1, 2, 3], {}),
    ("p_where", "p_where", [], {}),
    ("p_boom", "p_boom", [], {}),
    ("p_ctx", "p_ctx", [], {}),
    ("p_dec1", "p_decorated", [1], {}),
    ("p_dec2", "p_decorated", [1, 2, 3], {}),
    ("p_bump", "p_bump", [0], {}),
    ("cobj", "cobj", [1], {}),
    ("cobj_p", "cobj_p", [1], {}),
    ("cobj_p2", "cobj_p", [], {}),
    ("acobj", "acobj", [1], {}),
    ("part1", "part_p", [5], {}),
    ("part2", "part_p", [1, 2, 3], {}),
    ("bm1", "bm_p", [0], {}),
    ("old", "old_add", [1, 2], {}),
    ("nf", "no_such_method", [1], {}),
    ("die1", "die", [], {}),
    ("kill1", "kill_self", [], {}),
    ("after", "add", [40, 2], {}),
]

CTX = {
    "deadline_set": False,
    "metadata": {},
    "peer_host": "127.0.0.1",
    "remaining_set": False,
    "returns": True,
    "streaming": False,
    "user": None,
}

# What the README promises, by id: a code, and the result when it is a success.
EXPECTED: dict[str, tuple[int, Any] | int] = {
    "add1": (200, 5),
    "add2": (200, 3),
    "add3": 402,
    "add4": 402,
    "add5": 404,
    "add6": (200, 7),
    "add7": 402,
    "star1": (200, ["star", []]),
    "star2": (200, ["star", [1, 2, 3]]),
    "hs1": (200, ["head_star", 1, [2]]),
    "hs2": 402,
    "kw1": (200, ["kwonly", 1, 2]),
    "kw2": 402,
    "kw3": (200, ["kwonly", 1, 5]),
    "kwr1": 402,
    "po1": (200, ["posonly", 1, 1]),
    "po2": (200, ["posonly", 1, 2]),
    "po3": 402,
    "vk1": (200, ["varkw", 1, []]),
    "vk2": (200, ["varkw", 1, [["z", 2]]]),
    "na1": (200, "noargs"),
    "na2": 402,
    "dl1": (200, ["logged", 6]),
    "dl2": (200, ["logged", 8]),
    "dl3": 402,
    "dl4": 402,
    "du1": (200, [6, ""]),
    "du2": (200, [6, "m"]),
    "du3": 402,
    "ds1": (200, ["logged", [6, ""]]),
    "ds2": (200, ["logged", [4, ""]]),
    "df1": (200, ["fixed", [1, 100]]),
    "df2": 402,
    "cf1": (200, {**CTX, "id": "cf1", "method": "ctx_fields"}),
    "cf2": (200, {**CTX, "id": "cf2", "method": "ctx_fields", "metadata": {"a": "b"}}),
    "cf3": (
        200,
        {**CTX, "id": "cf3", "method": "ctx_fields", "deadline_set": True, "remaining_set": True},
    ),
    "ct1": (200, ["ct1", "ct1", "ctx_twice"]),
    "sm1": (200, "v"),
    "sm2": 404,
    "sm3": (200, 3),
    "rc1": 404,
    "rg1": 404,
    "rl1": 404,
    "rn1": 404,
    "rs1": 405,  # ResultLimitError: cannot encode as MessagePack
    "rb1": 405,
    "rnone": (200, None),
    "rby1": (200, b"y" * 10),
    "rby2": (200, b"y" * 300_000),
    "ai1": (200, ["bytes", 300_000]),
    "ai2": (200, ["bytes", 2]),
    "r_value": 404,
    "r_boom": 404,
    "r_exit": 404,
    "r_exit0": 404,
    "r_int": 404,
    "r_custom": 404,
    "r_genexit": 404,
    "r_stopiter": 404,
    "r_timeout": 404,
    "r_unprintable": 404,
    "r_withlock": 404,
    "r_recursion": 404,
    "r_key": 404,
    "wh1": (200, ["main-thread", "other-process"]),
    "ta1": (200, 3),
    "ta2": 402,
    "ta3": 402,
    "ta4": (200, 2**63 + 1),
    "ta5": 404,
    "ta6": 402,
    "ta7": 402,
    "ta8": (200, 3),
    "tl1": (200, 3),
    "tl2": 402,
    "tw1": 404,
    "tco": 404,
    "pa1": (200, 3),
    "pw1": (200, ["main-thread", "other-process"]),
    "pc1": 404,
    "t_add": (200, 3),
    "t_where": (200, ["other", "server-process"]),
    "t_ctx": (200, {**CTX, "id": "t_ctx", "method": "t_ctx"}),
    "t_coro": (200, ["awaited", 7]),
    "t_gen": 404,
    "t_raises": 404,
    "t_meta": (200, "tm"),
    "i_add": (200, 3),
    "i_where": (200, ["main-thread", "server-process"]),
    "i_ctx": (200, {**CTX, "id": "i_ctx", "method": "i_ctx"}),
    "i_coro": (200, ["awaited", 7]),
    "i_gen": 404,
    "i_raises": 404,
    "i_meta": (200, "im"),
    "a_where": (200, ["other", "server-process"]),
    "a_ctx": (200, {**CTX, "id": "a_ctx", "method": "a_ctx"}),
    "a_coro": (200, ["awaited", 7]),
    "a_add": (200, 3),
    "x_where": (200, ["main-thread", "other-process"]),
    "x_coro": 404,
    "x_add": (200, 3),
    "c_where": (200, ["other", "server-process"]),
    "c_boom": 404,
    "c_ctx": (200, {**CTX, "id": "c_ctx", "method": "c_ctx"}),
    "c_dec1": (200, ["logged", ["decorated", 1, 0]]),
    "c_dec2": 402,
    "p_where": (200, ["main-thread", "other-process"]),
    "p_boom": 404,
    "p_ctx": (200, {**CTX, "id": "p_ctx", "method": "p_ctx"}),
    "p_dec1": (200, ["logged", ["decorated", 1, 0]]),
    "p_dec2": 402,
    "p_bump": (200, 0),
    "cobj": (200, ["callable", 1]),
    "cobj_p": (200, ["callable", 1]),
    "cobj_p2": 402,
    "acobj": (200, ["async-callable", 1]),
    "part1": (200, 15),
    "part2": 402,
    "bm1": (200, 0),
    "old": (300, 3),  # deprecated
    "nf": 401,
    "die1": 404,
    "kill1": 404,
    "after": (200, 42),
}


def _msg(cid: str, method: str, args: list[Any], extra: dict[str, Any], pad: bool) -> Any:
    return call(cid.rjust(36, "-") if pad else cid, method, *args, **extra)


async def _run(general: bool, mode: str, loop_default: Any = None) -> dict[str, Any]:
    pad = mode.startswith("laid-out")
    async with serving(general, default=loop_default) as (_server, port):
        w = await open_wire(port, features=None if mode.startswith("legacy") else ALL)
        replies = []
        if mode.endswith("pipelined"):
            w.write([_msg(*c, pad) for c in CALLS])
            replies = await w.recv_n(len(CALLS))
        else:
            for c in CALLS:
                replies += await w.roundtrip([_msg(*c, pad)])
        await w.close()
    return by_id(replies)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _unpad(value: Any) -> Any:
    """A result with each padded (36-character) ID given back its short form."""
    if isinstance(value, str) and len(value) == 36 and value.startswith("-"):
        return value.lstrip("-")
    if isinstance(value, list):
        return [_unpad(v) for v in value]
    if isinstance(value, dict):
        return {k: _unpad(v) for k, v in value.items()}
    return value


def _check_contract(seen: dict[str, Any]) -> dict[str, Any]:
    wrong = {}
    for key, want in EXPECTED.items():
        got = seen.get(key)
        if got is None:
            wrong[key] = ("no reply", want)
            continue
        got_code = got[0]
        body = dict(got[2])
        if isinstance(want, int):
            if got_code != want:
                wrong[key] = (got_code, body, "want", want)
        elif (got_code, _unpad(body.get("RESULT"))) != want:
            wrong[key] = (got_code, body, "want", want)
    return wrong


@pytest.mark.parametrize(
    "mode",
    ["one-per-read", "laid-out", "pipelined", "laid-out-pipelined", "legacy", "legacy-pipelined"],
)
def test_every_plain_function_answers_alike_with_and_without_interceptors(
    loop: str, mode: str
) -> None:
    async def main() -> None:
        fast = await _run(False, mode)
        general = await _run(True, mode)
        assert diff(fast, general) == {}

    run_on(loop, main, timeout=110)


@pytest.mark.parametrize("mode", ["one-per-read", "laid-out-pipelined"])
def test_every_plain_function_answers_as_the_readme_says(loop: str, mode: str) -> None:
    async def main() -> None:
        fast = await _run(False, mode)
        assert _check_contract(fast) == {}

    run_on(loop, main, timeout=110)
