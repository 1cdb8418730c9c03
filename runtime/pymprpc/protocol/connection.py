"""Per-connection state machines, free of I/O.

Both roles work the same way (like h2): feed received bytes to `receive_data()` and act
on the events it returns; every `send_*` (and, on a server, the replies the protocol
itself dictates: welcome, pong, 400 for a malformed or duplicate call, 501 before auth,
505/506 for garbage) only *queues* bytes; the shell writes out what `chunks_to_send()`
returns, whenever it suits it. Nothing here raises for bytes the peer sent: a remote
violation closes the connection, and `error` says why.
"""

from __future__ import annotations

import dataclasses
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
    RemoteProtocolError,
    RequestError,
    ResultLimitError,
)
from . import messages
from .codec import Codec
from .constants import (
    DEFAULT_MAX_AUTH_MESSAGE_SIZE,
    DEFAULT_MAX_COLLECTION_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    PING,
    VERSION,
    Code,
    Compression,
    Feature,
    Key,
)
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


def _detached(error: MPRPCError) -> MPRPCError:
    """`error` without its traceback and chained exceptions, to be stored.

    A stored exception's traceback holds the frames that raised it, and they hold the
    decoded message and the connection itself: a reference cycle that keeps a failed
    (possibly huge) message alive until a full garbage collection.
    """
    error.__traceback__ = None
    error.__cause__ = None
    error.__context__ = None
    return error


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
        self._pairs = [(_utf8(u), _utf8(p)) for u, p in (pairs or ())]

    def check(self, username: str | None, password: str | None) -> bool:
        """Whether the pair is accepted (with none configured: only an anonymous login)."""
        if not self._pairs:
            # No credentials configured: only an anonymous login is accepted.
            return not username and not password
        user = _utf8(username or "")
        pw = _utf8(password or "")
        ok = False
        # Compare against every pair without short-circuiting, so timing does not reveal
        # which user names exist or how much of a password matched.
        for u, p in self._pairs:
            ok |= hmac.compare_digest(u, user) & hmac.compare_digest(p, pw)
        return ok

    def knows(self, username: str | None) -> bool:
        """Whether `username` is one of the configured accounts (compared in constant
        time, so the answer's timing does not reveal which names exist)."""
        user = _utf8(username or "")
        known = False
        for u, _ in self._pairs:
            known |= hmac.compare_digest(u, user)
        return known


def _utf8(text: str) -> bytes:
    # A JSON peer can send a lone surrogate ("\\ud800"): it must fail the login, not the
    # connection handler.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What a server connection announces and enforces."""

    version: str | None = None
    description: str | None = None
    idle_timeout: float | None = 180.0
    debug: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_auth_message_size: int = DEFAULT_MAX_AUTH_MESSAGE_SIZE
    max_collection_len: int = DEFAULT_MAX_COLLECTION_LEN
    features: frozenset[Feature] = ALL_FEATURES


def _reframe(old: Framer, rest: Sequence[Payload], new: Framer) -> list[Payload]:
    """Move bytes received past a framing switch into the new framer."""
    pending = b"".join(b"".join(old.frame(bytes(p))) for p in rest) + old.take_buffer()
    return new.feed(pending) if pending else []


class _Connection:
    def __init__(self, max_message_size: int, max_items: int) -> None:
        self.state = _AUTHENTICATING
        self.max_message_size = max_message_size
        self.max_items = max_items
        self.features: frozenset[Feature] = frozenset()
        self._framer: Framer = SeparatorFramer(max_message_size)
        self._codec: Codec | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self.error: MPRPCError | None = None
        # Message sizes, for metrics: None (the default) measures nothing. See
        # `ServerConnection.measure_sizes` and `ClientConnection.measure_sizes`.
        self._sizes: list[int] | None = None

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def codec(self) -> Codec:
        return self._codec or Codec(max_size=self.max_message_size, max_items=self.max_items)

    @property
    def pending_bytes(self) -> int:
        """How many bytes `chunks_to_send()` would return."""
        return self._out_size

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet parsed (a partial frame)."""
        return self._framer.buffered

    def chunks_to_send(self) -> list[bytes]:
        """Take the bytes queued for the peer since the last call (empty if none).

        Returns:
            Wire chunks in order: small ones joined, large payloads left uncopied. Write
            them all, in order, before the next call.
        """
        if not self._out:
            return []
        out, self._out, self._out_size = self._out, [], 0
        return coalesce(out)

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
    """The server's side of one connection.

    Until the client has authenticated, messages are limited to
    `settings.max_auth_message_size` (on the wire and after decompression); afterwards to
    `settings.max_message_size`.
    """

    def __init__(self, settings: ServerSettings, credentials: Credentials) -> None:
        super().__init__(settings.max_message_size, settings.max_collection_len)
        self.settings = settings
        self.credentials = credentials
        self._auth_limit = min(settings.max_auth_message_size, settings.max_message_size)
        self._framer.max_size = self._auth_limit
        self._inflight: dict[str, bool] = {}  # ID -> its stream has started
        self._deadlines = False  # DEADLINE negotiated
        self._head = b""  # the first byte received, until the codec is known
        self._metadata = False  # METADATA negotiated
        self._oneway = False  # ONEWAY negotiated

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Parse received bytes.

        Returns:
            The events of every message now complete, in order. Replies the protocol
            dictates are queued for `chunks_to_send()`. After a protocol violation the
            connection is closed (`closed`, `error`), its 505/506/501 reply is queued and
            the events parsed before it are still returned. Never raises, whatever the
            bytes.
        """
        if self.state is _CLOSED:
            return []
        events: list[ServerEvent] = []
        if self._codec is None and not self._head:
            self._head = data[:1]
        measure = self._sizes is not None  # a flag on the server: see measure_sizes
        try:
            payloads = self._framer.feed(data)
            i = 0
            while i < len(payloads) and not self.closed:  # a message may close it
                payload = payloads[i]
                i += 1
                codec = self._codec
                if codec is None:
                    codec = self._codec = Codec.detect(payload, self._auth_limit, self.max_items)
                event = self._handle(codec.decode(payload))
                if event is None:
                    continue
                events.append(event)
                if measure and type(event) is CallRequest:
                    object.__setattr__(event, "size", len(payload) + self._framer.overhead)
                if type(event) is Authenticated and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
        except RemoteProtocolError as exc:
            if self._codec is None:
                # The first message was refused before its codec was known (too big,
                # say): a JSON client still gets its error in JSON.
                self._codec = Codec.for_reply(self._head, self._auth_limit, self.max_items)
            self.fail(exc)
        return events

    def measure_sizes(self) -> None:
        """From now on, set each `CallRequest`'s `size`: its frame's bytes (for
        metrics; a connection that does not measure leaves it unset and pays nothing)."""
        self._sizes = []

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
            raise RemoteProtocolError("the connection is already authenticated", syntax=False)
        raise RemoteProtocolError("message is neither a heartbeat nor a call")

    def _authenticate(self, msg: dict[str, Any]) -> Authenticated | None:
        username, password, wanted = messages.parse_auth(msg)
        if not self.credentials.check(username, password):
            self.fail(LoginError("unknown user name or wrong password"))
            return None
        announced = Key.FEATURES in msg
        self.features = wanted & self.settings.features
        self._deadlines = Feature.DEADLINE in self.features
        self._metadata = Feature.METADATA in self.features
        self._oneway = Feature.ONEWAY in self.features
        # Authenticated: from now on the full message size applies.
        codec = self._codec = dataclasses.replace(self.codec, max_size=self.max_message_size)
        self._framer.max_size = self.max_message_size
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
            request = messages.parse_call(msg, self._deadlines, self._metadata, self._oneway)
        except RequestError as exc:
            self._queue_error(_reply_id(msg.get(Key.ID)), exc)
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
        # Answered like a call with the same ID would be: 400 echoing an integer or empty
        # ID, 506 only when there is no ID to answer.
        if not isinstance(id, str) or not id:
            self._queue_error(
                _reply_id(id),
                RequestError(f"CANCEL needs the string ID of a call, got {messages.describe(id)}"),
            )
            return None
        if Feature.CANCEL not in self.features:
            self._queue_error(id, RequestError("CANCEL was not negotiated on this connection"))
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
            self.fail(RemoteProtocolError(error.message))
            return
        try:
            self._queue(messages.call_error(id, error, frame))
        except LocalProtocolError:
            # DATA (echoed arguments, traceback) made it undeliverable: send the bare error.
            bare = type(error)(error.message, exception=error.exception, id=error.id)
            self._queue(messages.call_error(id, bare, None))

    # -- outcomes reported by the shell ---------------------------------------------

    def send_result(
        self,
        id: str,
        value: Any,
        *,
        deprecated: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Queue the result of call `id` (200, or 300 if `deprecated`) and retire the ID.

        `metadata` (response metadata) goes with it when the connection negotiated
        `metadata`. A value that cannot be sent (not encodable, over the size limit,
        containing the separator in legacy framing, or malformed metadata) is answered
        with 405 naming the problem instead. Nothing is queued for an ID not in flight
        (cancelled, already answered) or once the connection is closed. Never raises.
        """
        if self._inflight.pop(id, None) is None or self.state is _CLOSED:
            return
        try:
            if metadata and self._metadata:
                metadata = self._check_response_metadata(metadata)
            else:
                metadata = None
            self._queue(messages.result(id, value, deprecated=deprecated, metadata=metadata))
        except LocalProtocolError as exc:
            self._queue_error(id, ResultLimitError(f"result not delivered: {exc}", id=id))

    def send_stream_start(
        self, id: str, *, deprecated: bool = False, metadata: dict[str, str] | None = None
    ) -> bool:
        """Queue 201 (301 if `deprecated`) for call `id`, with `metadata` (response
        metadata) when the connection negotiated `metadata` (malformed: 405 instead).

        Returns:
            False if the call is no longer wanted (cancelled, connection closed): do not
            produce its items.
        """
        if id not in self._inflight or self.closed:
            return False
        self._inflight[id] = True
        code = Code.EXPIRE_STREAM_START if deprecated else Code.STREAM_START
        if metadata and self._metadata:
            try:
                fields = {Key.METADATA: self._check_response_metadata(metadata)}
            except LocalProtocolError as exc:
                self.send_error(id, ResultLimitError(f"stream not started: {exc}", id=id))
                return False
            self._queue(messages.response(code, id, **fields))
        else:
            self._queue(messages.response(code, id))
        return True

    @staticmethod
    def _check_response_metadata(metadata: dict[str, str]) -> dict[str, str]:
        try:
            return messages.check_metadata(metadata)
        except ValueError as exc:
            raise LocalProtocolError(f"response metadata not sent: {exc}") from None

    def send_stream_item(self, id: str, value: Any) -> bool:
        """Queue one item (202) of stream `id`.

        Returns:
            False if the stream must stop: cancelled, connection closed, or the item could
            not be sent (then a 405 naming the problem is queued and the ID retired).
        """
        if not self._inflight.get(id) or self.state is _CLOSED:
            return False
        try:
            self._queue(messages.stream_item(id, value))
        except LocalProtocolError as exc:
            self.send_error(id, ResultLimitError(f"stream item not delivered: {exc}", id=id))
            return False
        return True

    def send_stream_end(self, id: str) -> None:
        """Queue 206 for stream `id` and retire the ID (nothing if no longer in flight)."""
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue(messages.response(Code.STREAM_END, id))

    def send_error(self, id: str, error: MPRPCError, *, frame: str | None = None) -> None:
        """Queue a call error for `id` and retire the ID.

        `frame` (a traceback) is sent only in debug mode; if the error's DATA cannot be
        encoded, the bare error is sent. Nothing is queued for an ID not in flight.
        """
        if self._inflight.pop(id, None) is None or self.closed:
            return
        self._queue_error(id, error, frame if self.settings.debug else None)

    def release(self, id: str) -> None:
        """Retire an ID whose outcome is kept rather than sent (RETURN false)."""
        self._inflight.pop(id, None)

    def fail(self, error: MPRPCError) -> None:
        """Queue the connection-level error for `error` and close.

        The code sent is `error.reply_code` for a `RemoteProtocolError` (505/506), the
        error's own code for a 5xx error, else 500. `error` is kept, without its
        traceback, in `self.error`.
        """
        if self.closed:
            return
        self.error = _detached(error)
        if isinstance(error, RemoteProtocolError):
            code = error.reply_code
        elif error.code is not None and error.code >= 500:
            code = error.code
        else:
            code = Code.SERVER_ERROR
        # A bare code always encodes: no separator, far below any size limit.
        self._push(self._encode(messages.connection_error(code)))
        self.state = _CLOSED
        self._inflight.clear()
        self._framer.clear()  # a closed connection parses nothing more


def _reply_id(raw: Any) -> str | int | None:
    """The ID to echo in a 400 for a bad call or cancel, None if there is none."""
    if isinstance(raw, str) or (isinstance(raw, int) and not isinstance(raw, bool)):
        return raw
    return None


class ClientConnection(_Connection):
    """The client's side of one connection.

    `max_collection_len` bounds the arrays and maps of replies (default: only the message
    size does, as each element takes at least one byte).
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        json: bool = False,
        compression: Compression | None = None,
        features: frozenset[Feature] = ALL_FEATURES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_collection_len: int | None = None,
    ) -> None:
        # A client trusts its server more than a server its clients: by default only the
        # message size bounds a reply's collections (each element takes at least a byte).
        max_items = max_message_size if max_collection_len is None else max_collection_len
        super().__init__(max_message_size, max_items)
        self._codec = Codec(
            json=json,
            compression=compression,
            max_size=max_message_size,
            max_items=max_items,
        )
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
        self._metadata = False  # METADATA negotiated

    def start(self) -> None:
        """Queue the auth request: the first bytes a client sends.

        Raises:
            LocalProtocolError: the credentials cannot be encoded.
        """
        self._push(
            self._encode(messages.auth_request(self._username, self._password, self._wanted))
        )

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Parse bytes received from the server.

        Returns:
            The events of every message now complete, in order; events of calls no
            longer pending are dropped. Bytes that violate the protocol close the
            connection and end the list with `ConnectionFailed(RemoteProtocolError)`;
            a 5xx reported by the server ends it with `ConnectionFailed` of that error.
            Never raises, whatever the bytes.
        """
        if self.state is _CLOSED:
            return []
        events: list[ClientEvent] = []
        codec = self._codec or self.codec
        sizes = self._sizes
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
                if sizes is not None:
                    sizes.append(len(payload) + self._framer.overhead)
                if type(event) is Welcome and Feature.LENGTH_FRAMING in self.features:
                    payloads = self._use_length_framing(payloads[i:])
                    i = 0
        except RemoteProtocolError as exc:
            events.append(self.close(exc))
        return events

    def measure_sizes(self) -> None:
        """From now on, note the frame size of each message that `receive_data` returns
        an event for; `take_sizes()` gives them (for metrics: a connection that does
        not measure pays nothing)."""
        if self._sizes is None:
            self._sizes = []

    def take_sizes(self) -> list[int]:
        """The frame sizes, in bytes, of the events `receive_data` returned since the
        last call, in the same order (empty unless `measure_sizes()` was called; a
        `ConnectionFailed` for bytes that could not be read has none)."""
        sizes = self._sizes
        if not sizes:
            return []
        self._sizes = []
        return sizes

    def _handle(self, event: ClientEvent) -> ClientEvent | None:
        if self.state is _READY:
            # Most frequent first; events of calls no longer pending are dropped. A reply
            # out of order (202/206 before 201, a second 201, 200 after 201) fails its call
            # with RemoteProtocolError: waiting for a 201 that never comes would hang it.
            if type(event) is StreamItem:
                started = self._pending.get(event.id)
                if started is False:
                    return self._out_of_order(event.id, "stream item (202) before its start (201)")
                return event if started else None
            if type(event) is Result or type(event) is CallFailed:
                started = self._pending.pop(event.id, None)
                if started and type(event) is Result:
                    return self._out_of_order(event.id, "result (200/300) inside a stream")
                return event if started is not None else None
            if type(event) is StreamEnd:
                started = self._pending.pop(event.id, None)
                if started is False:
                    return self._out_of_order(event.id, "stream end (206) without a stream")
                return event if started else None
            if type(event) is StreamStart:
                started = self._pending.get(event.id)
                if started is None:
                    return None
                if started:
                    return self._out_of_order(event.id, "second stream start (201)")
                self._pending[event.id] = True
                return event
            if type(event) is ConnectionFailed:
                return self.close(event.error)
            if type(event) is Welcome:
                return self.close(RemoteProtocolError("unexpected second welcome reply"))
            return event  # Pong
        if isinstance(event, ConnectionFailed):
            return self.close(event.error)
        if not isinstance(event, Welcome):
            return self.close(RemoteProtocolError(f"expected the welcome reply, got {event}"))
        unasked = event.features - self._wanted
        if unasked:
            # The server would switch framing (or expect cancels) this client did not
            # ask for: nothing after this welcome could be read.
            names = ", ".join(sorted(f.value for f in unasked))
            return self.close(
                RemoteProtocolError(
                    f"malformed welcome reply from the server: FEATURES lists {names}, "
                    "which this client did not ask for"
                )
            )
        self.welcome = event
        self.features = event.features
        self._deadlines = Feature.DEADLINE in self.features
        self._metadata = Feature.METADATA in self.features
        self.state = _READY
        return event

    def _out_of_order(self, id: str, what: str) -> CallFailed:
        """Fail call `id` for a reply the protocol does not allow at this point; later
        replies to it are dropped (it is no longer pending)."""
        self._pending.pop(id, None)
        error = RemoteProtocolError(f"the server sent a {what} for call {id}", syntax=False)
        error.id = id
        return CallFailed(id, error)

    def close(self, error: MPRPCError) -> ConnectionFailed:
        """Mark the connection closed (e.g. the socket dropped); pending calls are dropped.

        Returns:
            The `ConnectionFailed` event for `error` (kept, without traceback, in `error`).
        """
        self.state = _CLOSED
        self.error = _detached(error)
        self._pending.clear()
        self._framer.clear()
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
        metadata: dict[str, str] | None = None,
        oneway: bool = False,
    ) -> str:
        """Queue a call (a `deadline` in seconds and `metadata` are sent only if
        negotiated).

        `oneway`: nothing comes back. With feature `oneway` negotiated the call carries
        `ONEWAY` (the server keeps nothing for it); otherwise it falls back to
        `RETURN: false`.

        Returns:
            The call's ID; its outcome arrives as events with that ID (none if `returns`
            is False or `oneway`: fetch a kept outcome with `system.getresult`).

        Raises:
            LocalProtocolError: the connection is not ready, the call cannot be encoded
                or exceeds the maximum message size, or `metadata` is malformed (nothing
                is queued).
        """
        if oneway:
            returns = False
            oneway = Feature.ONEWAY in self.features
        if self.state is not _READY:
            raise LocalProtocolError(f"cannot call {method!r}: connection is {self.state.value}")
        if id is None:
            self._id_counter += 1
            id = f"{self._id_prefix}{self._id_counter & 0xFFFFFFFFFFFF:012x}"
        if not self._deadlines:
            deadline = None
        if metadata and self._metadata:
            try:
                messages.check_metadata(metadata)
            except ValueError as exc:
                raise LocalProtocolError(f"cannot call {method!r}: {exc}") from None
        else:
            metadata = None
        self._push(
            self._encode(
                messages.call(
                    id,
                    method,
                    list(args),
                    kwargs or {},
                    returns,
                    deadline,
                    metadata,
                    oneway=oneway,
                )
            )
        )
        if returns:
            self._pending[id] = False
        return id

    def send_ping(self) -> None:
        """Queue a heartbeat; the server answers with a `Pong` event."""
        self._push(self._encode(messages.ping()))

    def send_cancel(self, id: str) -> bool:
        """Stop tracking call `id`; queue a CANCEL for it if that feature was negotiated.

        Returns:
            Whether a CANCEL was queued.
        """
        if self._pending.pop(id, None) is None or Feature.CANCEL not in self.features:
            return False
        if self.closed:
            return False
        self._push(self._encode(messages.cancel(id)))
        return True
