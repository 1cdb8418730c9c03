"""Per-connection state machines, free of I/O.

Feed received bytes to `receive_data()`, act on the events it returns, and write out what
`data_to_send()` returns (or `chunks_to_send()`, which leaves large payloads uncopied).
Replies the protocol itself dictates (pong, 400 for a malformed or duplicate call, 501 for
a call before auth, 505/506 for garbage) are queued by the connection; the shell only runs
calls and reports their outcomes through `send_*`.
"""

from __future__ import annotations

import enum
import hmac
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import (
    LocalProtocolError,
    LoginError,
    MPRPCError,
    ProtocolException,
    ProtocolSyntaxException,
    RequestError,
    ResultLimitError,
)
from . import messages
from .codec import Codec
from .constants import DEFAULT_MAX_MESSAGE_SIZE, PING, VERSION, Code, Compression, Feature, Key
from .events import (
    Authenticated,
    CallFailed,
    CallRequest,
    CancelRequest,
    ClientEvent,
    ConnectionFailed,
    Result,
    ServerEvent,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from .framing import Framer, LengthFramer, Payload, SeparatorFramer, coalesce

ALL_FEATURES = frozenset(Feature)


class State(enum.Enum):
    """Life of a connection: authentication, then calls, then closed."""

    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


# Read for every message: module constants cost less than enum member lookups.
_AUTHENTICATING: Final = State.AUTHENTICATING
_READY: Final = State.READY
_CLOSED: Final = State.CLOSED


class Credentials:
    """Accepted (user, password) pairs, compared in constant time."""

    def __init__(self, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        self._pairs = [(u.encode(), p.encode()) for u, p in (pairs or ())]

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def check(self, username: str | None, password: str | None) -> bool:
        """Whether the pair is accepted (with none configured: only an anonymous login)."""
        if not self._pairs:
            # No credentials configured: only an anonymous login is accepted.
            return not username and not password
        user = (username or "").encode()
        pw = (password or "").encode()
        ok = False
        # Compare against every pair without short-circuiting, so timing does not reveal
        # which user names exist or how much of a password matched.
        for u, p in self._pairs:
            ok |= hmac.compare_digest(u, user) & hmac.compare_digest(p, pw)
        return ok


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What a server connection announces and enforces."""

    version: str | None = None
    description: str | None = None
    idle_timeout: float | None = 180.0
    debug: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    features: frozenset[Feature] = ALL_FEATURES


def _reframe(old: Framer, rest: Sequence[Payload], new: Framer) -> list[Payload]:
    """Move bytes received past a framing switch into the new framer."""
    pending = b"".join(b"".join(old.frame(bytes(p))) for p in rest) + old.take_buffer()
    return new.feed(pending) if pending else []


class _Connection:
    def __init__(self, max_message_size: int) -> None:
        self.state = _AUTHENTICATING
        self.max_message_size = max_message_size
        self.features: frozenset[Feature] = frozenset()
        self._framer: Framer = SeparatorFramer(max_message_size)
        self._codec: Codec | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self.error: MPRPCError | None = None

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def codec(self) -> Codec:
        return self._codec or Codec(max_size=self.max_message_size)

    @property
    def pending_bytes(self) -> int:
        """How many bytes `data_to_send()` would return."""
        return self._out_size

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer since the last call (empty if none)."""
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_size = 0
        return data

    def chunks_to_send(self) -> list[bytes]:
        """Like `data_to_send`, as chunks: small ones joined, large ones left uncopied."""
        return coalesce(self._take())

    def _take(self) -> list[bytes]:
        out, self._out, self._out_size = self._out, [], 0
        return out

    def _push(self, chunks: list[bytes]) -> None:
        self._out += chunks
        for chunk in chunks:
            self._out_size += len(chunk)

    def _encode(self, message: dict[str, Any]) -> list[bytes]:
        """Frame one message; LocalProtocolError if it cannot be sent on this connection."""
        payload = (self._codec or self.codec).encode(message)
        if len(payload) > self.max_message_size:
            raise LocalProtocolError(
                f"message of {len(payload)} bytes exceeds the maximum message size of "
                f"{self.max_message_size} bytes (raise max_message_size on both sides)"
            )
        return self._framer.frame(payload)

    def _use_length_framing(self, rest: Sequence[Payload]) -> list[Payload]:
        new = LengthFramer(self.max_message_size)
        pending = _reframe(self._framer, rest, new)
        self._framer = new
        return pending


class ServerConnection(_Connection):
    """The server's side of one connection."""

    def __init__(self, settings: ServerSettings, credentials: Credentials) -> None:
        super().__init__(settings.max_message_size)
        self.settings = settings
        self.credentials = credentials
        self._inflight: dict[str, bool] = {}  # ID -> its stream has started
        self._deadlines = False  # DEADLINE negotiated

    @property
    def inflight(self) -> int:
        """How many calls are running (accepted and not yet answered or released)."""
        return len(self._inflight)

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed bytes received from the client; return the events the shell acts on.

        Replies the protocol dictates (pong, call refusals, 501, 505/506) are queued for
        `data_to_send()` here; a protocol violation closes the connection (`closed`,
        `error`) after queueing its error code, instead of raising.

        Returns:
            `Authenticated`, `CallRequest` and `CancelRequest` events, in order.
        """
        if self.state is _CLOSED:
            return []
        events: list[ServerEvent] = []
        try:
            payloads = self._framer.feed(data)
            i = 0
            while i < len(payloads) and not self.closed:  # a message may close it
                payload = payloads[i]
                i += 1
                codec = self._codec
                if codec is None:
                    codec = self._codec = Codec.detect(payload, self.max_message_size)
                event = self._handle(codec.decode(payload))
                if event is None:
                    continue
                events.append(event)
                if type(event) is Authenticated and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
        except ProtocolException as exc:
            self.fail(exc)
        return events

    def _handle(self, msg: Any) -> ServerEvent | None:
        if type(msg) is not dict or msg.get(Key.MPRPC) != VERSION:
            msg = messages.check_envelope(msg)  # raises, saying what is wrong
        if self.state is _AUTHENTICATING:
            if Key.AUTH not in msg:
                self.fail(LoginError("the first message must be the auth request"))
                return None
            return self._authenticate(msg)
        if Key.ID in msg:
            if msg.get(Key.CANCEL) is not None:
                return self._cancel(msg[Key.ID])
            return self._call(msg)
        if msg.get(Key.HEARTBEAT) == PING:
            self._queue(messages.pong())
            return None
        if Key.AUTH in msg:
            raise ProtocolException("the connection is already authenticated")
        raise ProtocolSyntaxException("message is neither a heartbeat nor a call")

    def _authenticate(self, msg: dict[str, Any]) -> Authenticated | None:
        username, password, wanted = messages.parse_auth(msg)
        if not self.credentials.check(username, password):
            self.fail(LoginError("unknown user name or wrong password"))
            return None
        announced = Key.FEATURES in msg
        self.features = wanted & self.settings.features
        self._deadlines = Feature.DEADLINE in self.features
        codec = self.codec
        self._queue(
            messages.welcome(
                version=self.settings.version,
                description=self.settings.description,
                debug=codec.json,
                compression=codec.compression,
                idle_timeout=self.settings.idle_timeout or 0,
                features=self.features if announced else None,
            )
        )
        self.state = _READY
        return Authenticated(username, self.features)

    def _call(self, msg: dict[str, Any]) -> CallRequest | None:
        try:
            request = messages.parse_call(msg, self._deadlines)
        except RequestError as exc:
            raw_id = msg.get(Key.ID)
            self._queue_error(raw_id if isinstance(raw_id, str | int) else None, exc)
            return None
        if request.id in self._inflight:
            # The original call keeps its ID; only the duplicate is refused.
            self._queue_error(
                request.id,
                RequestError(f"duplicate in-flight ID {request.id!r}", id=request.id),
            )
            return None
        self._inflight[request.id] = False
        return request

    def _cancel(self, id: Any) -> CancelRequest | None:
        if Feature.CANCEL not in self.features or not isinstance(id, str):
            self._queue_error(
                id if isinstance(id, str) else None,
                RequestError("CANCEL was not negotiated on this connection"),
            )
            return None
        if self._inflight.pop(id, None) is None:
            return None  # already finished: nothing left to cancel
        return CancelRequest(id)

    def _queue(self, message: dict[str, Any]) -> None:
        self._push(self._encode(message))

    def _queue_error(
        self, id: str | int | None, error: MPRPCError, frame: str | None = None
    ) -> None:
        if id is None:
            self.fail(ProtocolSyntaxException(error.message))
            return
        try:
            self._queue(messages.call_error(id, error, frame))
        except LocalProtocolError:
            # DATA (echoed arguments, traceback) made it undeliverable: send the bare error.
            bare = type(error)(error.message, exception=error.exception, id=error.id)
            self._queue(messages.call_error(id, bare, None))

    # -- outcomes reported by the shell ---------------------------------------------

    def send_result(self, id: str, value: Any, *, deprecated: bool = False) -> None:
        """Queue the result of call `id` and retire the ID."""
        if self._inflight.pop(id, None) is None or self.state is _CLOSED:
            return
        try:
            self._queue(messages.result(id, value, deprecated=deprecated))
        except LocalProtocolError as exc:
            self._queue_error(id, ResultLimitError(f"result not delivered: {exc}", id=id))

    def send_stream_start(self, id: str, *, deprecated: bool = False) -> bool:
        """Queue 201/301 for call `id`; False if the call is no longer wanted."""
        if id not in self._inflight or self.closed:
            return False
        self._inflight[id] = True
        code = Code.EXPIRE_STREAM_START if deprecated else Code.STREAM_START
        self._queue(messages.response(code, id))
        return True

    def send_stream_item(self, id: str, value: Any) -> bool:
        """Queue one item; False if the stream must stop (cancelled or undeliverable)."""
        if not self._inflight.get(id) or self.state is _CLOSED:
            return False
        try:
            self._queue(messages.stream_item(id, value))
        except LocalProtocolError as exc:
            self.send_error(id, ResultLimitError(f"stream item not delivered: {exc}", id=id))
            return False
        return True

    def send_stream_end(self, id: str) -> None:
        """Queue 206 for call `id` and retire the ID (nothing if no longer wanted)."""
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue(messages.response(Code.STREAM_END, id))

    def send_error(self, id: str, error: MPRPCError, *, frame: str | None = None) -> None:
        """Queue a call error for `id` (a traceback `frame` only in debug mode)."""
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue_error(id, error, frame if self.settings.debug else None)

    def release(self, id: str) -> None:
        """Retire an ID whose outcome is kept rather than sent (RETURN false)."""
        self._inflight.pop(id, None)

    def fail(self, error: MPRPCError) -> None:
        """Queue the connection-level error for `error` and close."""
        if self.closed:
            return
        self.error = error
        code = error.code if error.code is not None and error.code >= 500 else Code.SERVER_ERROR
        # A bare code always encodes: no separator, far below any size limit.
        self._push(self._encode(messages.connection_error(code)))
        self.state = _CLOSED
        self._inflight.clear()


class ClientConnection(_Connection):
    """The client's side of one connection."""

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        json: bool = False,
        compression: Compression | None = None,
        features: frozenset[Feature] = ALL_FEATURES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(max_message_size)
        self._codec = Codec(json=json, compression=compression, max_size=max_message_size)
        self._username = username
        self._password = password
        self._wanted = features
        self.welcome: Welcome | None = None
        self._pending: dict[str, bool] = {}  # ID -> its stream has started
        # UUID-shaped IDs: a random prefix per connection and a counter in the last 12 hex
        # digits, unique like uuid4 for our purposes at a fraction of its cost.
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_counter = 0
        self._deadlines = False  # DEADLINE negotiated

    def start(self) -> bytes:
        """The auth request: the first bytes a client sends."""
        return b"".join(
            self._encode(messages.auth_request(self._username, self._password, self._wanted))
        )

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes received from the server; return the events they complete.

        Replies for calls no longer pending are dropped. A protocol violation or a
        connection error closes the connection and ends the list with `ConnectionFailed`,
        instead of raising.

        Returns:
            `Welcome`, `Pong`, `Result`, `StreamStart`, `StreamItem`, `StreamEnd`,
            `CallFailed` and `ConnectionFailed` events, in order.
        """
        if self.state is _CLOSED:
            return []
        events: list[ClientEvent] = []
        codec = self._codec or self.codec
        try:
            payloads = self._framer.feed(data)
            i = 0
            while i < len(payloads) and not self.closed:  # a message may close it
                payload = payloads[i]
                i += 1
                event = self._handle(messages.parse_response(codec.decode(payload)))
                if event is None:
                    continue
                events.append(event)
                if type(event) is Welcome and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
        except ProtocolException as exc:
            events.append(self.close(exc))
        return events

    def _handle(self, event: ClientEvent) -> ClientEvent | None:
        if self.state is _READY:
            # Most frequent first; events of calls no longer pending are dropped.
            if type(event) is StreamItem:
                return event if self._pending.get(event.id) else None
            if type(event) is Result or type(event) is CallFailed or type(event) is StreamEnd:
                return event if self._pending.pop(event.id, None) is not None else None
            if type(event) is StreamStart:
                if event.id not in self._pending:
                    return None
                self._pending[event.id] = True
                return event
            if type(event) is ConnectionFailed:
                return self.close(event.error)
            if type(event) is Welcome:
                return self.close(ProtocolException("unexpected second welcome reply"))
            return event  # Pong
        if isinstance(event, ConnectionFailed):
            return self.close(event.error)
        if not isinstance(event, Welcome):
            return self.close(ProtocolException(f"expected the welcome reply, got {event}"))
        self.welcome = event
        self.features = event.features & self._wanted
        self._deadlines = Feature.DEADLINE in self.features
        self.state = _READY
        return event

    def close(self, error: MPRPCError) -> ConnectionFailed:
        """Mark the connection closed (e.g. the socket dropped); pending calls are dropped."""
        self.state = _CLOSED
        self.error = error
        self._pending.clear()
        return ConnectionFailed(error)

    def send_call(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        returns: bool = True,
        deadline: float | None = None,
        id: str | None = None,
    ) -> tuple[str, list[bytes]]:
        """Frame a call; returns its ID and wire chunks. LocalProtocolError if unsendable."""
        if self.state is not _READY:
            raise LocalProtocolError(f"cannot call {method!r}: connection is {self.state.value}")
        if id is None:
            self._id_counter += 1
            id = f"{self._id_prefix}{self._id_counter & 0xFFFFFFFFFFFF:012x}"
        if not self._deadlines:
            deadline = None
        data = self._encode(messages.call(id, method, list(args), kwargs or {}, returns, deadline))
        if returns:
            self._pending[id] = False
        return id, data

    def send_ping(self) -> bytes:
        """The wire bytes of a heartbeat ping."""
        return b"".join(self._encode(messages.ping()))

    def send_cancel(self, id: str) -> bytes:
        """Stop tracking call `id`; the CANCEL frame if negotiated, else nothing."""
        if self._pending.pop(id, None) is None or Feature.CANCEL not in self.features:
            return b""
        if self.closed:
            return b""
        return b"".join(self._encode(messages.cancel(id)))

    def is_pending(self, id: str) -> bool:
        """Whether call `id` still waits for its result or for the end of its stream."""
        return id in self._pending
