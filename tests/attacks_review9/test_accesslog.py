"""AccessLog: one record per call, whose code is what the client was answered."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from attacks_review9.kit import Raw, new_server, serving, wait_until
from pymprpc import RPC, Server
from pymprpc.interceptors import AccessLog

pytestmark = pytest.mark.timeout(30)

RECORD = re.compile(
    r"^(?P<method>\S+) id=(?P<id>\S+) peer=(?P<peer>\S+) user=(?P<user>\S+) -> (?P<code>\d+) "
    r"in [\d.]+ms(?: items=(?P<items>\d+))?$"
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = RECORD.match(record.getMessage())
        assert match, record.getMessage()
        self.records.append(match.groupdict())

    def by_id(self, id: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["id"] == id]


@pytest.fixture
def access() -> Any:
    logger = logging.getLogger("pymprpc.access")
    handler = Records()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def build(**options: Any) -> Server:
    server = new_server(interceptors=[AccessLog()], **options)

    @server.register_function()
    async def ping() -> str:
        return "pong"

    @server.register_function()
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    @server.register_function()
    async def unencodable() -> Any:
        return object()

    @server.register_function()
    async def numbers() -> Any:
        yield 1
        yield 2

    @server.register_function()
    async def bad_second_item() -> Any:
        yield 1
        yield object()
        yield 3

    return server


def test_record_fields(access: Records) -> None:
    with serving(build(auth=[("bob", "pw")])) as running, Raw(running.server.port) as raw:
        raw.login("bob", "pw")
        raw.call("r1", "ping")
        assert raw.recv()["CODE"] == 200
        raw.call("r2", "numbers")
        while raw.recv()["CODE"] != 206:
            pass
        assert wait_until(lambda: len(access.records) == 2)
    first, second = access.records
    assert first["method"] == "ping" and first["user"] == "bob" and first["code"] == "200"
    assert first["peer"].startswith("127.0.0.1:")
    assert second["code"] == "201" and second["items"] == "2"


def test_deadline_exceeded_is_logged_as_408(access: Records) -> None:
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login(features=["deadline", "cancel"])
        raw.call("d1", "slow", DEADLINE=0.1)
        assert raw.recv()["CODE"] == 408
        assert wait_until(lambda: access.by_id("d1"))
    assert access.by_id("d1")[0]["code"] == "408"


def test_undeliverable_result_is_logged_as_405(access: Records) -> None:
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login()
        raw.call("u1", "unencodable")
        assert raw.recv()["CODE"] == 405
        assert wait_until(lambda: access.by_id("u1"))
    assert access.by_id("u1")[0]["code"] == "405"


def test_stream_with_undeliverable_item_is_logged_as_405(access: Records) -> None:
    with serving(build()) as running, Raw(running.server.port) as raw:
        raw.login()
        raw.call("s1", "bad_second_item")
        codes = [raw.recv()["CODE"] for _ in range(3)]
        assert codes == [201, 202, 405]
        assert wait_until(lambda: access.by_id("s1"))
    assert access.by_id("s1")[0]["code"] == "405"


def test_oneway_stream_gets_its_record(access: Records) -> None:
    with serving(build()) as running, RPC(running.url, timeout=5) as rpc:
        rpc.notify("numbers")
        rpc.notify("ping")
        assert rpc.ping() == "pong"
        time.sleep(0.3)
    methods = [r["method"] for r in access.records]
    assert methods.count("ping") == 2
    assert methods.count("numbers") == 1


def test_one_record_per_call_under_load(access: Records) -> None:
    with serving(build()) as running, RPC(running.url, timeout=5) as rpc:
        for _ in range(50):
            assert rpc.ping() == "pong"
        assert list(rpc.numbers()) == [1, 2]
        assert wait_until(lambda: len(access.records) == 51)
    assert len({r["id"] for r in access.records}) == 51


FORGED = "a\nINFO pymprpc.access: admin.reset id=1 peer=10.0.0.1:1 user=root -> 200 in 0.1ms"


def test_call_id_cannot_forge_access_records() -> None:
    logger = logging.getLogger("pymprpc.access")
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.extend(self.format(record).splitlines())

    handler = Lines(logging.INFO)
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        with serving(build()) as running, Raw(running.server.port) as raw:
            raw.login()
            raw.call(FORGED, "ping")
            assert raw.recv()["CODE"] == 200
            assert wait_until(lambda: lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert len(lines) == 1, lines  # one call, one line
    assert not any(line.startswith("INFO pymprpc.access: admin.reset") for line in lines)
