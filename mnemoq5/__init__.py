"""mnemoq5: MQTT v5 inter-process communication where every client remembers its last values."""

from ._adapter import BrokerLimits
from ._client import ConnectionState, MnemoQ, Stats
from ._errors import (
    ConnectError,
    EnvelopeError,
    InvalidArgumentError,
    InvalidPropertyError,
    InvalidTopicError,
    MnemoqError,
    NotConnectedError,
    PacketTooLargeError,
    ProtocolVersionError,
    StoreError,
    SubscribeError,
)
from ._message import Message
from ._snapshot import Snapshot
from ._sqlite import SqliteStore
from ._stamp import Stamp
from ._store import Entry, MemoryStore, Store, StoreView
from ._topics import topic_matches, validate_topic_filter, validate_topic_name

__version__ = "0.1.0"

__all__ = [
    "MnemoQ",
    "Message",
    "Snapshot",
    "ConnectionState",
    "BrokerLimits",
    "Stats",
    "Stamp",
    "Entry",
    "Store",
    "MemoryStore",
    "SqliteStore",
    "StoreView",
    "topic_matches",
    "validate_topic_name",
    "validate_topic_filter",
    "MnemoqError",
    "InvalidArgumentError",
    "InvalidTopicError",
    "InvalidPropertyError",
    "PacketTooLargeError",
    "EnvelopeError",
    "ConnectError",
    "ProtocolVersionError",
    "NotConnectedError",
    "SubscribeError",
    "StoreError",
]
