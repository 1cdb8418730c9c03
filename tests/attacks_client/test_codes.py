"""Error codes with and without IDs, duplicate replies, stream oddities: same on both."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .fake import HANG, Peer, both


def scripted(answer: Any) -> Any:
    """answer(peer, call, n) handles the n-th call."""

    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        n = 0
        while (call := peer.next_call()) is not None:
            answer(peer, call, n)
            n += 1

    return script


def sync_seq(k: int) -> Any:
    def run(rpc: Any) -> Any:
        out = []
        for i in range(k):
            try:
                out.append(("ok", rpc.f(i)))
            except Exception as e:  # noqa: BLE001
                out.append((type(e).__name__, str(e)))
        return out

    return run


def async_seq(k: int) -> Any:
    async def run(rpc: Any) -> Any:
        out = []
        for i in range(k):
            try:
                out.append(("ok", await rpc.f(i)))
            except Exception as e:  # noqa: BLE001
                out.append((type(e).__name__, str(e)))
        return out

    return run


def err(code: int, with_id: bool = True, **fields: Any) -> Any:
    def answer(peer: Peer, call: dict[str, Any], n: int) -> None:
        if n == 0:
            body: dict[str, Any] = {"ID": call["ID"], **fields} if with_id else {}
            m: dict[str, Any] = {"MPRPC": "0.1", "CODE": code}
            if body:
                m["MESSAGE"] = body
            peer.send(m)
        else:
            peer.reply(call, call.get("ARGS"))

    return answer


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "code", [400, 401, 402, 403, 404, 405, 406, 407, 408, 500, 501, 502, 503, 504, 505, 506]
)
def test_error_with_id_fails_one_call_connection_usable(code: int) -> None:
    a, b = both(
        scripted(err(code, EXCEPTION="ValueError", MESSAGE="bad thing", DATA={"METHOD": "f"})),
        sync_seq(2),
        async_seq(2),
        limit=8,
        timeout=3,
    )
    assert a != HANG and b != HANG, (a, b)
    assert a[1][1] == ("ok", [1]), f"connection not usable after {code} with ID: {a}"
    assert a == b, f"sync={a}\nasync={b}"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("code", [500, 501, 502, 503, 504, 505, 506, 599])
def test_5xx_without_id_fails_all_pending(code: int) -> None:
    def script(peer: Peer) -> None:
        if peer.login() is None:
            return
        calls = [peer.next_call(), peer.next_call()]
        if None in calls:
            return
        peer.send({"MPRPC": "0.1", "CODE": code})

    async def act(rpc: Any) -> Any:
        res = await asyncio.gather(rpc.f(1), rpc.f(2), return_exceptions=True)
        return [(type(r).__name__, str(r)) for r in res]

    def sync(rpc: Any) -> Any:
        import threading

        res: list[Any] = [None, None]

        def one(i: int) -> None:
            try:
                res[i] = ("ok", rpc.f(i))
            except Exception as e:  # noqa: BLE001
                res[i] = (type(e).__name__, str(e))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(6)
        return res

    a, b = both(script, sync, act, limit=8, timeout=4)
    assert a != HANG and b != HANG, (a, b)
    names = {o[0] for o in a[1]}
    assert len(names) == 1 and "DeadlineExceeded" not in names and None not in a[1], a
    assert a == b, f"sync={a}\nasync={b}"


@pytest.mark.timeout(40)
def test_duplicate_replies_do_not_misroute() -> None:
    def answer(peer: Peer, call: dict[str, Any], n: int) -> None:
        peer.reply(call, call.get("ARGS"))
        peer.reply(call, "dup")
        peer.send({"MPRPC": "0.1", "CODE": 404, "MESSAGE": {"ID": call["ID"], "EXCEPTION": "E"}})

    a, b = both(scripted(answer), sync_seq(3), async_seq(3), limit=8, timeout=3)
    assert a == ("ok", [("ok", [0]), ("ok", [1]), ("ok", [2])]), a
    assert b == a, (a, b)


@pytest.mark.timeout(40)
def test_stream_oddities_201_twice_202_after_206() -> None:
    def answer(peer: Peer, call: dict[str, Any], n: int) -> None:
        cid = call["ID"]
        if call["METHOD"] == "s":
            for code, body in [
                (201, {}),
                (201, {}),
                (202, {"RESULT": 1}),
                (206, {}),
                (202, {"RESULT": 2}),
                (206, {}),
            ]:
                peer.send({"MPRPC": "0.1", "CODE": code, "MESSAGE": {"ID": cid, **body}})
        else:
            peer.reply(call, call.get("ARGS"))

    def sync(rpc: Any) -> Any:
        try:
            items: Any = list(rpc.s())
        except Exception as e:  # noqa: BLE001
            items = type(e).__name__
        try:
            return items, rpc.f(9)
        except Exception as e:  # noqa: BLE001
            return items, type(e).__name__

    async def act(rpc: Any) -> Any:
        try:
            items: Any = [i async for i in await rpc.s()]
        except Exception as e:  # noqa: BLE001
            items = type(e).__name__
        try:
            return items, await rpc.f(9)
        except Exception as e:  # noqa: BLE001
            return items, type(e).__name__

    a, b = both(scripted(answer), sync, act, limit=8, timeout=3)
    assert a != HANG and b != HANG, (a, b)
    assert a == b, (a, b)


@pytest.mark.timeout(40)
def test_error_mid_stream_same() -> None:
    def answer(peer: Peer, call: dict[str, Any], n: int) -> None:
        cid = call["ID"]
        peer.send({"MPRPC": "0.1", "CODE": 201, "MESSAGE": {"ID": cid}})
        peer.send({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": cid, "RESULT": 1}})
        peer.send(
            {
                "MPRPC": "0.1",
                "CODE": 404,
                "MESSAGE": {"ID": cid, "EXCEPTION": "KeyError", "MESSAGE": "k"},
            }
        )

    def sync(rpc: Any) -> Any:
        got = []
        try:
            for i in rpc.s():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append((type(e).__name__, str(e)))
        return got

    async def act(rpc: Any) -> Any:
        got = []
        try:
            async for i in await rpc.s():
                got.append(i)
        except Exception as e:  # noqa: BLE001
            got.append((type(e).__name__, str(e)))
        return got

    a, b = both(scripted(answer), sync, act, limit=8, timeout=3)
    assert a[0] == "ok" and a[1][0] == 1 and a[1][1][0] == "RPCRuntimeError", a
    assert a == b, (a, b)
