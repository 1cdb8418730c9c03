"""Review 17: messages are packed from exact built-in types only (codec._exact as
msgpack's `default`), attacked from the contract. Honest values must be the bytes
msgpack.packb always made, on the fast lanes and the general path; nothing a value does
may corrupt a frame or hurt another call; one level past msgpack's parser is refused, never
sent; exact types never reach the Python hook; no memory kept; JSON and compression
unaffected. Real servers on 127.0.0.1 (ephemeral ports), asyncio and uvloop.

Not repeated from review 16 (tests/attacks_review16): the len/iter liars one by one, the
balancing liars, the envelope forger, the checker's reuse bound, RSS over large results."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from review_fixtures import LoopServer, client_run

from pymprpc import RPC, AsyncRPC, Server
from pymprpc.errors import LocalProtocolError, MPRPCError, ResultLimitError
from pymprpc.protocol import (
    ClientConnection,
    Credentials,
    ServerConnection,
    ServerSettings,
    messages,
)
from pymprpc.protocol import codec as codec_module
from pymprpc.protocol.codec import Codec
from pymprpc.server import kept_results

from . import r17_funcs as f


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- servers ---------------------------------------------------------------------------


def build(**options: Any) -> Server:
    options.setdefault("grace_period", 1.0)
    options.setdefault("max_workers", 2)
    server = Server(("127.0.0.1", 0), **options)
    for fn in (f.aecho, f.ping, f.slow, f.note, f.kind, f.kind_stream):
        server.register_function(fn.__name__)(fn)
    return server


@contextlib.contextmanager
def serving(loop: str = "asyncio", **options: Any) -> Iterator[LoopServer]:
    running = LoopServer(build(**options), loop)
    running.thread.start()
    assert running.ready.wait(30), "server did not start"
    try:
        yield running
    finally:
        running.server.stop()
        running.thread.join(30)
        assert not running.thread.is_alive(), "server did not stop"
    gc.collect()


@contextlib.contextmanager
def two_servers(loop: str = "asyncio") -> Iterator[tuple[LoopServer, LoopServer]]:
    with serving(loop) as other, serving(loop) as main:
        f.OTHER["url"] = other.url
        try:
            yield main, other
        finally:
            f.OTHER.clear()


# -- sans-IO connections ---------------------------------------------------------------


def client_conn() -> ClientConnection:
    conn = ClientConnection()
    server = ServerConnection(ServerSettings(), Credentials())
    conn.start()
    for chunk in conn.chunks_to_send():
        server.receive_data(chunk)
    for chunk in server.chunks_to_send():
        conn.receive_data(chunk)
    return conn


def server_conn(features: list[str]) -> ServerConnection:
    conn = ServerConnection(ServerSettings(max_message_size=64_000_000), Credentials([("u", "p")]))
    auth: dict[str, Any] = {
        "MPRPC": "0.1",
        "AUTH": {"USERNAME": "u", "PASSWORD": "p"},
        "FEATURES": features,
    }
    conn.receive_data(packb(auth) + b"##PRO-END##")
    conn.chunks_to_send()
    return conn


def unframe(chunks: list[bytes]) -> bytes:
    data = b"".join(chunks)
    (size,) = struct.unpack(">I", data[:4])
    assert size == len(data) - 4
    return data[4:]


# -- 1. honest values: the bytes msgpack always made ------------------------------------

HONEST = f.honest_values()
HONEST_IDS = [f"{i}-{type(v).__name__}" for i, v in enumerate(HONEST)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", HONEST, ids=HONEST_IDS)
def test_honest_argument_on_the_client_lanes_is_msgpack_bytes(value: Any) -> None:
    """send_call_data (the fast lane for positional args; the general path past 64 KiB or
    with kwargs) writes the bytes msgpack.packb wrote for the call map."""
    conn = client_conn()
    for args, kwargs in (((value,), None), ((1, value, "z"), None), ((value,), {"k": value})):
        id, chunks = conn.send_call_data("m", args, kwargs)
        want = messages.call(id, "m", list(args), kwargs or {}, True, None)
        assert unframe(chunks) == packb(want), (args, kwargs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", HONEST, ids=HONEST_IDS)
@pytest.mark.parametrize(
    "features", [["length-framing"], ["length-framing", "metadata"]], ids=["plain", "metadata"]
)
def test_honest_result_and_stream_item_are_msgpack_bytes(value: Any, features: list[str]) -> None:
    conn = server_conn(features)
    conn._inflight["r"] = False
    metadata = {"k": "v"} if "metadata" in features else None
    conn.send_result("r", value, metadata=metadata)
    want = messages.result("r", value, metadata=metadata)
    assert unframe(conn.chunks_to_send()) == packb(want)
    conn._inflight["s"] = True
    assert conn.send_stream_item("s", value)
    assert unframe(conn.chunks_to_send()) == packb(messages.stream_item("s", value))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", HONEST, ids=HONEST_IDS)
def test_honest_kept_value_is_msgpack_bytes(value: Any) -> None:
    assert kept_results._pack(value) == packb(value)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.binary(max_size=10).map(bytearray),
    st.binary(max_size=10).map(memoryview),
    st.sampled_from([f.Color.RED, f.Color.BIG, f.Name.A, f.Name.E]),
    st.integers(-5, 5).map(f.LyingInt),
    st.text(max_size=5).map(f.LyingStr),
)
keys = st.one_of(
    st.text(max_size=5),
    st.integers(-3, 3),
    st.tuples(st.integers(0, 3), st.text(max_size=2)),
    st.sampled_from([f.Name.A, f.Color.RED, ()]),
)
honest = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=4).map(f.HonestList),
        st.lists(inner, max_size=4).map(f.HonestTuple),
        st.tuples(inner, inner).map(lambda t: f.Point(*t)),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4).map(f.HonestDict),
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(honest, min_size=1, max_size=3))
def test_any_honest_value_is_msgpack_bytes_everywhere(args: list[Any]) -> None:
    conn = client_conn()
    id, chunks = conn.send_call_data("m", tuple(args))
    assert unframe(chunks) == packb(messages.call(id, "m", args, {}, True, None))
    value = args[0] if len(args) == 1 else tuple(args)
    sconn = server_conn(["length-framing"])
    sconn._inflight["r"] = False
    sconn.send_result("r", value)
    assert unframe(sconn.chunks_to_send()) == packb(messages.result("r", value))
    assert kept_results._pack(value) == packb(value)
    assert Codec(compression=None).encode({"R": value}) == packb({"R": value})


@pytest.mark.timeout(120)
def test_honest_values_end_to_end_every_client_and_loop(loop: str) -> None:
    want = [packb(v) for v in HONEST]

    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            got = await asyncio.gather(*(rpc.aecho(v) for v in HONEST))
            assert [packb(v) for v in got] == want
            got = await rpc.kind("honest")
            assert packb(got) == packb(HONEST)

    with serving(loop) as running:
        client_run(loop, main(running.url))
        with RPC(running.url, timeout=10) as rpc:
            assert [packb(rpc.aecho(v)) for v in HONEST] == want
            assert packb(list(rpc.kind_stream("honest"))) == packb([1, HONEST, 2])
            # kept (delay): all but the map with tuple keys (see the test after)
            for value in HONEST:
                if isinstance(value, dict) and any(type(k) is tuple for k in value):
                    continue
                id = rpc.delay("aecho", value)
                assert packb(rpc.system.getresult(id)) == packb(value)


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_a_kept_map_with_tuple_keys_is_fetched() -> None:
    value = {(1, 2): "tuple key", "plain": 1}
    with serving() as running, RPC(running.url, timeout=10) as rpc:
        assert rpc.aecho(value) == value  # sent directly: read back with tuple keys
        id = rpc.delay("aecho", value)
        assert rpc.system.getresult(id) == value


# -- 2. no Python hook for exact types; no memory kept ---------------------------------


class CountingHook:
    def __init__(self) -> None:
        self.calls = 0
        self.types: list[str] = []
        self.real = codec_module._exact

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        self.types.append(type(value).__name__)
        return self.real(value)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingHook]:
    hook = CountingHook()
    monkeypatch.setattr(codec_module, "_exact", hook)
    codec_module._packers.packer = None  # a packer built with the counting hook
    yield hook
    codec_module._packers.packer = None


EXACT_VALUES: list[Any] = [
    {"a": [1, 2, {"b": b"x"}], "c": "s"},
    [1, "two", 3.0, None, True, b"b", bytearray(b"ba"), memoryview(b"mv")],
    "a string",
    12345,
    2**64 - 1,
    b"bytes",
    {1: {2: [[]]}},
]


@pytest.mark.timeout(60)
def test_exact_types_never_reach_the_python_hook(counting: CountingHook) -> None:
    conn = client_conn()
    sconns = [server_conn(["length-framing", "metadata"]) for _ in EXACT_VALUES]
    # (the handshake packs FEATURES, StrEnum members, through the hook: once a connection)
    counting.calls, counting.types = 0, []
    for value, sconn in zip(EXACT_VALUES, sconns, strict=True):
        conn.send_call_data("m", (value, value))  # the argument tuple of a call
        conn.send_call_data("m", [value])
        conn.send_call_data("m", (value,), {"k": value})
        sconn._inflight["r"] = False
        sconn.send_result("r", value)
        sconn._inflight["q"] = False
        sconn.send_result("q", value, metadata={"k": "v"})
        sconn._inflight["s"] = True
        sconn.send_stream_item("s", value)
        kept_results._pack(value)
        Codec().encode({"ID": "x", "RESULT": value})
    assert counting.calls == 0, counting.types
    # (sanity: the hook is the one the packer calls)
    conn.send_call_data("m", ((1, 2),))
    assert counting.calls == 1


@pytest.mark.timeout(60)
def test_exact_types_never_reach_the_hook_on_real_servers(counting: CountingHook) -> None:
    with serving() as running, RPC(running.url, timeout=10) as rpc:
        assert rpc.ping() == "pong"
        counting.calls, counting.types = 0, []  # the handshake's FEATURES aside
        for value in EXACT_VALUES:
            rpc.aecho(value)
        assert counting.calls == 0, counting.types
        assert rpc.aecho((1, 2)) == [1, 2]
        assert counting.calls >= 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", ["tuple", "subclass", "dict_subclass"])
def test_a_30mb_message_through_the_hook_keeps_no_memory(shape: str) -> None:
    """Encoded with a tuple or subclass inside (the hook converts it: a copy), then
    nothing stays allocated: not the packer's buffer, not the converted copy."""
    strings = ["x" * 1000] * 30_000  # 30 MB packed
    value: Any = {
        "tuple": lambda: (b"y" * 1000, tuple(strings)),
        "subclass": lambda: [f.HonestList(strings)],
        "dict_subclass": lambda: f.HonestDict({str(i): s for i, s in enumerate(strings)}),
    }[shape]()
    codec = Codec(max_size=100_000_000)
    codec.encode({"MESSAGE": {"RESULT": [1]}})
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(2):
            data = codec.encode({"MESSAGE": {"RESULT": value}})
            size = len(data)
            assert size > 29_000_000
            del data
        kept = kept_results._pack(value)
        del kept
        gc.collect()
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 1_000_000, (current, size)
    assert getattr(codec_module._packers, "packer", None) is None


# -- 3. one level past msgpack's parser: refused, never sent ----------------------------
# A call's levels: the envelope (1), ARGS (2), then nested(n)'s n + 1: n = 1021 is 1,024.


@pytest.mark.timeout(120)
def test_a_call_1024_levels_deep_is_sent_and_read_by_both_clients(loop: str) -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            assert packb(await rpc.aecho(f.nested(1021))) == packb(f.nested(1021))
            assert await rpc.ping() == "pong"

    with serving(loop) as running:
        client_run(loop, main(running.url))
        with RPC(running.url, timeout=10) as rpc:
            assert packb(rpc.aecho(f.nested(1021))) == packb(f.nested(1021))
            with pytest.raises(LocalProtocolError, match="nests deeper"):
                rpc.aecho(f.nested(1022))
            assert rpc.ping() == "pong"


@pytest.mark.timeout(120)
def test_async_client_refuses_a_call_one_level_too_deep(loop: str) -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            with pytest.raises(LocalProtocolError, match="nests deeper"):
                await rpc.aecho(f.nested(1022))
            assert await rpc.ping() == "pong"

    with serving(loop) as running:
        client_run(loop, main(running.url))


@pytest.mark.timeout(60)
def test_send_call_data_refuses_one_level_too_deep() -> None:
    conn = client_conn()
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        conn.send_call_data("m", (f.nested(1022),))


@pytest.mark.timeout(60)
def test_send_call_data_one_level_too_deep_as_a_subclass_or_kwargs_is_refused() -> None:
    """Off the fast lane (kwargs, a list subclass through the hook, past 64 KiB) the same
    depth is refused as too deep."""
    conn = client_conn()
    # kwargs: the envelope (1), KWARGS (2), nested(1022)'s 1,023 levels
    conn.send_call_data("m", (), {"k": f.nested(1021)})
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        conn.send_call_data("m", (), {"k": f.nested(1022)})
    deep: Any = f.HonestList()
    for _ in range(1022):
        deep = f.HonestList([deep])
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        conn.send_call(  # the general path
            "m", (deep,), {}
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["large_args", "deadline"])
def test_send_call_data_refuses_one_level_too_deep_off_the_first_lane(variant: str) -> None:
    conn = client_conn()
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        if variant == "large_args":
            conn.send_call_data("m", (f.nested(1022), "p" * 70_000))
        else:
            conn.send_call_data("m", (f.nested(1022),), deadline=30.0)


# -- 4. values that re-enter the encoder while packed -----------------------------------


@pytest.mark.timeout(60)
def test_a_value_that_encodes_while_packed_does_not_corrupt_the_message() -> None:
    class EncodesInIter(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            Codec().encode({"inner": [1, 2, 3]})
            return iter([1, 2])

    value = {"a": [0, EncodesInIter([0])], "b": "after"}
    data = Codec().encode({"ID": "x", "RESULT": value})
    assert msgpack.unpackb(data) == {"ID": "x", "RESULT": {"a": [0, [1, 2]], "b": "after"}}


@pytest.mark.timeout(60)
def test_an_argument_fetching_its_items_over_rpc_is_sent_whole() -> None:
    with two_servers() as (main, other), RPC(main.url, timeout=10) as rpc:  # noqa: SIM117
        with RPC(other.url, timeout=10) as lookup:

            class Lazy(list):  # type: ignore[type-arg]
                def __iter__(self) -> Any:
                    return iter([lookup.aecho(i) for i in range(2)])

            try:
                assert rpc.aecho({"a": Lazy([0]), "b": "after"}) == {"a": [0, 1], "b": "after"}
            finally:
                # whatever happened, both connections must still serve
                assert lookup.ping() == "pong"
                assert rpc.ping() == "pong"


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_a_result_that_notifies_while_packed_hurts_no_other_call(loop: str) -> None:
    """(The notification itself is corrupted, see the next test; the result gets 405.)"""

    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            other = asyncio.ensure_future(rpc.slow(0.5))
            try:
                value = await rpc.kind("notifies_other")
                assert value == {"a": [[1, 2]], "b": "after"}
            except MPRPCError as exc:
                assert getattr(exc, "code", None) == 405, exc
            assert await other == "slow done"
            assert await rpc.ping() == "pong"

    with two_servers(loop) as (main_server, _other):
        client_run(loop, main(main_server.url))


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_a_call_made_inside_a_results_iteration_is_not_corrupted() -> None:
    with two_servers() as (main, _other), RPC(main.url, timeout=10) as rpc:
        assert rpc.kind("calls_other") == {"a": [0, 1], "b": "after"}


# -- 5. a result raising, endless, or lying through __buffer__ -------------------------


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_a_result_raising_in_iter_is_405_and_hurts_nothing(loop: str) -> None:
    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            other = asyncio.ensure_future(rpc.slow(0.3))
            with pytest.raises(ResultLimitError, match="raised RuntimeError"):
                await rpc.kind("raises_in_iter")
            stream = await rpc.kind_stream("raises_in_iter")
            items = []
            with pytest.raises(ResultLimitError):
                async for item in stream:
                    items.append(item)
            assert items == [1]
            assert await other == "slow done"

    with serving(loop) as running:
        client_run(loop, main(running.url))


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_a_kept_result_raising_in_iter_is_405_as_when_sent() -> None:
    with serving() as running, RPC(running.url, timeout=10) as rpc:
        id = rpc.delay("kind", "raises_in_iter")
        with pytest.raises(ResultLimitError):
            rpc.system.getresult(id)
        assert rpc.ping() == "pong"


@pytest.mark.timeout(120)
@pytest.mark.logs_errors
def test_an_endless_iteration_is_refused_as_too_large(loop: str) -> None:
    """Three million items (capped): over a 1 MB max_message_size, 405; the connection
    and the server carry on."""

    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=30) as rpc:
            other = asyncio.ensure_future(rpc.slow(0.3))
            with pytest.raises(ResultLimitError):
                await rpc.kind("endless")
            assert await other == "slow done"
            assert await rpc.ping() == "pong"

    with serving(loop, max_message_size=1_000_000) as running:
        client_run(loop, main(running.url))
        with RPC(running.url, timeout=30) as rpc:
            id = rpc.delay("kind", "endless")
            with pytest.raises(ResultLimitError):
                rpc.system.getresult(id)
            assert rpc.ping() == "pong"


@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ (PEP 688) is 3.12+")
def test_a_bytes_subclass_is_sent_as_stored_whatever_its_buffer_says() -> None:
    value = [f.BufferBytes(b"stored"), f.BufferBytearray(b"stored")]
    assert Codec().encode({"R": value}) == packb({"R": value})
    assert kept_results._pack(value) == packb(value)


# -- 6. liars inside error payloads and metadata ----------------------------------------


class Flip(dict):  # type: ignore[type-arg]
    """Call metadata: honest str pairs when checked, then a liar when packed."""

    def __init__(self) -> None:
        super().__init__(k="v")
        self.seen = 0

    def items(self) -> Any:
        self.seen += 1
        if self.seen == 1:
            return [("k", "v")]
        return [("k", f.ShortList([1, 2, 3])), ("j", 2)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", ["sync", "async"])
def test_metadata_changing_between_check_and_pack_fails_only_its_call(client: str) -> None:
    with serving(features=("length-framing", "metadata")) as running:
        if client == "sync":
            with RPC(running.url, timeout=10) as rpc:
                try:
                    rpc.aecho.with_options(metadata=Flip())(1)
                except MPRPCError as exc:
                    assert getattr(exc, "code", None) in (400, 405, None), exc
                assert rpc.ping() == "pong"
        else:

            async def main() -> None:
                async with AsyncRPC(running.url, timeout=10) as rpc:
                    other = asyncio.ensure_future(rpc.slow(0.3))
                    try:
                        await rpc.aecho.with_options(metadata=Flip())(1)
                    except MPRPCError as exc:
                        assert getattr(exc, "code", None) in (400, 405, None), exc
                    assert await other == "slow done"

            client_run("asyncio", main())


@pytest.mark.timeout(60)
@pytest.mark.logs_errors
def test_liars_in_an_errors_message_and_data(loop: str) -> None:
    from pymprpc.errors import RequestError

    server = build()

    @server.register_function("fails")
    async def fails() -> Any:
        raise RequestError(
            f.LyingStr("stored message"),
            data={"v": f.ShortList([1, 2, 3]), "t": (1, 2), f.LyingStr("k"): f.LyingInt(5)},
        )

    async def main(url: str) -> None:
        async with AsyncRPC(url, timeout=10) as rpc:
            other = asyncio.ensure_future(rpc.slow(0.3))
            with pytest.raises(MPRPCError) as info:
                await rpc.fails()
            assert "stored message" in str(info.value)
            data = getattr(info.value, "data", None) or {}
            if data:
                assert data.get("v") == [1] and data.get("t") == [1, 2], data
                assert data.get("k") == 5, data
            assert await other == "slow done"

    running = LoopServer(server, loop)
    running.thread.start()
    assert running.ready.wait(30)
    try:
        client_run(loop, main(running.url))
    finally:
        server.stop()
        running.thread.join(30)


# -- 7. JSON debug mode and compression --------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "options", [{"debug": True}, {"compression": "zlib"}, {"compression": "lzma"}]
)
def test_json_and_compression_still_carry_subclasses_tuples_and_enums(
    options: dict[str, Any],
) -> None:
    value = {
        "t": (1, (2, 3)),
        "p": f.Point(1, 2),
        "e": [f.Color.RED, f.Name.A],
        "l": f.HonestList([1, f.HonestDict(a=1)]),
        "s": f.LyingStr("stored"),
    }
    want = {"t": [1, [2, 3]], "p": [1, 2], "e": [1, "a"], "l": [1, {"a": 1}], "s": "stored"}
    with serving() as running, RPC(running.url, timeout=10, **options) as rpc:
        got = rpc.aecho(value)
        if "debug" in options:
            # JSON: a str subclass as json.dumps writes it (its stored text)
            assert got == want
        else:
            assert got == want
            assert packb(rpc.aecho(f.nested(1021))) == packb(f.nested(1021))
            with pytest.raises(LocalProtocolError, match="nests deeper"):
                rpc.aecho(f.nested(1022))
            assert packb(rpc.aecho(HONEST)) == packb(HONEST)
        assert rpc.ping() == "pong"
