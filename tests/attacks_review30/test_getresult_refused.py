"""Contract 3: system.getresult of a delay()ed call the server refused (kept_results all
still running) raises ResultLimitError (405, refused when it arrived, never ran), once;
then "unknown". Per account; bounded."""

from __future__ import annotations

import time
from typing import Any

import pytest
from attacks_review29._kit import Raw

from pymprpc import errors
from pymprpc.client import RPC

from ._kit import serving


def refused_id(rpc: RPC) -> str:
    """A delay() the server refuses: its one kept slot holds a running call."""
    return rpc.delay("echo", "refused")


def test_refused_then_unknown_and_normal_results_unchanged() -> None:
    with serving(kept_results=1) as (running, _), RPC(running.url) as rpc:
        busy = rpc.delay("slow", 0.5, "v")
        bad = refused_id(rpc)
        time.sleep(0.1)
        with pytest.raises(errors.ResultLimitError, match="refused when it arrived"):
            rpc.system.getresult(bad)
        with pytest.raises(errors.RequestError, match="unknown"):
            rpc.system.getresult(bad)
        assert rpc.system.getresult(busy) == "v"
        with pytest.raises(errors.RequestError, match="unknown, already fetched"):
            rpc.system.getresult(busy)


def test_refusal_is_per_account() -> None:
    auth = [("a", "pa"), ("b", "pb")]
    with serving(kept_results=1, auth=auth) as (running, _):
        url = running.url.replace("tcp://", "tcp://{}@")
        with RPC(url.format("a:pa")) as a, RPC(url.format("b:pb")) as b:
            a.delay("slow", 0.5)
            bad = refused_id(a)
            time.sleep(0.1)
            with pytest.raises(errors.RequestError) as info:
                b.system.getresult(bad)
            assert not isinstance(info.value, errors.ResultLimitError)
            with pytest.raises(errors.ResultLimitError):
                a.system.getresult(bad)


def test_refusal_survives_a_reconnect_of_the_same_account() -> None:
    with serving(kept_results=1, auth=[("a", "pa")]) as (running, _):
        url = running.url.replace("tcp://", "tcp://a:pa@")
        with RPC(url) as a:
            a.delay("slow", 0.5)
            bad = refused_id(a)
            time.sleep(0.1)
        with RPC(url) as again, pytest.raises(errors.ResultLimitError, match="never ran"):
            again.system.getresult(bad)


def test_another_account_cannot_evict_a_refusal() -> None:
    auth = [("a", "pa"), ("b", "pb")]
    with serving(kept_results=1, auth=auth) as (running, _):
        url = running.url.replace("tcp://", "tcp://{}@")
        with RPC(url.format("a:pa")) as a, RPC(url.format("b:pb")) as b:
            b.delay("slow", 3)
            mine = refused_id(b)
            a.delay("slow", 3)
            for _ in range(1100):
                a.delay("echo", 0)
            a.echo(0)  # the refusals have been answered
            with pytest.raises(errors.ResultLimitError):
                b.system.getresult(mine)


def test_hostile_client_memory_bounded() -> None:
    """6,000 refused calls with 256-character IDs: held as they came, about 3 MB; the
    records are bounded (1,024 per scope), about 0.4 MB."""
    import gc
    import tracemalloc

    with serving(kept_results=1) as (running, _), Raw(running.server.port) as raw:
        raw.send({"MPRPC": "0.1", "ID": "busy", "METHOD": "slow", "ARGS": [30], "RETURN": False})
        tracemalloc.start()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for batch in range(12):  # (in batches: the server stops reading a peer that
            for i in range(batch * 500, batch * 500 + 500):  # does not read its replies)
                raw.send(
                    {
                        "MPRPC": "0.1",
                        "ID": f"{i:0256d}",
                        "METHOD": "echo",
                        "ARGS": [],
                        "RETURN": False,
                    }
                )
            for _ in range(500):
                raw.recv()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < 2_000_000, grown


def reply_for(raw: Raw, id: str) -> dict[str, Any]:
    while True:
        got = raw.recv()
        message = got.get("MESSAGE")
        if isinstance(message, dict) and message.get("ID") == id:
            return got


def test_refusal_of_a_reused_id_does_not_outlive_its_later_run() -> None:
    with serving(kept_results=1) as (running, _), Raw(running.server.port) as raw:
        call = {"MPRPC": "0.1", "METHOD": "slow", "RETURN": False}
        raw.send({**call, "ID": "busy", "ARGS": [0.3, "b"]})
        raw.send({**call, "ID": "X", "ARGS": [0, "first"]})
        assert reply_for(raw, "X")["CODE"] == 405
        time.sleep(0.5)
        raw.send({**call, "ID": "X", "ARGS": [0, "second"]})
        get = {"MPRPC": "0.1", "METHOD": "system.getresult", "ARGS": ["X"]}
        raw.send({**get, "ID": "g1"})
        assert reply_for(raw, "g1")["MESSAGE"]["RESULT"] == "second"
        raw.send({**get, "ID": "g2"})
        assert reply_for(raw, "g2")["CODE"] == 400
