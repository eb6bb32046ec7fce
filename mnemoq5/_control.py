"""CBOR payloads of the catch-up protocol: requests, reply chunks and presence.

Pure code: no I/O, no logging. Decoders take arbitrary bytes and return a value or
raise EnvelopeError. Every payload is a CBOR array, not a map, so there are no
duplicate keys to resolve. The schemas in CDDL are in spec/protocol.md.
"""

from __future__ import annotations

import bisect
import itertools
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cbor2

from ._envelope import RESERVED_PREFIX, UserProperties
from ._errors import EnvelopeError, InvalidTopicError
from ._message import Message, replayed_message
from ._stamp import MAX_COUNTER, MAX_MILLIS, Stamp
from ._store import Entry
from ._topics import MAX_TOPIC_BYTES, validate_topic_filter, validate_topic_name

__all__ = [
    "PROTOCOL_VERSION",
    "ControlTopics",
    "Request",
    "ReplyEntry",
    "ReplyChunk",
    "encode_request",
    "decode_request",
    "encode_entry",
    "encode_entry_fields",
    "encode_entries",
    "encode_chunk",
    "decode_chunk",
    "decode_reply",
    "split_into_chunks",
    "encode_presence",
    "decode_presence",
]

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class ControlTopics:
    """The topics under the control prefix."""

    prefix: str

    @property
    def request(self) -> str:
        return f"{self.prefix}/req"

    @property
    def presence_filter(self) -> str:
        return f"{self.prefix}/presence/+"

    def presence(self, client_id: str) -> str:
        return f"{self.prefix}/presence/{client_id}"

    def reply(self, client_id: str) -> str:
        return f"{self.prefix}/reply/{client_id}"

    def reply_owner(self, topic: str) -> str | None:
        """Return the client id of a reply topic, or None if ``topic`` is not one."""
        head = f"{self.prefix}/reply/"
        if topic.startswith(head) and "/" not in topic[len(head):] and len(topic) > len(head):
            return topic[len(head):]
        return None

    def contains(self, topic: str) -> bool:
        """Return whether ``topic`` (a name or a filter) lies in the control namespace."""
        return topic == self.prefix or topic.startswith(self.prefix + "/")

    def presence_owner(self, topic: str) -> str | None:
        """Return the client id of a presence topic, or None if ``topic`` is not one."""
        head = f"{self.prefix}/presence/"
        if topic.startswith(head) and "/" not in topic[len(head):] and len(topic) > len(head):
            return topic[len(head):]
        return None


@dataclass(frozen=True, slots=True)
class Request:
    """A catch-up request: the filter, the requester's Maximum Packet Size, the peers asked."""

    topic_filter: str
    maximum_packet_size: int | None
    peers: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class ReplyEntry:
    """One stored value inside a reply chunk."""

    topic: str
    payload: bytes
    stamp: Stamp
    qos: int
    retain: bool
    user_properties: UserProperties
    deleted: bool = False
    expiry: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyChunk:
    """One reply packet: its sequence number, entries, and the total count if it is the last."""

    sequence: int
    entries: tuple[ReplyEntry, ...]
    end_count: int | None


def _loads(data: bytes, what: str) -> object:
    try:
        return cbor2.loads(data)
    except Exception as error:  # cbor2 raises several types for malformed input.
        raise EnvelopeError(f"{what} is not valid CBOR: {error}") from None


def _expect_array(value: object, what: str, sizes: Iterable[int]) -> list[object]:
    if not isinstance(value, list) or len(value) not in tuple(sizes):
        raise EnvelopeError(f"{what} must be a CBOR array of the documented length")
    return value


def _expect_uint(value: object, what: str, maximum: int = 2**64 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise EnvelopeError(f"{what} must be an unsigned integer no larger than {maximum}")
    return value


def _expect_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} must be a text string")
    return value


# -- requests ---------------------------------------------------------------


def encode_request(request: Request) -> bytes:
    peers = sorted(request.peers) if request.peers is not None else None
    return bytes(cbor2.dumps([PROTOCOL_VERSION, request.topic_filter, request.maximum_packet_size, peers]))


def decode_request(data: bytes) -> Request:
    fields = _expect_array(_loads(data, "request"), "request", (4,))
    _expect_uint(fields[0], "request version")
    try:
        topic_filter = validate_topic_filter(_expect_text(fields[1], "request filter"))
    except InvalidTopicError as error:
        raise EnvelopeError(f"request filter is invalid: {error}") from None
    maximum = fields[2]
    if maximum is not None:
        maximum = _expect_uint(maximum, "request maximum packet size", 268_435_460)
    peers = fields[3]
    if peers is not None:
        if not isinstance(peers, list):
            raise EnvelopeError("request peers must be an array of client ids or null")
        peers = frozenset(_expect_text(peer, "request peer") for peer in peers)
    return Request(topic_filter, maximum, peers)


# -- reply chunks -----------------------------------------------------------


def encode_entry(entry: ReplyEntry) -> bytes:
    """Encode one entry; the reply chunk embeds these bytes unchanged."""
    stamp = entry.stamp
    return encode_entry_fields(
        entry.topic,
        entry.payload,
        stamp.millis,
        stamp.counter,
        stamp.writer,
        entry.qos,
        entry.retain,
        entry.user_properties,
        entry.deleted,
        entry.expiry,
    )


def encode_entry_fields(
    topic: str,
    payload: bytes,
    millis: int,
    counter: int,
    writer: str,
    qos: int,
    retain: bool,
    user_properties: UserProperties,
    deleted: bool,
    expiry: int | None,
) -> bytes:
    """Encode an entry from its fields, with the bytes cbor2.dumps gives for the same array.

    The encoding is written out here because one cbor2.dumps call per entry cost
    about as much as the rest of a reply. Every item uses the shortest head, as
    cbor2 does: text and byte strings, unsigned integers, booleans, null and arrays.
    Heads of values below 256 come from tables, and the encoded writer of recent
    stamps from a small cache, because most entries of a reply share one writer.
    """
    topic_bytes = topic.encode("utf-8")
    topic_length = len(topic_bytes)
    payload_length = len(payload)
    writer_encoded = _WRITER_CACHE.get(writer)
    if writer_encoded is None:
        writer_bytes = writer.encode("utf-8")
        writer_encoded = _cbor_head(3, len(writer_bytes)) + writer_bytes
        if len(_WRITER_CACHE) >= _WRITER_CACHE_SIZE:
            _WRITER_CACHE.clear()
        _WRITER_CACHE[writer] = writer_encoded
    if user_properties or qos > 2:
        tail = _cbor_head(0, qos) + (_CBOR_TRUE if retain else _CBOR_FALSE) + _encode_properties(user_properties)
    else:
        tail = _TAILS[qos + 3 if retain else qos]
    parts = (
        b"\x8a" if deleted or expiry is not None else b"\x88",
        _HEADS_TEXT[topic_length] if topic_length < 256 else _cbor_head(3, topic_length),
        topic_bytes,
        _HEADS_BYTES[payload_length] if payload_length < 256 else _cbor_head(2, payload_length),
        payload,
        # Milliseconds since 1970 take the 8-byte form until the year 2106.
        _pack_uint64(27, millis) if 2**32 <= millis < 2**64 else _cbor_head(0, millis),
        _HEADS_UINT[counter] if counter < 256 else _cbor_head(0, counter),
        writer_encoded,
        tail,
    )
    if deleted or expiry is not None:
        extension = (_CBOR_TRUE if deleted else _CBOR_FALSE) + (
            _CBOR_NULL if expiry is None else _cbor_head(0, expiry)
        )
        return b"".join(parts) + extension
    return b"".join(parts)


def encode_entries(entries: Iterable[Entry], now: float, skip: Callable[[str], bool] | None = None) -> list[bytes]:
    """Encode stored entries for a reply, as encode_entry_fields does one by one.

    An entry whose topic ``skip`` returns True for is left out, and so is an entry that
    has expired at ``now`` (seconds since the epoch). The expiry sent is the remaining
    lifetime in whole seconds, rounded up. Entries without a lifetime, deletion or user
    properties are encoded inline, which saves a call per entry.
    """
    encoded: list[bytes] = []
    append = encoded.append
    join = b"".join
    writers = _WRITER_CACHE
    heads_text = _HEADS_TEXT
    heads_bytes = _HEADS_BYTES
    heads_uint = _HEADS_UINT
    tails = _TAILS
    pack_uint64 = _pack_uint64
    for entry in entries:
        topic = entry.topic
        if skip is not None and skip(topic):
            continue
        stamp = entry.stamp
        expires_at = entry.expires_at
        if expires_at is not None:
            expiry = max(0, math.ceil(expires_at - now))
            if expiry == 0:
                continue
        elif not entry.deleted and not entry.user_properties and entry.qos <= 2:
            writer_encoded = writers.get(stamp.writer)
            millis = stamp.millis
            counter = stamp.counter
            if writer_encoded is not None and 2**32 <= millis < 2**64 and counter < 256:
                topic_bytes = topic.encode("utf-8")
                topic_length = len(topic_bytes)
                payload = entry.payload
                payload_length = len(payload)
                append(
                    join(
                        (
                            b"\x88",
                            heads_text[topic_length] if topic_length < 256 else _cbor_head(3, topic_length),
                            topic_bytes,
                            heads_bytes[payload_length] if payload_length < 256 else _cbor_head(2, payload_length),
                            payload,
                            pack_uint64(27, millis),
                            heads_uint[counter],
                            writer_encoded,
                            tails[entry.qos + 3 if entry.retain else entry.qos],
                        )
                    )
                )
                continue
            expiry = None
        else:
            expiry = None
        append(
            encode_entry_fields(
                topic,
                entry.payload,
                stamp.millis,
                stamp.counter,
                stamp.writer,
                entry.qos,
                entry.retain,
                entry.user_properties,
                entry.deleted,
                expiry,
            )
        )
    return encoded


def _encode_properties(user_properties: UserProperties) -> bytes:
    parts = [_cbor_head(4, len(user_properties))]
    for key, value in user_properties:
        key_bytes = key.encode("utf-8")
        value_bytes = value.encode("utf-8")
        parts.append(b"\x82")
        parts.append(_cbor_head(3, len(key_bytes)))
        parts.append(key_bytes)
        parts.append(_cbor_head(3, len(value_bytes)))
        parts.append(value_bytes)
    return b"".join(parts)


_CBOR_FALSE = b"\xf4"
_CBOR_TRUE = b"\xf5"
_CBOR_NULL = b"\xf6"
# Heads of the values below 24, which fit in the initial byte; indexed by major type.
_SHORT_HEADS = [[bytes([major << 5 | value]) for value in range(24)] for major in range(8)]


def _array_header(length: int) -> bytes:
    return _cbor_head(4, length)


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return _SHORT_HEADS[major][value]
    if value < 2**8:
        return bytes([major << 5 | 24, value])
    if value < 2**16:
        return bytes([major << 5 | 25]) + value.to_bytes(2, "big")
    if value < 2**32:
        return bytes([major << 5 | 26]) + value.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + value.to_bytes(8, "big")


# Heads of the values below 256 for unsigned integers, byte strings and text strings.
_HEADS_UINT = [_cbor_head(0, value) for value in range(256)]
_HEADS_BYTES = [_cbor_head(2, value) for value in range(256)]
_HEADS_TEXT = [_cbor_head(3, value) for value in range(256)]
# QoS, retain flag and an empty array of user properties, indexed by qos + 3 * retain.
_TAILS = [bytes([qos]) + flag + b"\x80" for flag in (_CBOR_FALSE, _CBOR_TRUE) for qos in range(3)]
_pack_uint64 = struct.Struct(">BQ").pack
_WRITER_CACHE: dict[str, bytes] = {}
_WRITER_CACHE_SIZE = 256


# The largest chunk header: a 3-array, a uint64 sequence, an array head, a uint64 count.
CHUNK_OVERHEAD = 1 + 9 + 9 + 9


def encode_chunk(sequence: int, encoded_entries: Sequence[bytes], end_count: int | None) -> bytes:
    """Build a chunk from entries already encoded with encode_entry."""
    parts = [_array_header(3), _cbor_head(0, sequence), _array_header(len(encoded_entries))]
    parts.extend(encoded_entries)
    parts.append(b"\xf6" if end_count is None else _cbor_head(0, end_count))
    return b"".join(parts)


def split_into_chunks(encoded_entries: Iterable[bytes], max_payload: int) -> Iterator[list[bytes]]:
    """Group encoded entries so each chunk payload stays within ``max_payload`` bytes.

    An entry that alone exceeds the limit is yielded in a chunk of its own; the caller
    must check its size and skip it. Each chunk takes as many of the following entries
    as fit, found by bisecting the running total of their sizes.
    """
    budget = max_payload - CHUNK_OVERHEAD
    entries = list(encoded_entries)
    ends = list(itertools.accumulate(map(len, entries)))
    start = 0
    before = 0
    while start < len(entries):
        stop = max(start + 1, bisect.bisect_right(ends, before + budget, start))
        yield entries[start:stop]
        before = ends[stop - 1]
        start = stop


def _decode_chunk_frame(data: bytes) -> tuple[int, list[object], int | None]:
    """Decode a chunk's sequence, raw entries and end count; the entries are checked by the caller."""
    fields = _expect_array(_loads(data, "reply chunk"), "reply chunk", (3,))
    sequence = _expect_uint(fields[0], "chunk sequence")
    raw_entries = fields[1]
    if not isinstance(raw_entries, list):
        raise EnvelopeError("chunk entries must be an array")
    end_count = None if fields[2] is None else _expect_uint(fields[2], "chunk end count")
    return sequence, raw_entries, end_count


def decode_chunk(data: bytes) -> ReplyChunk:
    sequence, raw_entries, end_count = _decode_chunk_frame(data)
    entries = tuple(_decode_entry(raw, index) for index, raw in enumerate(raw_entries))
    return ReplyChunk(sequence, entries, end_count)


def decode_reply(data: bytes) -> tuple[int, list[Message], int | None]:
    """Decode a reply chunk straight into replayed Messages: (sequence, messages, end count).

    It accepts and rejects exactly what decode_chunk does, with the same errors. The
    common entry (8 fields, no user properties, an ASCII topic) is checked and built
    inline, without a ReplyEntry; every other entry takes decode_chunk's path.
    """
    sequence, raw_entries, end_count = _decode_chunk_frame(data)
    messages: list[Message] = []
    append = messages.append
    for index, raw in enumerate(raw_entries):
        if type(raw) is list and len(raw) == 8:
            topic, payload, millis, counter, writer, qos, retain, properties = raw
            if (
                type(topic) is str
                and type(payload) is bytes
                and type(millis) is int
                and type(counter) is int
                and type(writer) is str
                and type(qos) is int
                and type(retain) is bool
                and type(properties) is list
                and not properties
                and 0 <= millis <= MAX_MILLIS
                and 0 <= counter <= MAX_COUNTER
                and 0 <= qos <= 2
                and writer
                # The fast path of validate_topic_name.
                and topic.isascii()
                and 0 < len(topic) <= MAX_TOPIC_BYTES
                and "\x00" not in topic
                and "+" not in topic
                and "#" not in topic
            ):
                append(replayed_message(topic, payload, millis, counter, writer, qos, retain, [], False, None))
                continue
        entry = _decode_entry(raw, index)
        stamp = entry.stamp
        append(
            replayed_message(
                entry.topic,
                entry.payload,
                stamp.millis,
                stamp.counter,
                stamp.writer,
                entry.qos,
                entry.retain,
                list(entry.user_properties),
                entry.deleted,
                entry.expiry,
            )
        )
    return sequence, messages, end_count


def _decode_entry(raw: object, index: int) -> ReplyEntry:
    if type(raw) is list:
        entry = _decode_valid_entry(raw)
        if entry is not None:
            return entry
    return _decode_entry_checked(raw, index)


def _decode_valid_entry(fields: list[object]) -> ReplyEntry | None:
    """Decode an entry that passes every check of _decode_entry_checked, else return None.

    This path builds no error messages, which makes it several times faster; the
    checked path then reports what is wrong.
    """
    if len(fields) != 8 and len(fields) != 10:
        return None
    topic, payload, millis, counter, writer, qos, retain, raw_properties = fields[:8]
    if (
        type(topic) is not str
        or type(payload) is not bytes
        or type(millis) is not int
        or type(counter) is not int
        or type(writer) is not str
        or type(qos) is not int
        or type(retain) is not bool
        or type(raw_properties) is not list
    ):
        return None
    if not (0 <= millis <= MAX_MILLIS and 0 <= counter <= MAX_COUNTER and 0 <= qos <= 2) or writer == "":
        return None
    try:
        validate_topic_name(topic)
    except InvalidTopicError:
        return None
    properties: UserProperties = ()
    if raw_properties:
        pairs = []
        for pair in raw_properties:
            if type(pair) is not list or len(pair) != 2:
                return None
            key, value = pair
            if type(key) is not str or type(value) is not str or key.startswith(RESERVED_PREFIX):
                return None
            pairs.append((key, value))
        properties = tuple(pairs)
    deleted = False
    expiry = None
    if len(fields) == 10:
        deleted_field, expiry_field = fields[8], fields[9]
        if type(deleted_field) is not bool or (deleted_field and payload):
            return None
        if expiry_field is not None and (type(expiry_field) is not int or not 0 <= expiry_field <= 0xFFFFFFFF):
            return None
        deleted, expiry = deleted_field, expiry_field
    return ReplyEntry(topic, payload, Stamp(millis, counter, writer), qos, retain, properties, deleted, expiry)


def _decode_entry_checked(raw: object, index: int) -> ReplyEntry:
    what = f"entry {index}"
    fields = _expect_array(raw, what, (8, 10))
    try:
        topic = validate_topic_name(_expect_text(fields[0], f"{what} topic"))
    except InvalidTopicError as error:
        raise EnvelopeError(f"{what} has an invalid topic: {error}") from None
    payload = fields[1]
    if not isinstance(payload, bytes):
        raise EnvelopeError(f"{what} payload must be a byte string")
    millis = _expect_uint(fields[2], f"{what} stamp milliseconds", MAX_MILLIS)
    counter = _expect_uint(fields[3], f"{what} stamp counter", MAX_COUNTER)
    writer = _expect_text(fields[4], f"{what} writer")
    if writer == "":
        raise EnvelopeError(f"{what} writer must not be empty")
    qos = _expect_uint(fields[5], f"{what} qos", 2)
    retain = fields[6]
    if not isinstance(retain, bool):
        raise EnvelopeError(f"{what} retain must be a boolean")
    properties = _decode_properties(fields[7], what)
    deleted, expiry = False, None
    if len(fields) == 10:
        if not isinstance(fields[8], bool):
            raise EnvelopeError(f"{what} deleted flag must be a boolean")
        deleted = fields[8]
        if deleted and payload:
            raise EnvelopeError(f"{what} is a deletion but carries a payload")
        if fields[9] is not None:
            expiry = _expect_uint(fields[9], f"{what} expiry", 0xFFFFFFFF)
    return ReplyEntry(topic, payload, Stamp(millis, counter, writer), qos, retain, properties, deleted, expiry)


def _decode_properties(raw: object, what: str) -> UserProperties:
    if not isinstance(raw, list):
        raise EnvelopeError(f"{what} user properties must be an array")
    pairs = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(item, str) for item in pair)):
            raise EnvelopeError(f"{what} user property {pair!r} is not a pair of text strings")
        if pair[0].startswith(RESERVED_PREFIX):
            raise EnvelopeError(f"{what} user property key {pair[0]!r} uses the reserved prefix")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


# -- presence ---------------------------------------------------------------


def encode_presence(started_millis: int) -> bytes:
    return bytes(cbor2.dumps([PROTOCOL_VERSION, started_millis]))


def decode_presence(data: bytes) -> int | None:
    """Return the peer's start time in milliseconds, or None for an empty payload (the peer left)."""
    if data == b"":
        return None
    fields = _expect_array(_loads(data, "presence"), "presence", (2,))
    _expect_uint(fields[0], "presence version")
    return _expect_uint(fields[1], "presence start time")
