"""The MQTT 3.1.1 compat envelope: round trips, fuzzing and the spec's test vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemoq5._compat import (
    DEFAULT_MAX_HEADER_SIZE,
    FORMAT_VERSION,
    MAGIC,
    PREFIX_SIZE,
    CompatHeader,
    decode_compat,
    encode_compat,
)
from mnemoq5._envelope import RESERVED_PREFIX, Kind
from mnemoq5._errors import EnvelopeError, InvalidArgumentError, InvalidPropertyError
from mnemoq5._stamp import MAX_COUNTER, MAX_MILLIS, Stamp

VECTORS_PATH = Path(__file__).parent.parent / "spec" / "vectors" / "compat_envelope.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

# What the EnvelopeError message of each vector error category must match.
ERROR_PATTERNS = {
    "truncated": r"\btruncated\b",
    "version": r"\bformat version\b",
    "too-large": r"\bexceeds max_header_size\b",
    "header": r"^(?!.*(truncated|format version|max_header_size)).*\bcompat header\b",
}

# Strings that MQTT allows in a UTF-8 Encoded String: no surrogates, no U+0000.
mqtt_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
senders = mqtt_text.filter(bool)
property_keys = mqtt_text.filter(lambda key: not key.startswith(RESERVED_PREFIX))
topic_names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00+#"), min_size=1, max_size=12)


@st.composite
def compat_headers(draw: st.DrawFn) -> CompatHeader:
    sender = draw(senders)
    kind = draw(st.sampled_from(Kind))
    stamp = None
    if kind.carries_stamp:
        millis = draw(st.integers(0, MAX_MILLIS))
        counter = draw(st.integers(0, MAX_COUNTER))
        stamp = Stamp(millis, counter, sender)
    properties = draw(st.lists(st.tuples(property_keys, mqtt_text), max_size=4))
    return CompatHeader(
        sender=sender,
        kind=kind,
        stamp=stamp,
        user_properties=tuple(properties),
        response_topic=draw(st.none() | topic_names),
        correlation_data=draw(st.none() | st.binary(max_size=16)),
        message_expiry=draw(st.none() | st.integers(0, 2**32 - 1)),
    )


# CBOR values that cbor2 can encode, shaped to hit the header's type checks.
cbor_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=8)
    | st.text(max_size=8)
    | st.sampled_from([kind.value for kind in Kind])
)
cbor_values = st.recursive(cbor_leaves, lambda children: st.lists(children, max_size=3), max_leaves=8)
cbor_maps = st.dictionaries(st.integers(-1, 8) | st.text(max_size=2), cbor_values, max_size=8)


def wrap(
    header_bytes: bytes, payload: bytes = b"", *, length: int | None = None, version: int = FORMAT_VERSION
) -> bytes:
    """Build envelope bytes around an arbitrary header region."""
    size = len(header_bytes) if length is None else length
    return MAGIC + bytes([FORMAT_VERSION]) + size.to_bytes(4, "big") + header_bytes + payload


def header_end(data: bytes) -> int:
    return PREFIX_SIZE + int.from_bytes(data[len(MAGIC) + 1 : PREFIX_SIZE], "big")


def decode_or_error(data: bytes) -> tuple[CompatHeader, bytes] | EnvelopeError | None:
    try:
        return decode_compat(data)
    except EnvelopeError as error:
        return error


# Round trips and fuzzing.


@given(compat_headers(), st.binary(max_size=64))
def test_round_trip(header: CompatHeader, payload: bytes) -> None:
    assert decode_compat(encode_compat(header, payload)) == (header, payload)


@given(compat_headers(), st.binary(max_size=32))
def test_round_trip_payload_with_magic(header: CompatHeader, tail: bytes) -> None:
    payload = MAGIC + tail
    assert decode_compat(encode_compat(header, payload)) == (header, payload)


@given(st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    result = decode_or_error(data)
    assert result is None or isinstance(result, (tuple, EnvelopeError))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_after_magic(data: bytes) -> None:
    result = decode_or_error(MAGIC + data)
    assert result is not None
    assert isinstance(result, (tuple, EnvelopeError))


@given(st.binary(max_size=64), st.binary(max_size=8))
def test_arbitrary_header_region(header_bytes: bytes, payload: bytes) -> None:
    result = decode_or_error(wrap(header_bytes, payload))
    assert isinstance(result, (tuple, EnvelopeError))


@given(cbor_values | cbor_maps, st.binary(max_size=8))
def test_arbitrary_cbor_header(value: Any, payload: bytes) -> None:
    data = wrap(cbor2.dumps(value, canonical=True), payload)
    result = decode_or_error(data)
    assert isinstance(result, (tuple, EnvelopeError))
    if isinstance(result, tuple):
        # An accepted header has a single encoding, so re-encoding it returns the input.
        assert encode_compat(*result) == data


@given(compat_headers(), st.integers(-1, 7), cbor_values)
def test_mutated_header(header: CompatHeader, key: int, value: Any) -> None:
    data = encode_compat(header, b"p")
    fields = cbor2.loads(data[PREFIX_SIZE : header_end(data)])
    fields[key] = value
    mutated = wrap(cbor2.dumps(fields, canonical=True), b"p")
    result = decode_or_error(mutated)
    assert isinstance(result, (tuple, EnvelopeError))
    if isinstance(result, tuple):
        assert encode_compat(*result) == mutated


@given(compat_headers(), st.binary(max_size=16))
def test_truncation_every_offset(header: CompatHeader, payload: bytes) -> None:
    data = encode_compat(header, payload)
    end = header_end(data)
    for offset in range(len(data)):
        result = decode_or_error(data[:offset])
        if offset < len(MAGIC):
            # Shorter than the magic: a plain payload, which no compat sender produces.
            assert result is None
        elif offset < end:
            assert isinstance(result, EnvelopeError), offset
        else:
            # The payload has no length field: MQTT delivers a PUBLISH payload whole.
            assert result == (header, payload[: offset - end])


@given(compat_headers(), st.integers(0, 255).filter(lambda version: version != FORMAT_VERSION))
def test_unknown_version(header: CompatHeader, version: int) -> None:
    data = bytearray(encode_compat(header, b"x"))
    data[len(MAGIC)] = version
    with pytest.raises(EnvelopeError, match="format version"):
        decode_compat(bytes(data))


# Header size limit.


@given(st.integers(DEFAULT_MAX_HEADER_SIZE + 1, 2**32 - 1), st.binary(max_size=32))
def test_oversized_length_field(length: int, body: bytes) -> None:
    with pytest.raises(EnvelopeError, match="exceeds max_header_size"):
        decode_compat(wrap(body, length=length))


def test_oversized_header_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise AssertionError("the CBOR header was parsed")

    monkeypatch.setattr(cbor2, "loads", fail)
    data = wrap(cbor2.dumps({0: "p", 1: "presence"}), length=101)
    with pytest.raises(EnvelopeError, match="header length 101 exceeds max_header_size 100"):
        decode_compat(data, max_header_size=100)


def test_max_header_size_boundary() -> None:
    data = encode_compat(CompatHeader("p", Kind.PRESENCE, None), b"")
    size = header_end(data) - PREFIX_SIZE
    assert decode_compat(data, max_header_size=size) is not None
    with pytest.raises(EnvelopeError, match="exceeds max_header_size"):
        decode_compat(data, max_header_size=size - 1)


def test_encode_header_too_large() -> None:
    header = CompatHeader("p", Kind.PRESENCE, None, (("k", "v" * 200),))
    with pytest.raises(InvalidArgumentError, match="max_header_size 100"):
        encode_compat(header, b"", max_header_size=100)


# Decoding details that the vectors do not show.


def test_plain_payload_untouched() -> None:
    assert decode_compat(b"\xffmq") is None


def test_duplicate_user_properties_kept() -> None:
    properties = (("k", "1"), ("k", "1"), ("a", ""))
    header = CompatHeader("p", Kind.PRESENCE, None, properties)
    decoded = decode_compat(encode_compat(header, b""))
    assert decoded is not None
    assert decoded[0].user_properties == properties


def test_stamp_writer_is_sender() -> None:
    header = CompatHeader("writer-1", Kind.DATA, Stamp(10, 2, "writer-1"))
    decoded = decode_compat(encode_compat(header, b""))
    assert decoded is not None
    assert decoded[0].stamp == Stamp(10, 2, "writer-1")


def test_duplicate_key_equal_values() -> None:
    region = b"\xa3" + cbor2.dumps(0) + cbor2.dumps("p") + cbor2.dumps(0) + cbor2.dumps("p")
    region += cbor2.dumps(1) + cbor2.dumps("presence")
    with pytest.raises(EnvelopeError, match="Duplicate map key"):
        decode_compat(wrap(region))


def test_correlation_data_too_long() -> None:
    region = cbor2.dumps({0: "p", 1: "request", 5: bytes(65_536)}, canonical=True)
    with pytest.raises(EnvelopeError, match="correlation data is 65536 bytes"):
        decode_compat(wrap(region))


def test_user_property_too_long() -> None:
    region = cbor2.dumps({0: "p", 1: "presence", 3: [["k", "v" * 65_536]]}, canonical=True)
    with pytest.raises(EnvelopeError, match="65536 UTF-8 bytes"):
        decode_compat(wrap(region))


# Encoding rejects what decoding would reject.


@pytest.mark.parametrize(
    ("header", "pattern"),
    [
        (CompatHeader("p", Kind.DATA, None), "missing the stamp"),
        (CompatHeader("p", Kind.PRESENCE, Stamp(1, 0, "p")), "must not carry a stamp"),
        (CompatHeader("p", Kind.DATA, Stamp(1, 0, "q")), "differs from sender"),
        (CompatHeader("", Kind.PRESENCE, None), "sender must not be empty"),
        (CompatHeader("p\x00", Kind.PRESENCE, None), "U\\+0000"),
        (CompatHeader("\ud800", Kind.PRESENCE, None), "surrogate"),
        (CompatHeader("p", Kind.DATA, Stamp(MAX_MILLIS + 1, 0, "p")), "stamp milliseconds"),
        (CompatHeader("p", Kind.DATA, Stamp(0, -1, "p")), "stamp counter"),
        (CompatHeader("p", Kind.REQUEST, None, response_topic="reply/#"), "wildcards"),
        (CompatHeader("p", Kind.REQUEST, None, correlation_data=bytes(65_536)), "correlation data"),
        (CompatHeader("p", Kind.PRESENCE, None, message_expiry=2**32), "message expiry interval"),
        (CompatHeader("p", Kind.PRESENCE, None, message_expiry=True), "message expiry interval"),
        (CompatHeader("p", "presence", None), "must be a Kind"),  # type: ignore[arg-type]
    ],
)
def test_encode_invalid_header(header: CompatHeader, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        encode_compat(header, b"")


@pytest.mark.parametrize(
    "properties",
    [
        (("mnemoq5:id", "x"),),
        (("k", "v\x00"),),
        (("k",),),
    ],
)
def test_encode_invalid_user_properties(properties: Any) -> None:
    with pytest.raises(InvalidPropertyError):
        encode_compat(CompatHeader("p", Kind.PRESENCE, None, properties), b"")


def test_encode_payload_not_bytes() -> None:
    with pytest.raises(InvalidArgumentError, match="payload must be bytes"):
        encode_compat(CompatHeader("p", Kind.PRESENCE, None), "text")  # type: ignore[arg-type]


# Test vectors from spec/vectors/compat_envelope.json.


def vector_header(expected: dict[str, Any]) -> CompatHeader:
    stamp = expected["stamp"]
    correlation = expected["correlation_data_hex"]
    return CompatHeader(
        sender=expected["sender"],
        kind=Kind(expected["kind"]),
        stamp=None if stamp is None else Stamp(stamp[0], stamp[1], expected["sender"]),
        user_properties=tuple((key, value) for key, value in expected["user_properties"]),
        response_topic=expected["response_topic"],
        correlation_data=None if correlation is None else bytes.fromhex(correlation),
        message_expiry=expected["message_expiry"],
    )


def vectors_with(result: str) -> list[Any]:
    cases = [vector for vector in VECTORS["vectors"] if vector["result"] == result]
    return [pytest.param(vector, id=vector["name"]) for vector in cases]


def test_vectors_constants() -> None:
    assert bytes.fromhex(VECTORS["magic_hex"]) == MAGIC
    assert VECTORS["format_version"] == FORMAT_VERSION
    assert VECTORS["default_max_header_size"] == DEFAULT_MAX_HEADER_SIZE


@pytest.mark.parametrize("vector", vectors_with("envelope"))
def test_vector_decode(vector: dict[str, Any]) -> None:
    decoded = decode_compat(bytes.fromhex(vector["hex"]))
    assert decoded is not None
    header, payload = decoded
    assert header == vector_header(vector["header"])
    assert payload == bytes.fromhex(vector["payload_hex"])


@pytest.mark.parametrize("vector", vectors_with("envelope"))
def test_vector_encode(vector: dict[str, Any]) -> None:
    encoded = encode_compat(vector_header(vector["header"]), bytes.fromhex(vector["payload_hex"]))
    assert encoded.hex() == vector["hex"]


@pytest.mark.parametrize("vector", vectors_with("plain"))
def test_vector_plain(vector: dict[str, Any]) -> None:
    assert decode_compat(bytes.fromhex(vector["hex"])) is None


@pytest.mark.parametrize("vector", vectors_with("error"))
def test_vector_error(vector: dict[str, Any]) -> None:
    limit = vector.get("max_header_size", DEFAULT_MAX_HEADER_SIZE)
    with pytest.raises(EnvelopeError) as caught:
        decode_compat(bytes.fromhex(vector["hex"]), max_header_size=limit)
    assert re.search(ERROR_PATTERNS[vector["error"]], str(caught.value)), str(caught.value)
