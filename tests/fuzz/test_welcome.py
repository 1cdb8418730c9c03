"""Property test: whatever a server puts in its welcome reply, a client either accepts it
or closes with a RemoteProtocolError naming the field, never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import OLD_WELCOME, pack
from pymprpc.errors import ProtocolException, RemoteProtocolError
from pymprpc.protocol import SEPARATOR, ClientConnection, ConnectionFailed, Welcome

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.sampled_from(["zlib", "bz2", "lzma", "cancel", "deadline", "length-framing"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["VERSION", "DESC", "DEBUG", "COMPRESER", "TIMEOUT", "FEATURES"]


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), values, min_size=1))
def test_any_welcome_is_accepted_or_a_protocol_error(fields: dict[str, Any]) -> None:
    conn = ClientConnection("u", "p")
    conn.start()
    events = conn.receive_data(pack({**OLD_WELCOME, **fields}) + SEPARATOR)
    assert len(events) == 1
    event = events[0]
    if isinstance(event, ConnectionFailed):
        # The server misbehaved: detected here, not the 505 a server reports.
        assert isinstance(event.error, RemoteProtocolError)
        assert type(event.error) is not ProtocolException
        assert str(event.error).startswith("malformed welcome reply from the server: ")
        assert any(key in str(event.error) for key in fields)
    else:
        assert isinstance(event, Welcome)
        assert isinstance(event.features, frozenset)
        assert event.idle_timeout is None or event.idle_timeout > 0
