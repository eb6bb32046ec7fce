"""The MQTT 3.1.1 compat envelope: the mnemoq5 header carried as a payload prefix.

MQTT 3.1.1 has no user properties, Response Topic, Correlation Data or Message Expiry
Interval, so in compat mode every message carries them in front of the application
payload::

    magic (4 bytes) | format version (1 byte) | header length (4 bytes, big-endian)
    | header (CBOR map) | application payload

spec/compat.md is the normative description. Pure code: no I/O, no logging.
Encoding raises InvalidArgumentError (InvalidPropertyError for user properties);
decoding arbitrary bytes returns a (header, payload) tuple, returns None for data
without the magic, or raises EnvelopeError, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import cbor2

from ._envelope import RESERVED_PREFIX, Kind, UserProperties, validate_user_properties
from ._errors import EnvelopeError, InvalidArgumentError, InvalidTopicError
from ._stamp import MAX_COUNTER, MAX_MILLIS, Stamp
from ._topics import validate_topic_name

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "PREFIX_SIZE",
    "CompatHeader",
    "decode_compat",
    "encode_compat",
]

# 0xFF starts no UTF-8 text (so no JSON or XML), no CBOR data item (it is the "break"
# stop code) and no protobuf message (its low three bits would be wire type 7).
MAGIC = b"\xffmq5"
FORMAT_VERSION = 1
_LENGTH_SIZE = 4
PREFIX_SIZE = len(MAGIC) + 1 + _LENGTH_SIZE

# Both ends use this bound unless configured otherwise: encode_compat rejects larger
# headers, so a receiver with the default never drops a header that a sender with the
# default produced.
DEFAULT_MAX_HEADER_SIZE = 1_048_576

# Header map keys.
KEY_SENDER = 0
KEY_KIND = 1
KEY_STAMP = 2
KEY_USER_PROPERTIES = 3
KEY_RESPONSE_TOPIC = 4
KEY_CORRELATION_DATA = 5
KEY_MESSAGE_EXPIRY = 6
_KNOWN_KEYS = frozenset(range(7))

# The same bounds as the MQTT v5 fields that the header replaces: UTF-8 strings and
# Binary Data carry a Two Byte Integer length [MQTT-1.5.4], [MQTT-1.5.6], and the
# Message Expiry Interval is a Four Byte Integer [MQTT-3.3.2.3.3].
_MAX_STRING_BYTES = 65_535
_MAX_BINARY_BYTES = 65_535
_MAX_EXPIRY = 2**32 - 1

# A valid header nests three containers deep: map, user property array, pair.
_MAX_CBOR_DEPTH = 3

_KINDS_BY_VALUE = {kind.value: kind for kind in Kind}

# Marks a header key that is not in the map, as distinct from a CBOR null.
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class CompatHeader:
    """Metadata that a compat message carries in its payload prefix.

    ``stamp`` is None exactly for kinds that carry no stamp, and its writer is
    ``sender``. ``user_properties`` are the application's pairs in order, duplicates
    kept. The three optional fields stand in for the MQTT v5 properties of the same
    names, which an MQTT 3.1.1 broker neither forwards nor enforces.
    """

    sender: str
    kind: Kind
    stamp: Stamp | None
    user_properties: UserProperties = ()
    response_topic: str | None = None
    correlation_data: bytes | None = None
    message_expiry: int | None = None


def encode_compat(header: CompatHeader, payload: bytes, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> bytes:
    """Prefix ``payload`` with the compat envelope for ``header``.

    Raise InvalidPropertyError for malformed or reserved user properties and
    InvalidArgumentError for any other invalid field, or for a header whose CBOR
    encoding exceeds ``max_header_size`` bytes.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"payload must be bytes, not {type(payload).__name__}")
    fields = _header_fields(header)
    try:
        _parse_fields(fields)
    except EnvelopeError as error:
        raise InvalidArgumentError(f"invalid compat header: {error}") from None

    encoded = cbor2.dumps(fields, canonical=True)
    if len(encoded) > max_header_size:
        raise InvalidArgumentError(
            f"compat header is {len(encoded)} bytes, more than max_header_size {max_header_size}; "
            "send fewer or shorter user properties"
        )
    length = len(encoded).to_bytes(_LENGTH_SIZE, "big")
    return MAGIC + bytes([FORMAT_VERSION]) + length + encoded + bytes(payload)


def decode_compat(data: bytes, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> tuple[CompatHeader, bytes] | None:
    """Split a received compat payload into its header and the application payload.

    Return None when ``data`` does not start with MAGIC: the message comes from a
    plain MQTT publisher. Raise EnvelopeError for anything else that is not a valid
    envelope. The length field is checked against ``max_header_size`` before any
    CBOR is read.
    """
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        return None
    if len(view) < PREFIX_SIZE:
        raise EnvelopeError(
            f"compat envelope is truncated: {len(view)} bytes, shorter than the {PREFIX_SIZE}-byte prefix"
        )

    version = view[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise EnvelopeError(
            f"unsupported compat format version {version}; this implementation reads version {FORMAT_VERSION}"
        )

    header_size = int.from_bytes(view[len(MAGIC) + 1 : PREFIX_SIZE], "big")
    if header_size > max_header_size:
        raise EnvelopeError(f"compat header length {header_size} exceeds max_header_size {max_header_size}")
    if header_size == 0:
        raise EnvelopeError("compat header length is 0; the header must be a CBOR map")
    end = PREFIX_SIZE + header_size
    if end > len(view):
        raise EnvelopeError(
            f"compat envelope is truncated: header length {header_size} needs {end} bytes, got {len(view)}"
        )

    header_bytes = bytes(view[PREFIX_SIZE:end])
    fields = _load_header(header_bytes)
    header = _parse_fields(fields)
    _check_deterministic(fields, header_bytes)
    return header, bytes(view[end:])


def _header_fields(header: CompatHeader) -> dict[int, Any]:
    """Build the header map; InvalidPropertyError for bad user properties, InvalidArgumentError otherwise."""
    if not isinstance(header, CompatHeader):
        raise InvalidArgumentError(f"header must be a CompatHeader, not {type(header).__name__}")
    if not isinstance(header.kind, Kind):
        raise InvalidArgumentError(f"header kind {header.kind!r} must be a Kind")

    fields: dict[int, Any] = {KEY_SENDER: header.sender, KEY_KIND: header.kind.value}
    if header.stamp is not None:
        if not isinstance(header.stamp, Stamp):
            raise InvalidArgumentError(f"header stamp {header.stamp!r} must be a Stamp")
        if header.stamp.writer != header.sender:
            raise InvalidArgumentError(
                f"stamp writer {header.stamp.writer!r} differs from sender {header.sender!r}; "
                "the compat header carries one identity for both"
            )
        fields[KEY_STAMP] = [header.stamp.millis, header.stamp.counter]
    properties = validate_user_properties(header.user_properties)
    if properties:
        fields[KEY_USER_PROPERTIES] = [list(pair) for pair in properties]
    if header.response_topic is not None:
        fields[KEY_RESPONSE_TOPIC] = header.response_topic
    if header.correlation_data is not None:
        if not isinstance(header.correlation_data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"correlation_data must be bytes, not {type(header.correlation_data).__name__}")
        fields[KEY_CORRELATION_DATA] = bytes(header.correlation_data)
    if header.message_expiry is not None:
        fields[KEY_MESSAGE_EXPIRY] = header.message_expiry
    return fields


class _RejectEveryTag(Mapping[int, Callable[[Any], NoReturn]]):
    """Semantic decoder table that claims every tag number and rejects it.

    cbor2 decodes some tags into other Python types (bignums, datetimes, sets, shared
    references); the header allows no tags, so none of those decoders may run.
    """

    def __getitem__(self, tag: int) -> Callable[[Any], NoReturn]:
        def reject(decoder: Any) -> NoReturn:
            raise cbor2.CBORDecodeError(f"CBOR tag {tag} is not allowed in the compat header")

        return reject

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _reject_tag(decoder: Any, tag: Any) -> NoReturn:
    raise cbor2.CBORDecodeError(f"CBOR tag {tag.tag} is not allowed in the compat header")


_REJECT_EVERY_TAG = _RejectEveryTag()


def _load_header(header_bytes: bytes) -> dict[Any, Any]:
    try:
        fields = cbor2.loads(
            header_bytes,
            tag_hook=_reject_tag,
            semantic_decoders=_REJECT_EVERY_TAG,
            str_errors="strict",
            max_depth=_MAX_CBOR_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    # cbor2 6.3 raises CBORDecodeError for every malformed input the tests feed it. The
    # other types are caught too because cbor2 does not document that it raises no others.
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise EnvelopeError(f"compat header is not valid CBOR: {error}") from None
    if not isinstance(fields, dict):
        raise EnvelopeError(f"compat header must be a CBOR map, not {type(fields).__name__}")
    return fields


def _check_deterministic(fields: dict[Any, Any], header_bytes: bytes) -> None:
    """Reject any encoding but the single deterministic one (RFC 8949 section 4.2.1).

    This also rejects trailing bytes after the map, which cbor2.loads ignores.
    Call it only after _parse_fields, so ``fields`` contains nothing cbor2 cannot encode.
    """
    expected = cbor2.dumps(fields, canonical=True)
    if expected == header_bytes:
        return
    if header_bytes.startswith(expected):
        raise EnvelopeError(f"compat header has {len(header_bytes) - len(expected)} bytes after the CBOR map")
    raise EnvelopeError(
        "compat header is not in deterministic CBOR encoding (RFC 8949 section 4.2.1): "
        "use the shortest form of every length and integer and sort the map keys"
    )


def _parse_fields(fields: dict[Any, Any]) -> CompatHeader:
    for key in fields:
        # type() and not isinstance(): CBOR true decodes to True, which equals 1.
        if type(key) is not int or key not in _KNOWN_KEYS:
            raise EnvelopeError(f"unknown compat header key {key!r}")

    if KEY_SENDER not in fields:
        raise EnvelopeError(f"compat header is missing the sender (key {KEY_SENDER})")
    sender = _check_string(fields[KEY_SENDER], "sender")
    if sender == "":
        raise EnvelopeError("compat header sender must not be empty")

    if KEY_KIND not in fields:
        raise EnvelopeError(f"compat header is missing the kind (key {KEY_KIND})")
    kind_value = fields[KEY_KIND]
    kind = _KINDS_BY_VALUE.get(kind_value) if type(kind_value) is str else None
    if kind is None:
        raise EnvelopeError(f"unknown compat header kind {kind_value!r}")

    stamp = _parse_stamp(fields.get(KEY_STAMP, _ABSENT), kind, sender)
    properties = _parse_user_properties(fields.get(KEY_USER_PROPERTIES, _ABSENT))

    # An absent optional field is left out of the map: a CBOR null is a wrong type.
    response_topic = None
    if KEY_RESPONSE_TOPIC in fields:
        response_topic = _check_string(fields[KEY_RESPONSE_TOPIC], "response topic")
        try:
            # [MQTT-3.3.2-14]: the Response Topic is a Topic Name, so it has no wildcards.
            validate_topic_name(response_topic)
        except InvalidTopicError as error:
            raise EnvelopeError(f"compat header response topic: {error}") from None

    correlation_data = fields.get(KEY_CORRELATION_DATA)
    if KEY_CORRELATION_DATA in fields:
        if type(correlation_data) is not bytes:
            raise EnvelopeError(f"compat header correlation data must be a byte string, not {correlation_data!r}")
        if len(correlation_data) > _MAX_BINARY_BYTES:
            raise EnvelopeError(
                f"compat header correlation data is {len(correlation_data)} bytes, "
                f"more than the maximum of {_MAX_BINARY_BYTES}"
            )

    message_expiry = None
    if KEY_MESSAGE_EXPIRY in fields:
        message_expiry = _check_uint(fields[KEY_MESSAGE_EXPIRY], _MAX_EXPIRY, "message expiry interval")

    return CompatHeader(sender, kind, stamp, properties, response_topic, correlation_data, message_expiry)


def _parse_stamp(value: object, kind: Kind, sender: str) -> Stamp | None:
    if value is _ABSENT:
        if kind.carries_stamp:
            raise EnvelopeError(f"a {kind.value!r} compat header is missing the stamp (key {KEY_STAMP})")
        return None
    if not kind.carries_stamp:
        raise EnvelopeError(f"a {kind.value!r} compat header must not carry a stamp")
    if type(value) is not list or len(value) != 2:
        raise EnvelopeError(f"compat header stamp {value!r} must be an array [millis, counter]")
    millis = _check_uint(value[0], MAX_MILLIS, "stamp milliseconds")
    counter = _check_uint(value[1], MAX_COUNTER, "stamp counter")
    return Stamp(millis, counter, sender)


def _parse_user_properties(value: object) -> UserProperties:
    if value is _ABSENT:
        return ()
    if type(value) is not list:
        raise EnvelopeError(f"compat header user properties must be an array, not {value!r}")
    if not value:
        raise EnvelopeError("compat header user properties must be omitted, not an empty array")
    pairs = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise EnvelopeError(f"compat header user property {pair!r} is not a [key, value] array")
        key = _check_string(pair[0], "user property key")
        text = _check_string(pair[1], "user property value")
        if key.startswith(RESERVED_PREFIX):
            raise EnvelopeError(f"compat header user property key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")
        pairs.append((key, text))
    return tuple(pairs)


def _check_string(value: object, what: str) -> str:
    """Apply the MQTT UTF-8 string rules, so a header contains only what a v5 property could."""
    if type(value) is not str:
        raise EnvelopeError(f"compat header {what} must be a text string, not {value!r}")
    if "\x00" in value:
        raise EnvelopeError(f"compat header {what} {value!r} must not contain U+0000 [MQTT-1.5.4-2]")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # Only reachable from encode_compat: cbor2 rejects surrogates when decoding.
        raise EnvelopeError(
            f"compat header {what} {value!r} must not contain surrogate code points [MQTT-1.5.4-1]"
        ) from None
    if size > _MAX_STRING_BYTES:
        raise EnvelopeError(f"compat header {what} is {size} UTF-8 bytes, more than the maximum of {_MAX_STRING_BYTES}")
    return value


def _check_uint(value: object, maximum: int, what: str) -> int:
    # type() and not isinstance(): bool is a subclass of int.
    if type(value) is not int or not 0 <= value <= maximum:
        raise EnvelopeError(f"compat header {what} {value!r} must be an integer in 0..{maximum}")
    return value
