"""The `metadata` feature in the sans-IO core: validation, bounds, and negotiation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import pack, unpack
from pymprpc.errors import LocalProtocolError
from pymprpc.protocol import (
    SEPARATOR,
    CallRequest,
    ClientConnection,
    Credentials,
    Result,
    ServerConnection,
    ServerSettings,
    StreamStart,
)
from pymprpc.protocol.constants import MAX_METADATA_BYTES, MAX_METADATA_PAIRS
from pymprpc.protocol.messages import check_metadata

V = {"MPRPC": "0.1"}


def frame(msg: Any) -> bytes:
    return pack(msg) + SEPARATOR


def server(features: list[str] | None) -> ServerConnection:
    conn = ServerConnection(ServerSettings(), Credentials())
    auth: dict[str, Any] = {**V, "AUTH": {"USERNAME": None, "PASSWORD": None}}
    if features is not None:
        auth["FEATURES"] = features
    conn.receive_data(frame(auth))
    conn.chunks_to_send()
    return conn


def replies(conn: ServerConnection) -> list[Any]:
    return [unpack(f) for f in b"".join(conn.chunks_to_send()).split(SEPARATOR)[:-1]]


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=MAX_METADATA_PAIRS))
def test_string_maps_within_bounds_are_accepted(metadata: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size <= MAX_METADATA_BYTES:
        assert check_metadata(metadata) is metadata


@given(
    st.dictionaries(
        st.one_of(st.text(max_size=5), st.integers()),
        st.one_of(st.text(max_size=5), st.integers(), st.none(), st.binary(max_size=3)),
        min_size=1,
        max_size=5,
    )
)
def test_anything_but_str_to_str_is_refused(metadata: dict[Any, Any]) -> None:
    if all(type(k) is str and type(v) is str for k, v in metadata.items()):
        check_metadata(metadata)
    else:
        with pytest.raises(ValueError, match="strings to strings"):
            check_metadata(metadata)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="65 pairs"):
        check_metadata({str(i): "" for i in range(MAX_METADATA_PAIRS + 1)})
    with pytest.raises(ValueError, match="bytes, more than"):
        check_metadata({"k": "é" * MAX_METADATA_BYTES})  # 2 bytes per character
    with pytest.raises(ValueError, match="map"):
        check_metadata(["k", "v"])


def test_server_reads_metadata_only_when_negotiated() -> None:
    call = {**V, "ID": "1", "METHOD": "m", "METADATA": {"k": "v"}}
    assert server(["metadata"]).receive_data(frame(call)) == [
        CallRequest("1", "m", metadata={"k": "v"})
    ]
    assert server(None).receive_data(frame(call)) == [CallRequest("1", "m")]
    assert server(["cancel"]).receive_data(frame(call)) == [CallRequest("1", "m")]
    bad = server(["metadata"])
    assert bad.receive_data(frame({**call, "METADATA": {"k": 1}})) == []
    assert replies(bad)[0]["CODE"] == 400


def test_response_metadata_is_sent_only_when_negotiated() -> None:
    for features, expected in ((["metadata"], {"r": "1"}), (None, None)):
        conn = server(features)
        conn.receive_data(frame({**V, "ID": "1", "METHOD": "m"}))
        conn.send_result("1", 3, metadata={"r": "1"})
        assert replies(conn)[0]["MESSAGE"].get("METADATA") == expected
        conn.receive_data(frame({**V, "ID": "2", "METHOD": "s"}))
        assert conn.send_stream_start("2", metadata={"r": "1"})
        assert replies(conn)[0]["MESSAGE"].get("METADATA") == expected


def test_malformed_response_metadata_fails_the_call_with_405() -> None:
    conn = server(["metadata"])
    conn.receive_data(frame({**V, "ID": "1", "METHOD": "m"}))
    conn.send_result("1", 3, metadata={"r": 1})  # type: ignore[dict-item]
    assert replies(conn)[0]["CODE"] == 405
    conn.receive_data(frame({**V, "ID": "2", "METHOD": "s"}))
    assert not conn.send_stream_start("2", metadata={"r": 1})  # type: ignore[dict-item]
    assert replies(conn)[0]["CODE"] == 405


def client(features: list[str]) -> ClientConnection:
    conn = ClientConnection()
    conn.start()
    conn.chunks_to_send()
    welcome = {**V, "CODE": 100, "VERSION": None, "DESC": None, "DEBUG": False,
               "COMPRESER": None, "TIMEOUT": 0, "FEATURES": features}  # fmt: skip
    conn.receive_data(frame(welcome))
    return conn


def test_client_sends_metadata_only_when_negotiated_and_reads_it_back() -> None:
    conn = client(["metadata"])
    id = conn.send_call("m", metadata={"k": "v"})
    assert unpack(b"".join(conn.chunks_to_send())[: -len(SEPARATOR)])["METADATA"] == {"k": "v"}
    reply = {**V, "CODE": 200, "MESSAGE": {"ID": id, "RESULT": 1, "METADATA": {"r": "x"}}}
    assert conn.receive_data(frame(reply)) == [Result(id, 1, metadata={"r": "x"})]
    id2 = conn.send_call("s")
    start = {**V, "CODE": 201, "MESSAGE": {"ID": id2, "METADATA": {"r": "y"}}}
    assert conn.receive_data(frame(start)) == [StreamStart(id2, metadata={"r": "y"})]
    with pytest.raises(LocalProtocolError, match="strings to strings"):
        conn.send_call("m", metadata={"k": 1})  # type: ignore[dict-item]

    old = client([])
    old.send_call("m", metadata={"k": "v"})
    assert "METADATA" not in unpack(b"".join(old.chunks_to_send())[: -len(SEPARATOR)])


def test_client_closes_on_malformed_response_metadata() -> None:
    conn = client(["metadata"])
    id = conn.send_call("m")
    reply = {**V, "CODE": 200, "MESSAGE": {"ID": id, "RESULT": 1, "METADATA": {"r": 2}}}
    events = conn.receive_data(frame(reply))
    assert conn.closed and "METADATA" in str(events[-1])
