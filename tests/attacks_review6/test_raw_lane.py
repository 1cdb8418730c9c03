"""The async client's fast lane against a hand-written server: replies that look almost
like ours (an ID one byte off, a finished stream's ID, items after the end, a 200 with a
stream's ID, odd framing, bad msgpack, non-UTF-8 IDs, other key orders, extra keys)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from attacks_review6.kit import end, frame, item, pack, raw_server, result, start
from pymprpc.client import AsyncRPC
from pymprpc.errors import MPRPCError, RemoteProtocolError

pytestmark = pytest.mark.timeout(30)


def run(coro: Any, timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def drain(stream: Any, limit: float = 5) -> list[Any]:
    out: list[Any] = []

    async def go() -> None:
        async for x in stream:
            out.append(x)

    await asyncio.wait_for(go(), limit)
    return out


def one_shot(script: Any) -> Any:
    """on_call: for a call to `gen`, write `script(id, conn)` (bytes) in one write."""

    def on_call(conn: Any, msg: dict[str, Any]) -> None:
        data = script(msg["ID"], conn, msg)
        if data is not None:
            conn.write(data)

    return on_call


def test_smoke_stream_in_one_write() -> None:
    vals = [0, -1, 2**63, -(2**63), 1.5, None, True, "é", b"\x00", [1, {2: 3}], "x" * 5000]

    async def main() -> None:
        async with (
            raw_server(
                one_shot(lambda i, c, m: start(i) + b"".join(item(i, v) for v in vals) + end(i))
            ) as s,
            AsyncRPC(s.url) as rpc,
        ):
            assert await drain(await rpc.gen()) == vals

    run(main())


class Script:
    """on_call by method: `gen` calls are remembered (ID), `add` answers at once; a test
    writes the bytes it wants once the calls it waits for arrived."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {}
        self.conn: Any = None
        self.arrived = asyncio.Event()

    def __call__(self, conn: Any, msg: dict[str, Any]) -> None:
        self.conn = conn
        self.ids.setdefault(msg["METHOD"], []).append(msg["ID"])
        if msg["METHOD"] == "add":
            conn.write(result(msg["ID"], sum(msg.get("ARGS") or [])))
        if msg["METHOD"] == "plain":
            pass  # the test answers
        self.arrived.set()

    async def wait(self, method: str, n: int) -> list[str]:
        while len(self.ids.get(method, [])) < n:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)
        return self.ids[method]


def flip(id: str, at: int = -1) -> str:
    c = id[at]
    new = "0" if c != "0" else "1"
    return id[:at] + new + (id[at + 1 :] if at != -1 else "")


async def two_streams(rpc: AsyncRPC, sc: Script) -> tuple[Any, Any, str, str]:
    ta = asyncio.ensure_future(rpc.gen("a"))
    tb = asyncio.ensure_future(rpc.gen("b"))
    a, b = await sc.wait("gen", 2)
    sc.conn.write(start(a) + start(b))
    return await ta, await tb, a, b


def test_interleaved_streams_one_write_and_ids_one_byte_off() -> None:
    """A, B items interleaved in one write, with items whose ID differs from A's or B's
    in one byte (every position) in between: each value reaches its own stream only."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            assert s.conns[0].framing
            data = b""
            for i in range(36):
                data += item(a, ("a", i)) + item(flip(a, i), ("x", i)) + item(b, ("b", i))
                data += item(flip(b, i), ("y", i)) + item(a, ("a2", i))
            data += end(a) + end(b)
            sc.conn.write(data)
            got_a = await drain(sa)
            got_b = await drain(sb)
            assert got_a == [x for i in range(36) for x in (["a", i], ["a2", i])]
            assert got_b == [["b", i] for i in range(36)]
            assert await rpc.add(1, 2) == 3

    run(main())


def test_items_after_end_do_not_reach_next_stream() -> None:
    """A ends (206) then more items with A's ID follow, in the same write as B's items
    and in a later write: dropped, B gets only its own."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            sc.conn.write(item(a, 1) + end(a) + item(a, 2) + item(b, 10) + item(a, 3) + item(b, 11))
            assert await drain(sa) == [1]
            sc.conn.write(item(a, 4) + item(b, 12) + end(b) + item(b, 13))
            assert await drain(sb) == [10, 11, 12]
            # a new stream right after: nothing of A's or B's reaches it
            tc = asyncio.ensure_future(rpc.gen("c"))
            (c,) = (await sc.wait("gen", 3))[2:]
            sc.conn.write(item(a, 5) + start(c) + item(b, 14) + item(c, 20) + item(a, 6) + end(c))
            assert await drain(await tc) == [20]
            assert await rpc.add(2, 2) == 4

    run(main())


def test_result_200_with_a_started_streams_id() -> None:
    """A 200 for a started stream's ID fails that stream with RemoteProtocolError; later
    items for it are ignored; B and the connection go on."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            sc.conn.write(
                item(a, 1) + item(b, 1) + result(a, 99) + item(a, 2) + item(b, 2) + end(b)
            )
            got: list[Any] = []
            with pytest.raises(RemoteProtocolError):
                async for x in sa:
                    got.append(x)
            assert 99 not in got and 2 not in got
            assert await drain(sb) == [1, 2]
            assert await rpc.add(3, 4) == 7

    run(main())


def test_result_200_alone_in_a_read_for_a_started_stream() -> None:
    """receive_result's one-frame shortcut: a 200 alone in a read, for a stream."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            await asyncio.sleep(0.05)
            sc.conn.write(result(a, 99))
            await asyncio.sleep(0.05)
            sc.conn.write(item(b, 1) + end(b))
            with pytest.raises(RemoteProtocolError):
                await drain(sa)
            assert await drain(sb) == [1]
            assert await rpc.add(3, 4) == 7

    run(main())


def test_item_before_start_and_second_start() -> None:
    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            ta = asyncio.ensure_future(rpc.gen("a"))
            tb = asyncio.ensure_future(rpc.gen("b"))
            a, b = await sc.wait("gen", 2)
            sc.conn.write(item(a, 1) + start(b) + item(b, 1) + start(b) + item(b, 2))
            with pytest.raises(RemoteProtocolError):
                await asyncio.wait_for(ta, 5)
            sb = await tb
            with pytest.raises(RemoteProtocolError):
                await drain(sb)
            assert await rpc.add(3, 4) == 7

    run(main())


def other_layouts(id: str, value: Any) -> list[bytes]:
    """A 202 for `id` in other layouts a valid peer may write."""
    return [
        frame(pack({"CODE": 202, "MESSAGE": {"ID": id, "RESULT": value}, "MPRPC": "0.1"})),
        frame(pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"RESULT": value, "ID": id}})),
        frame(pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": value}, "X": 1})),
        frame(
            pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": value, "Y": [1]}})
        ),
        # str8 header for a short value / the ID's str encoded with a str16 header
        frame(
            pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": id, "RESULT": value}})[
                : -0 or None
            ]
        ),
    ]


def id_str16(id: str) -> bytes:
    """An ID packed with a 16-bit string header (valid msgpack, unusual)."""
    raw = id.encode()
    return b"\xda" + len(raw).to_bytes(2, "big") + raw


def test_other_layouts_and_key_orders() -> None:
    """Items in other key orders, with extra keys, or the ID with a str16 header, mixed
    with items in our layout: all reach the stream, in order."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            data = b""
            expect = []
            n = 0
            for _ in range(3):
                for k in range(len(other_layouts(a, 0))):
                    data += other_layouts(a, n)[k]
                    expect.append(n)
                    n += 1
                    data += item(a, n)
                    expect.append(n)
                    n += 1
                # an item with the ID in a str16 header
                payload = (
                    b"\x83"
                    + pack("MPRPC")
                    + pack("0.1")
                    + pack("CODE")
                    + pack(202)
                    + pack("MESSAGE")
                    + b"\x82"
                    + pack("ID")
                    + id_str16(a)
                    + pack("RESULT")
                    + pack(n)
                )
                data += frame(payload)
                expect.append(n)
                n += 1
            data += end(a) + end(b)
            sc.conn.write(data)
            assert await drain(sa) == expect
            assert await drain(sb) == []

    run(main())


@pytest.mark.parametrize("delta", [-1, 1])
def test_length_prefix_off_by_one(delta: int) -> None:
    """An item whose length prefix is one off: the connection fails with a protocol error
    (pending calls raise), nothing hangs, no wrong value is delivered; the client can
    reconnect."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s:
            rpc = AsyncRPC(s.url)
            await rpc.connect()
            try:
                sa, sb, a, b = await two_streams(rpc, sc)
                payload = pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": a, "RESULT": 12345}})
                bad = (len(payload) + delta).to_bytes(4, "big") + payload
                sc.conn.write(item(a, 1) + bad + item(b, 2) + item(a, 3) + end(a) + end(b))
                got_a: list[Any] = []
                got_b: list[Any] = []
                errs = []
                for st, got in ((sa, got_a), (sb, got_b)):
                    try:
                        async for x in st:
                            got.append(x)
                    except MPRPCError as exc:
                        errs.append(exc)
                # whatever happens, no value goes to the wrong stream or is invented
                assert all(x in (1, 12345, 3) for x in got_a), got_a
                assert all(x == 2 for x in got_b), got_b
                assert errs, "a broken frame went unnoticed"
            finally:
                await rpc.close()

    run(main())


@pytest.mark.parametrize(
    "bad_value",
    [b"\xc1", b"\xd9\x05ab", b"\xa3\xff\xfe\xfd", b"\x92\x01", b"\x01\x02"],
    ids=["never-used", "short-str", "bad-utf8", "short-array", "extra-data"],
)
def test_invalid_msgpack_value_in_item(bad_value: bytes) -> None:
    """An item in our layout whose value is not valid msgpack: the stream (or the
    connection) fails with a protocol error; nothing wrong is delivered, nothing hangs."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s:
            rpc = AsyncRPC(s.url)
            await rpc.connect()
            try:
                sa, sb, a, b = await two_streams(rpc, sc)
                good = pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": a, "RESULT": None}})
                payload = good[:-1] + bad_value
                sc.conn.write(
                    item(a, 1) + frame(payload) + item(a, 2) + item(b, 7) + end(a) + end(b)
                )
                got: list[Any] = []
                with pytest.raises(RemoteProtocolError):
                    async for x in sa:
                        got.append(x)
                assert got in ([], [1])
                with pytest.raises(MPRPCError):
                    await drain(sb)
            finally:
                await rpc.close()

    run(main())


def test_id_not_utf8() -> None:
    """Items whose 36-byte ID is not valid UTF-8 (one byte of a pending ID changed to
    0xff): a protocol error, never a value in a stream."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s:
            rpc = AsyncRPC(s.url)
            await rpc.connect()
            try:
                sa, _sb, a, b = await two_streams(rpc, sc)
                good = pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": a, "RESULT": 5}})
                bad = good.replace(a.encode(), a.encode()[:-1] + b"\xff")
                sc.conn.write(item(a, 1) + frame(bad) + item(a, 2) + end(a) + end(b))
                got: list[Any] = []
                with pytest.raises(MPRPCError):
                    async for x in sa:
                        got.append(x)
                assert 5 not in got
            finally:
                await rpc.close()

    run(main())


@pytest.mark.parametrize("chunk", [1, 3, 7, 29, 64, 4093, 65537])
def test_segmentation_every_cut(chunk: int) -> None:
    """Three streams and plain results interleaved, written in `chunk`-byte pieces with a
    pause between (frames and envelope prefixes cut at every place): all in order."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            tc = asyncio.ensure_future(rpc.gen("c"))
            (c,) = (await sc.wait("gen", 3))[2:]
            calls = [asyncio.ensure_future(rpc.plain(i)) for i in range(20)]
            await sc.wait("plain", 20)
            pids = sc.ids["plain"]
            vals = [
                0,
                2**64 - 1,
                -(2**63),
                "é" * 2000,
                b"\xff" * 4096,
                "x" * 4090,
                [None, {1: 2}],
                1.5,
            ]
            if chunk < 64:  # bounded in time: one big value only
                vals = [
                    0,
                    2**64 - 1,
                    -(2**63),
                    "é" * 20,
                    b"\xff" * 4096,
                    "x" * 40,
                    [None, {1: 2}],
                    1.5,
                ]
            data = start(c)
            for i in range(60):
                v = vals[i % len(vals)]
                data += item(a, [i, v]) + item(b, i) + item(c, [v, i])
                if i < 20:
                    data += result(pids[i], [i, v])
            data += end(a) + end(b) + end(c)
            for k in range(0, len(data), chunk):
                sc.conn.write(data[k : k + chunk])
                if k % (chunk * 16) == 0:
                    await sc.conn.drain()
                    await asyncio.sleep(0)
            await sc.conn.drain()
            sc_ = await tc
            ga, gb, gc = await asyncio.gather(drain(sa, 15), drain(sb, 15), drain(sc_, 15))
            exp = [[i, vals[i % len(vals)]] for i in range(60)]
            assert ga == exp
            assert gb == list(range(60))
            assert gc == [[vals[i % len(vals)], i] for i in range(60)]
            for i, t in enumerate(calls):
                assert await t == [i, vals[i % len(vals)]]

    run(main())


def test_aclose_while_server_keeps_sending() -> None:
    """A is closed by the client (aclose) while the server, ignoring the cancel, keeps
    sending A's items in the same writes as B's and a new stream C's: none of A's reach
    B or C."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, sb, a, b = await two_streams(rpc, sc)
            sc.conn.write(item(a, "a0") + item(a, "a1") + item(b, "b0"))
            it = sa.__aiter__()
            assert await it.__anext__() == "a0"
            await sa.aclose()
            tc = asyncio.ensure_future(rpc.gen("c"))
            (c,) = (await sc.wait("gen", 3))[2:]
            data = start(c)
            for i in range(100):
                data += item(a, f"a{i}") + item(c, i) + item(b, f"b{i + 1}")
            data += end(a) + end(c) + end(b)
            sc.conn.write(data)
            assert await drain(await tc) == list(range(100))
            assert await drain(sb) == [f"b{i}" for i in range(101)]
            assert await rpc.add(1, 1) == 2

    run(main())


def test_unhashable_map_keys_and_ext_same_on_both_layouts() -> None:
    """A value with an array as a map key, an ext type and a timestamp: our layout and
    another key order give the same value (docs: such keys arrive as tuples)."""
    raw_values = [
        b"\x81\x92\x01\x02\xa1x",  # {[1, 2]: "x"}
        b"\xd4\x05\x01",  # ExtType(5, b"\x01")
        b"\xd6\xff\x00\x00\x00\x01",  # Timestamp(1)
        b"\x81\x81\x01\x02\x03",  # {{1: 2}: 3}
    ]

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s, AsyncRPC(s.url) as rpc:
            sa, _sb, a, b = await two_streams(rpc, sc)
            data = b""
            for rv in raw_values:
                ours = (
                    pack({"MPRPC": "0.1", "CODE": 202, "MESSAGE": {"ID": a, "RESULT": None}})[:-1]
                    + rv
                )
                other = (
                    b"\x83"
                    + pack("CODE")
                    + pack(202)
                    + pack("MPRPC")
                    + pack("0.1")
                    + pack("MESSAGE")
                    + b"\x82"
                    + pack("RESULT")
                    + rv
                    + pack("ID")
                    + pack(a)
                )
                data += frame(ours) + frame(other)
            data += end(a) + end(b)
            sc.conn.write(data)
            got = await drain(sa)
            assert len(got) == 2 * len(raw_values)
            for k in range(len(raw_values)):
                assert got[2 * k] == got[2 * k + 1], (got[2 * k], got[2 * k + 1])
                assert type(got[2 * k]) is type(got[2 * k + 1])
            assert got[0] == {(1, 2): "x"}
            assert await rpc.add(1, 1) == 2

    run(main())


def test_oversized_item_frame() -> None:
    """An item frame over the client's max_message_size: a protocol error for the
    connection, no hang, nothing delivered from it."""

    async def main() -> None:
        sc = Script()
        async with raw_server(sc) as s:
            rpc = AsyncRPC(s.url, max_message_size=100_000)
            await rpc.connect()
            try:
                sa, sb, a, _b = await two_streams(rpc, sc)
                sc.conn.write(item(a, 1) + item(a, "z" * 100_001) + item(a, 2) + end(a))
                got: list[Any] = []
                with pytest.raises(MPRPCError):
                    async for x in sa:
                        got.append(x)
                assert got in ([], [1])
                with pytest.raises(MPRPCError):
                    await drain(sb)
            finally:
                await rpc.close()

    run(main())
