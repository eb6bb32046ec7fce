"""Compare the hand-written fast paths with the generic code they replaced.

Each fast path (PUBLISH building and parsing in the adapter, the CBOR encoding and
decoding of catch-up replies, topic matching and the client's caches) must give the
same result as its reference: gmqtt 0.8, cbor2, ``decode_chunk`` or ``topic_matches``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
import gmqtt
import pytest
from gmqtt.mqtt.package import PublishPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemoq5 import Message, MnemoQ
from mnemoq5._adapter import MQTT_V5, MQTT_V311, Connection, Incoming, _encode_publish, _parse_publish
from mnemoq5._catchup import PendingReload, collector_paused
from mnemoq5._control import (
    CHUNK_OVERHEAD,
    decode_chunk,
    decode_reply,
    encode_chunk,
    encode_entries,
    encode_entry_fields,
    split_into_chunks,
)
from mnemoq5._errors import EnvelopeError, InvalidTopicError
from mnemoq5._message import replayed_message
from mnemoq5._packet import publish_packet_size
from mnemoq5._stamp import MAX_COUNTER, Stamp
from mnemoq5._store import Entry
from mnemoq5._topics import (
    _validate_topic_name,
    filter_base,
    filter_matcher,
    topic_matches,
    validate_topic_name,
)

from .helpers import PahoPeer, wait_until

# Byte and integer lengths at which a CBOR head or an MQTT Variable Byte Integer grows.
CBOR_LENGTHS = [0, 1, 23, 24, 255, 256, 65_535, 65_536]
CBOR_UINTS = [0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1]
REMAINING_LENGTH_BOUNDARIES = [127, 128, 16_383, 16_384, 2_097_151, 2_097_152]

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- PUBLISH building -----------------------------------------------------------


class _GmqttProtocolStub:
    """The two attributes PublishPacket.build_package reads from gmqtt's protocol object."""

    def __init__(self, version: int, mid: int | None) -> None:
        self.proto_ver = version
        self.id_generator = self
        self._mid = mid

    def next_id(self) -> int | None:
        return self._mid


def _connection(version: int = MQTT_V5, constant_keys: frozenset[str] = frozenset()) -> Connection:
    """Return a Connection that is never opened. It builds and parses packets without a socket."""
    return Connection(
        "fast-path-test",
        on_message=lambda incoming: None,
        on_lost=lambda: None,
        protocol_version=version,
        constant_property_keys=constant_keys,
    )


def _gmqtt_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    mid: int | None,
    version: int,
    user_properties: list[tuple[str, str]],
    response_topic: str | None,
    correlation_data: bytes | None,
    message_expiry: int | None,
) -> bytes:
    """Build the PUBLISH with gmqtt, properties in the order Connection.publish writes them."""
    properties: dict[str, Any] = {}
    if user_properties:
        properties["user_property"] = list(user_properties)
    if response_topic is not None:
        properties["response_topic"] = response_topic
    if correlation_data is not None:
        properties["correlation_data"] = correlation_data
    if message_expiry is not None:
        properties["message_expiry_interval"] = message_expiry
    message = gmqtt.Message(topic, payload, qos=qos, retain=retain, **properties)
    _, packet = PublishPacket.build_package(message, _GmqttProtocolStub(version, mid))
    return bytes(packet)


def _fast_publish(
    connection: Connection,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    mid: int | None,
    version: int,
    user_properties: list[tuple[str, str]],
    response_topic: str | None,
    correlation_data: bytes | None,
    message_expiry: int | None,
) -> bytes:
    properties = b""
    if version >= MQTT_V5:
        properties = connection._encode_properties(user_properties, response_topic, correlation_data, message_expiry)
    return _encode_publish(topic, payload, qos, retain, mid, properties)


# Property strings without surrogates, because both encoders raise UnicodeEncodeError on one.
_text = st.text(max_size=30)
# Topics may hold lone surrogates: both encoders replace them with '?'.
_topics = st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["a/\udc80/b", "\ud800", "é/ü/€/😀"]))
_pairs = st.lists(
    st.tuples(st.one_of(st.sampled_from(["k", "mnemoq5:s"]), _text), _text),
    max_size=20,
)


@FAST
@given(
    topic=_topics,
    payload=st.binary(max_size=600),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    mid=st.integers(1, 65_535),
    version=st.sampled_from([MQTT_V5, MQTT_V311]),
    user_properties=_pairs,
    response_topic=st.none() | _text,
    correlation_data=st.none() | st.binary(max_size=300),
    message_expiry=st.none() | st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
)
def test_encode_publish_matches_gmqtt(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    mid: int,
    version: int,
    user_properties: list[tuple[str, str]],
    response_topic: str | None,
    correlation_data: bytes | None,
    message_expiry: int | None,
) -> None:
    packet_id = mid if qos > 0 else None
    arguments = (
        topic,
        payload,
        qos,
        retain,
        packet_id,
        version,
        user_properties,
        response_topic,
        correlation_data,
        message_expiry,
    )
    expected = _gmqtt_publish(*arguments)
    # Twice on one connection: the second call takes the encoded pairs from its cache.
    connection = _connection(version, frozenset({"k", "mnemoq5:s"}))
    assert _fast_publish(connection, *arguments) == expected
    assert _fast_publish(connection, *arguments) == expected


def test_encoded_pair_cache_keeps_values_apart() -> None:
    connection = _connection(constant_keys=frozenset({"k"}))
    for index in range(200):
        pairs = [("k", f"value-{index}")]
        expected = _gmqtt_publish("t", b"", 0, False, None, MQTT_V5, pairs, None, None, None)
        assert _fast_publish(connection, "t", b"", 0, False, None, MQTT_V5, pairs, None, None, None) == expected


def _variable_byte_integer(value: int) -> bytes:
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


@pytest.mark.parametrize("remaining", REMAINING_LENGTH_BOUNDARIES)
@pytest.mark.parametrize("qos", [0, 1])
def test_encode_publish_remaining_length_boundary(remaining: int, qos: int) -> None:
    topic = "boundary/é"
    pairs = [("key", "value")]
    connection = _connection()
    properties = connection._encode_properties(pairs, "reply/to", b"\x01\x02", 60)
    mid = 7 if qos else None
    overhead = 2 + len(topic.encode()) + (2 if qos else 0) + len(properties)
    payload = bytes(range(256)) * ((remaining - overhead) // 256 + 1)
    payload = payload[: remaining - overhead]

    packet = _encode_publish(topic, payload, qos, False, mid, properties)

    header = _variable_byte_integer(remaining)
    assert packet[1 : 1 + len(header)] == header
    assert len(packet) == 1 + len(header) + remaining
    assert packet == _gmqtt_publish(topic, payload, qos, False, mid, MQTT_V5, pairs, "reply/to", b"\x01\x02", 60)
    parsed = _parse_publish(packet[0], packet[1 + len(header) :], True)
    assert parsed is not None
    parsed_mid, incoming = parsed
    assert parsed_mid == mid
    assert incoming.payload == payload
    assert incoming.user_properties == pairs
    assert incoming.message_expiry == 60


@FAST
@given(
    topic=st.text(min_size=1, max_size=40),
    payload_size=st.sampled_from([0, 1, 100]) | st.integers(0, 20_000),
    qos=st.integers(0, 2),
    version=st.sampled_from([MQTT_V5, MQTT_V311]),
    user_properties=_pairs,
    response_topic=st.none() | _text,
    correlation_data=st.none() | st.binary(max_size=300),
    message_expiry=st.none() | st.integers(0, 2**32 - 1),
)
def test_publish_packet_size_matches_encoding(
    topic: str,
    payload_size: int,
    qos: int,
    version: int,
    user_properties: list[tuple[str, str]],
    response_topic: str | None,
    correlation_data: bytes | None,
    message_expiry: int | None,
) -> None:
    mid = 1 if qos else None
    packet = _fast_publish(
        _connection(version),
        topic,
        bytes(payload_size),
        qos,
        False,
        mid,
        version,
        user_properties,
        response_topic,
        correlation_data,
        message_expiry,
    )
    size = publish_packet_size(
        topic,
        payload_size,
        qos,
        user_properties,
        response_topic=response_topic,
        correlation_data=correlation_data,
        message_expiry=message_expiry,
        protocol_v5=version >= MQTT_V5,
    )
    assert size == len(packet)


@pytest.mark.parametrize("remaining", REMAINING_LENGTH_BOUNDARIES)
def test_publish_packet_size_boundary(remaining: int) -> None:
    overhead = 2 + 1 + 1  # topic length, a one-byte topic, an empty Property Length
    size = publish_packet_size("t", remaining - overhead, 0)
    assert size == len(_encode_publish("t", bytes(remaining - overhead), 0, False, None, b"\x00"))


# -- PUBLISH parsing --------------------------------------------------------------


@dataclass
class _Receiver:
    """A never-opened Connection that records what it delivers and acknowledges."""

    connection: Connection
    delivered: list[Incoming]
    acknowledged: list[tuple[int, int]]

    def feed(self, cmd: int, body: bytes, *, fast: bool) -> str | None:
        """Hand one PUBLISH body to the fast handler or to gmqtt's and return the exception name, or None."""
        handler = self.connection._handle_publish_packet if fast else self.connection._gmqtt_publish_handler
        try:
            handler(cmd, body)
        except Exception as error:  # gmqtt raises several types on malformed packets.
            return type(error).__name__
        return None


def _receiver(version: int) -> _Receiver:
    delivered: list[Incoming] = []
    acknowledged: list[tuple[int, int]] = []
    connection = Connection(
        "fast-path-test", on_message=delivered.append, on_lost=lambda: None, protocol_version=version
    )
    handler = connection._client._package_handler
    handler._connection_state.protocol_version = version

    def record(cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        acknowledged.append((int(cmd), mid))

    handler._send_command_with_mid = record
    return _Receiver(connection, delivered, acknowledged)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


_utf8 = st.text(max_size=12).map(str.encode)
_vbi_values = st.sampled_from([0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455]) | st.integers(
    1, 268_435_455
)
_property = st.one_of(
    st.tuples(_utf8, _utf8).map(lambda pair: b"\x26" + _string(pair[0]) + _string(pair[1])),
    _vbi_values.map(lambda value: b"\x0b" + _variable_byte_integer(value)),
    # A non-minimal Variable Byte Integer: MQTT calls it malformed, gmqtt reads the value.
    st.just(b"\x0b\x81\x80\x00"),
    _utf8.map(lambda text: b"\x08" + _string(text)),
    st.binary(max_size=20).map(lambda data: b"\x09" + _string(data)),
    st.integers(0, 2**32 - 1).map(lambda seconds: b"\x02" + struct.pack("!I", seconds)),
    st.integers(0, 255).map(lambda value: b"\x01" + bytes([value])),
    _utf8.map(lambda text: b"\x03" + _string(text)),
    st.integers(0, 3).map(lambda alias: b"\x23" + struct.pack("!H", alias)),
    # Identifiers that are not PUBLISH properties: gmqtt parses the first and rejects the other two.
    st.sampled_from([b"\x11\x00\x00\x00\x05", b"\x00", b"\x7f\x01"]),
    # Invalid UTF-8 in a string property.
    st.just(b"\x26\x00\x01\xff\x00\x00"),
    st.binary(min_size=1, max_size=4),
)
_packet_topic = st.one_of(
    st.sampled_from([b"", b"a", b"a/b", b"\xff\xfe", "é/😀".encode(), b"x" * 200]),
    st.text(min_size=1, max_size=20).map(str.encode),
)


@st.composite
def _publish_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """Draw a PUBLISH fixed-header byte and body, sometimes truncated or with one byte changed."""
    qos = draw(st.integers(0, 3))
    cmd = 0x30 | draw(st.integers(0, 1)) << 3 | qos << 1 | draw(st.integers(0, 1))
    properties = b"".join(draw(st.lists(_property, max_size=8)))
    body = _string(draw(_packet_topic))
    if qos > 0:
        body += struct.pack("!H", draw(st.integers(0, 65_535)))
    # A Property Length that is sometimes wrong by a little or a lot.
    declared = max(0, len(properties) + draw(st.sampled_from([0, 0, 0, -1, 1, 200])))
    body += _variable_byte_integer(declared) + properties
    body += draw(st.binary(max_size=40))
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "flip" and body:
        index = draw(st.integers(0, len(body) - 1))
        body = body[:index] + bytes([draw(st.integers(0, 255))]) + body[index + 1 :]
    return cmd, body


@settings(max_examples=400, deadline=None)
@given(packets=st.lists(_publish_bodies(), min_size=1, max_size=3), version=st.sampled_from([MQTT_V5, MQTT_V311]))
def test_parse_publish_matches_gmqtt(packets: list[tuple[int, bytes]], version: int) -> None:
    # One receiver pair for the sequence, so a Topic Alias set by one packet is used by the next.
    fast = _receiver(version)
    reference = _receiver(version)
    for cmd, body in packets:
        fast_error = fast.feed(cmd, body, fast=True)
        reference_error = reference.feed(cmd, body, fast=False)
        assert fast_error == reference_error
        assert fast.delivered == reference.delivered
        assert fast.acknowledged == reference.acknowledged


def test_parse_publish_duplicate_properties_keep_first() -> None:
    properties = (
        b"\x08"
        + _string(b"first")
        + b"\x08"
        + _string(b"second")
        + b"\x09"
        + _string(b"\x01")
        + b"\x09"
        + _string(b"\x02")
        + b"\x02"
        + struct.pack("!I", 5)
        + b"\x02"
        + struct.pack("!I", 6)
        + b"\x0b\x01"
        + b"\x0b\xff\xff\xff\x7f"
        + b"\x0b\x80\x01"
    )
    body = _string(b"t") + struct.pack("!H", 9) + _variable_byte_integer(len(properties)) + properties + b"data"
    fast = _receiver(MQTT_V5)
    reference = _receiver(MQTT_V5)

    fast.feed(0x33, body, fast=True)
    reference.feed(0x33, body, fast=False)

    assert fast.delivered == reference.delivered
    (incoming,) = fast.delivered
    assert incoming.response_topic == "first"
    assert incoming.correlation_data == b"\x01"
    assert incoming.message_expiry == 5
    assert incoming.subscription_ids == (1, 268_435_455, 128)
    assert incoming.retain is True
    assert fast.acknowledged == [(0x40, 9)]


def test_parse_publish_many_user_properties() -> None:
    pairs = [(f"key-{index}", "value-é" * (index % 5)) for index in range(2000)]
    connection = _connection()
    properties = connection._encode_properties(pairs, None, None, None)
    packet = _encode_publish("t/many", b"", 1, False, 3, properties)
    header_length = len(_variable_byte_integer(len(packet) - 1)) if len(packet) > 128 else 1
    body = packet[1 + header_length :]
    fast = _receiver(MQTT_V5)
    reference = _receiver(MQTT_V5)

    fast.feed(packet[0], body, fast=True)
    reference.feed(packet[0], body, fast=False)

    assert fast.delivered == reference.delivered
    assert fast.delivered[0].user_properties == pairs


# -- CBOR reply entries -----------------------------------------------------------


def _reference_entry(
    topic: str,
    payload: bytes,
    millis: int,
    counter: int,
    writer: str,
    qos: int,
    retain: bool,
    user_properties: tuple[tuple[str, str], ...],
    deleted: bool,
    expiry: int | None,
) -> bytes:
    fields: list[object] = [
        topic,
        payload,
        millis,
        counter,
        writer,
        qos,
        retain,
        [list(pair) for pair in user_properties],
    ]
    if deleted or expiry is not None:
        fields += [deleted, expiry]
    return bytes(cbor2.dumps(fields))


def _sized_text(length: int) -> str:
    return ("ab/" * (length // 3 + 1))[:length]


_uints = st.sampled_from(CBOR_UINTS) | st.integers(0, 2**64 - 1)
_lengths = st.sampled_from(CBOR_LENGTHS) | st.integers(0, 300)
_entry_fields = st.tuples(
    st.one_of(st.text(min_size=1, max_size=30), _lengths.filter(bool).map(_sized_text)),
    st.one_of(st.binary(max_size=300), _lengths.map(bytes)),
    _uints,
    st.sampled_from([0, 23, 24, 255, 256, MAX_COUNTER]) | st.integers(0, MAX_COUNTER),
    st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["w", "writer-é", "😀" * 70])),
    st.integers(0, 2),
    st.booleans(),
    st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=4).map(tuple),
    st.booleans(),
    st.none() | st.sampled_from([0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1]),
)


@FAST
@given(fields=_entry_fields)
def test_encode_entry_fields_matches_cbor2(fields: tuple[Any, ...]) -> None:
    assert encode_entry_fields(*fields) == _reference_entry(*fields)


@pytest.mark.parametrize("length", CBOR_LENGTHS)
def test_encode_entry_fields_length_boundaries(length: int) -> None:
    topic = _sized_text(length) or "t"
    fields = (topic, bytes(length), 2**32, 256, _sized_text(length) or "w", 1, True, ((topic, topic),), False, length)
    assert encode_entry_fields(*fields) == _reference_entry(*fields)


def _store_entry(fields: tuple[Any, ...], expires_at: float | None) -> Entry:
    topic, payload, millis, counter, writer, qos, retain, user_properties, deleted, _ = fields
    if deleted:
        payload = b""
    return Entry(topic, payload, qos, retain, user_properties, Stamp(millis, counter, writer), deleted, expires_at)


@FAST
@given(
    rows=st.lists(st.tuples(_entry_fields, st.none() | st.floats(-5, 100_000, allow_nan=False)), max_size=12),
    now=st.sampled_from([0.0, 1_700_000_000.0]),
)
def test_encode_entries_matches_cbor2(rows: list[tuple[tuple[Any, ...], float | None]], now: float) -> None:
    entries = [_store_entry(fields, None if offset is None else now + offset) for fields, offset in rows]
    expected = []
    for entry in entries:
        expiry = None
        if entry.expires_at is not None:
            # Whole seconds, rounded up.
            expiry = max(0, math.ceil(entry.expires_at - now))
            if expiry == 0:
                continue
        stamp = entry.stamp
        expected.append(
            _reference_entry(
                entry.topic,
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
    # Twice: the first call fills the writer cache that the inline path needs.
    assert encode_entries(entries, now) == expected
    assert encode_entries(entries, now) == expected


def test_encode_entries_skips_topics() -> None:
    entries = [_store_entry((f"t/{index}", b"x", 2**40, 0, "w", 0, False, (), False, None), None) for index in range(6)]
    encoded = encode_entries(entries, 0.0, skip=lambda topic: topic.endswith(("1", "4")))
    assert [cbor2.loads(item)[0] for item in encoded] == ["t/0", "t/2", "t/3", "t/5"]


def test_encode_entries_rounds_expiry_up() -> None:
    entries = [
        _store_entry(("t/a", b"x", 2**40, 0, "w", 0, False, (), False, None), 1.0005),
        _store_entry(("t/b", b"x", 2**40, 0, "w", 0, False, (), False, None), 0.0005),
    ]
    decoded = [cbor2.loads(item) for item in encode_entries(entries, 0.0)]
    assert [(fields[0], fields[9]) for fields in decoded] == [("t/a", math.ceil(1.0005)), ("t/b", 1)]


def _greedy_chunks(sizes: list[int], max_payload: int) -> list[list[int]]:
    """Group entry sizes one by one, each chunk as full as the budget allows."""
    budget = max_payload - CHUNK_OVERHEAD
    chunks: list[list[int]] = []
    for size in sizes:
        if chunks and sum(chunks[-1]) + size <= budget:
            chunks[-1].append(size)
        else:
            chunks.append([size])
    return chunks


@FAST
@given(
    sizes=st.lists(st.integers(1, 300), max_size=40),
    max_payload=st.integers(CHUNK_OVERHEAD + 1, 1_000),
)
def test_split_into_chunks_matches_greedy(sizes: list[int], max_payload: int) -> None:
    entries = [bytes(size) for size in sizes]
    chunks = list(split_into_chunks(entries, max_payload))
    assert [[len(entry) for entry in chunk] for chunk in chunks] == _greedy_chunks(sizes, max_payload)


# -- decoding reply chunks into Messages ------------------------------------------


def _messages_from_chunk(data: bytes) -> tuple[int, list[Message], int | None]:
    """Decode with decode_chunk and build each Message with the dataclass constructors."""
    chunk = decode_chunk(data)
    messages = [
        Message(
            entry.topic,
            entry.payload,
            entry.qos,
            entry.retain,
            entry.stamp.writer,
            list(entry.user_properties),
            True,
            Stamp(entry.stamp.millis, entry.stamp.counter, entry.stamp.writer),
            entry.deleted,
            entry.expiry,
        )
        for entry in chunk.entries
    ]
    return chunk.sequence, messages, chunk.end_count


def _outcome(decode: Callable[[bytes], object], data: bytes) -> object:
    try:
        return decode(data)
    except EnvelopeError as error:
        return f"EnvelopeError: {error}"


_odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**65),
    st.text(max_size=6),
    st.sampled_from(["", "a/+", "a/#", "a\x00b", "mnemoq5:key", "é", "x" * 65_536]),
    st.binary(max_size=6),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=3),
    st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=2),
)


@st.composite
def _raw_entries(draw: st.DrawFn) -> object:
    """Draw a valid entry as a CBOR array, or one with a field replaced by an odd value."""
    fields = list(draw(_entry_fields))
    fields[7] = [list(pair) for pair in fields[7]]
    if fields[8]:
        fields[1] = b""
    if not fields[8] and fields[9] is None and draw(st.booleans()):
        fields = fields[:8]
    mutation = draw(st.sampled_from(["none", "none", "field", "length", "other"]))
    if mutation == "field":
        fields[draw(st.integers(0, len(fields) - 1))] = draw(_odd_values)
    elif mutation == "length":
        fields = fields[: draw(st.integers(0, len(fields)))]
    elif mutation == "other":
        return draw(_odd_values)
    return fields


@FAST
@given(
    sequence=_uints | _odd_values,
    entries=st.lists(_raw_entries(), max_size=6),
    end_count=st.none() | _uints | _odd_values,
)
def test_decode_reply_matches_decode_chunk(sequence: object, entries: list[object], end_count: object) -> None:
    data = bytes(cbor2.dumps([sequence, entries, end_count]))
    assert _outcome(decode_reply, data) == _outcome(_messages_from_chunk, data)


@pytest.mark.parametrize("length", CBOR_LENGTHS)
def test_decode_reply_length_boundaries(length: int) -> None:
    topic = _sized_text(length) or "t"
    encoded = [
        encode_entry_fields(topic, bytes(length), millis, length, "w", 2, False, (), False, None)
        for millis in CBOR_UINTS
    ]
    data = encode_chunk(2**32, encoded, 2**64 - 1)
    assert _outcome(decode_reply, data) == _outcome(_messages_from_chunk, data)


def test_replayed_message_equals_constructor() -> None:
    built = replayed_message("t", b"p", 2**64 - 1, 7, "w", 1, True, [("k", "v")], False, 30)
    expected = Message("t", b"p", 1, True, "w", [("k", "v")], True, Stamp(2**64 - 1, 7, "w"), False, 30)
    assert built == expected
    assert hash(built.stamp) == hash(expected.stamp)
    assert repr(built) == repr(expected)


# -- topic filters ----------------------------------------------------------------


def _spec_matches(topic_filter: str, topic: str) -> bool:
    """Match level by level as MQTT v5 section 4.7 describes it."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


_level_text = st.sampled_from(["", "a", "b", "ab", "$", "$SYS", "é", "😀", "a b"])
_topic_names = st.lists(_level_text, min_size=1, max_size=5).map("/".join).filter(bool)


@st.composite
def _topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_level_text | st.just("+"), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    text = "/".join(levels)
    return text or "#"


@settings(max_examples=500, deadline=None)
@given(
    topic_filter=_topic_filters() | st.sampled_from(["#", "/#", "+/#", "+", "+/+", "$SYS/#", "a/#", "//#"]),
    topic=_topic_names | st.sampled_from(["/", "//", "$SYS", "$SYS/a", "a", "a/", "/a", "$"]),
)
def test_topic_matchers_agree(topic_filter: str, topic: str) -> None:
    expected = _spec_matches(topic_filter, topic)
    assert topic_matches(topic_filter, topic) == expected
    assert filter_matcher(topic_filter)(topic) == expected
    base = filter_base(topic_filter)
    if base is not None:
        assert (topic == base or topic.startswith(base + "/")) == expected


@pytest.mark.parametrize(
    ("topic_filter", "base"),
    [
        ("#", None),
        ("/#", ""),
        ("+/#", None),
        ("a/#", "a"),
        ("a/+/#", None),
        ("a", None),
        ("a/b#", None),
        ("$SYS/#", "$SYS"),
    ],
)
def test_filter_base_cases(topic_filter: str, base: str | None) -> None:
    assert filter_base(topic_filter) == base


def _validation_outcome(validate: Callable[[object], str], topic: object) -> object:
    try:
        return validate(topic)
    except InvalidTopicError as error:
        return f"InvalidTopicError: {error}"


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(
        st.text(max_size=20),
        st.text(alphabet="ab/+#$\x00", max_size=8),
        st.sampled_from(["", "\x00", "a" * 65_535, "a" * 65_536, "é" * 32_768, "\ud800", b"a/b", b"\xff", 7]),
    )
)
def test_validate_topic_name_fast_path_agrees(topic: object) -> None:
    assert _validation_outcome(validate_topic_name, topic) == _validation_outcome(_validate_topic_name, topic)


# -- the client's caches and held replays ------------------------------------------


def _lowest_matching_reference(client: MnemoQ, topic: str) -> int | None:
    subscriptions = (*client._control_subscriptions, *client._subscriptions.values())
    matching = [sub.identifier for sub in subscriptions if _spec_matches(sub.topic_filter, topic)]
    return min(matching) if matching else None


def _copy(topic: str, subscription_ids: tuple[int, ...]) -> Incoming:
    return Incoming(topic, b"", 0, False, None, None, None, subscription_ids, None)


async def test_first_copy_cache_follows_subscriptions(make_client: Callable[..., Any], topic_root: str) -> None:
    client = await make_client(client_id=f"first-copy-{uuid.uuid4().hex[:8]}")
    filters = [f"{topic_root}/a", f"{topic_root}/#", f"{topic_root}/+", f"{topic_root}/a/#", "+/+/a"]
    topics = [f"{topic_root}/a", f"{topic_root}/b", f"{topic_root}/a/c"]
    # Subscribe and unsubscribe in a fixed shuffled order, checking every cached result after each change.
    steps = [
        ("subscribe", 0),
        ("subscribe", 1),
        ("unsubscribe", 0),
        ("subscribe", 2),
        ("unsubscribe", 1),
        ("subscribe", 1),
        ("subscribe", 3),
        ("unsubscribe", 2),
        ("unsubscribe", 3),
        ("subscribe", 4),
        ("subscribe", 0),
        ("unsubscribe", 1),
        ("unsubscribe", 4),
        ("subscribe", 1),
        ("subscribe", 2),
    ]
    for action, index in steps:
        topic_filter = filters[index]
        if action == "subscribe":
            await client.subscribe(topic_filter)
        else:
            await client.unsubscribe(topic_filter)
        for topic in topics:
            lowest = _lowest_matching_reference(client, topic)
            for identifier in range(1, client._next_subscription_id + 1):
                expected = lowest is None or lowest == identifier
                assert client._is_first_copy(_copy(topic, (identifier,))) == expected, (
                    action,
                    index,
                    topic,
                    identifier,
                )


async def test_overlapping_subscription_delivers_once(
    make_client: Callable[..., Any], paho_peer: Callable[..., Any], topic_root: str
) -> None:
    client = await make_client(client_id=f"overlap-{uuid.uuid4().hex[:8]}")
    publisher: PahoPeer = await paho_peer()
    topic = f"{topic_root}/a"
    received: list[Message] = []

    async def collect() -> None:
        async for message in client.messages():
            received.append(message)

    reader = asyncio.create_task(collect())
    try:
        await client.subscribe(topic)
        await publisher.publish(topic, b"one")
        await wait_until(lambda: len(received) == 1, "the first message arrived")
        # The cache now contains the result for this topic, and both changes must replace it.
        await client.subscribe(f"{topic_root}/#")
        await client.unsubscribe(topic)
        await publisher.publish(topic, b"two")
        await client.subscribe(topic)
        await publisher.publish(topic, b"three")
        await wait_until(lambda: len(received) >= 3, "three messages arrived")
        await asyncio.sleep(0.2)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert [message.payload for message in received] == [b"one", b"two", b"three"]


def _replay(topic: str, millis: int, writer: str = "peer") -> Message:
    return replayed_message(topic, b"v%d" % millis, millis, 0, writer, 0, False, [], False, None)


def _drain(client: MnemoQ) -> list[Message]:
    queued = []
    while not client._queue.empty():
        queued.append(client._queue.get_nowait())
    return queued


_replays = st.lists(
    st.builds(
        lambda topic, millis, counter, writer, expiry: replayed_message(
            topic, b"", millis, counter, writer, 0, False, [], False, expiry
        ),
        st.sampled_from(["r/a", "r/b", "r/c"]),
        st.sampled_from([1, 2, 3, 2**63]),
        st.integers(0, 2),
        st.sampled_from(["peer-a", "peer-b", "self"]),
        st.none() | st.just(30),
    ),
    max_size=12,
)


@FAST
@given(replays=_replays, stored=_replays, remember=st.sampled_from(["published", "received"]))
def test_apply_replayed_matches_accept(replays: list[Message], stored: list[Message], remember: str) -> None:
    # Neither client connects: both methods only touch local state.
    batch = MnemoQ(host="127.0.0.1", port=1, client_id="self", remember=remember, max_clock_skew=60)
    single = MnemoQ(host="127.0.0.1", port=1, client_id="self", remember=remember, max_clock_skew=60)
    for message in stored:
        assert message.stamp is not None
        entry = Entry(message.topic, b"", 0, False, (), message.stamp)
        batch._store.put(entry)
        single._store.put(entry)
    reload = PendingReload("r/#", b"c", {"peer-a"}, deliver=True)

    batch.apply_replayed(replays, reload)
    for message in replays:
        single._accept(message)

    assert batch._known == single._known
    assert batch._received_at.keys() == single._received_at.keys()
    assert batch.stats == single.stats
    assert (batch._clock._millis, batch._clock._counter) == (single._clock._millis, single._clock._counter)
    for topic in ("r/a", "r/b", "r/c"):
        # The two clients read the wall clock at different times, so only compare whether an expiry is set.
        remembered = batch._store.get(topic)
        expected = single._store.get(topic)
        assert (remembered is None) == (expected is None)
        if remembered is not None and expected is not None:
            assert remembered.stamp == expected.stamp
            assert (remembered.expires_at is None) == (expected.expires_at is None)


async def test_held_replays_release_newest_once(make_client: Callable[..., Any], topic_root: str) -> None:
    client = await make_client(client_id=f"held-{uuid.uuid4().hex[:8]}")
    await client.subscribe(f"{topic_root}/#")
    first = PendingReload(f"{topic_root}/#", b"first", {"peer"}, deliver=True)
    second = PendingReload(f"{topic_root}/#", b"second", {"peer"}, deliver=True)
    base = 1_000_000

    client.apply_replayed([_replay(f"{topic_root}/a", base + 1), _replay(f"{topic_root}/b", base + 1)], first)
    client.apply_replayed([_replay(f"{topic_root}/a", base + 2), _replay(f"{topic_root}/b", base)], second)
    client._release_replays(first)
    released_first = _drain(client)
    client._release_replays(second)
    released_second = _drain(client)

    assert [(message.topic, message.stamp.millis) for message in released_first] == [
        (f"{topic_root}/a", base + 2),
        (f"{topic_root}/b", base + 1),
    ]
    assert released_second == []
    assert client._held_replays == {}


async def test_held_replay_superseded_by_live_value(make_client: Callable[..., Any], topic_root: str) -> None:
    client = await make_client(client_id=f"held-live-{uuid.uuid4().hex[:8]}")
    await client.subscribe(f"{topic_root}/#")
    reload = PendingReload(f"{topic_root}/#", b"reload", {"peer"}, deliver=True)
    topic = f"{topic_root}/a"

    client.apply_replayed([_replay(topic, 1_000_000)], reload)
    live = Message(topic, b"live", stamp=Stamp(1_000_001, 0, "peer"), sender="peer")
    assert client._accept(live)
    client._release_replays(reload)

    assert _drain(client) == []
    assert client._held_replays == {}


async def test_held_replays_without_subscription(make_client: Callable[..., Any], topic_root: str) -> None:
    client = await make_client(client_id=f"held-none-{uuid.uuid4().hex[:8]}")
    kept = PendingReload(f"{topic_root}/#", b"kept", {"peer"}, deliver=True)
    dropped = PendingReload(f"{topic_root}/#", b"dropped", {"peer"}, deliver=True)

    client.apply_replayed([_replay(f"{topic_root}/a", 5)], kept)
    client.apply_replayed([_replay(f"{topic_root}/b", 5)], dropped)
    client._release_replays(dropped)

    assert list(client._held_replays) == [f"{topic_root}/a"]
    await client.subscribe(f"{topic_root}/#")
    client._release_replays(kept)
    assert [message.topic for message in _drain(client)] == [f"{topic_root}/a"]


# -- the paused collector ------------------------------------------------------------


@pytest.fixture
def collector_state() -> Iterator[None]:
    """Restore the collector after a test that switches it."""
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_state")
@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("fails", [True, False])
def test_collector_paused_restores_state(enabled: bool, fails: bool) -> None:
    if enabled:
        gc.enable()
    else:
        gc.disable()

    with pytest.raises(KeyError) if fails else contextlib.nullcontext():
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
            if fails:
                raise KeyError("inside the block")

    assert gc.isenabled() == enabled
