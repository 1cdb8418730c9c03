"""The sans-IO core of MPRPC: framing, codec, messages and connection state machines.

Nothing here touches a socket or an event loop; the server and both clients are thin I/O
shells around `ServerConnection` and `ClientConnection`.
"""

from .codec import Codec
from .connection import (
    ALL_FEATURES,
    ClientConnection,
    Credentials,
    ServerConnection,
    ServerSettings,
    State,
)
from .constants import (
    DEFAULT_MAX_AUTH_MESSAGE_SIZE,
    DEFAULT_MAX_COLLECTION_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    SEPARATOR,
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
    Pong,
    Result,
    ServerEvent,
    StreamEnd,
    StreamItem,
    StreamStart,
    Welcome,
)
from .framing import Framer, LengthFramer, SeparatorFramer
from .messages import PlainCall

__all__ = [
    "ALL_FEATURES",
    "DEFAULT_MAX_AUTH_MESSAGE_SIZE",
    "DEFAULT_MAX_COLLECTION_LEN",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "SEPARATOR",
    "VERSION",
    "Authenticated",
    "CallFailed",
    "CallRequest",
    "CancelRequest",
    "ClientConnection",
    "ClientEvent",
    "Code",
    "Codec",
    "Compression",
    "ConnectionFailed",
    "Credentials",
    "Feature",
    "Framer",
    "Key",
    "LengthFramer",
    "PlainCall",
    "Pong",
    "Result",
    "SeparatorFramer",
    "ServerConnection",
    "ServerEvent",
    "ServerSettings",
    "State",
    "StreamEnd",
    "StreamItem",
    "StreamStart",
    "Welcome",
]
