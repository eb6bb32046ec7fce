"""The v5 envelope: the vectors in spec/vectors/envelope_v5.json and round-trip properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mnemoq5
from mnemoq5 import EnvelopeError, InvalidPropertyError, Stamp
from mnemoq5._envelope import (
    KEY_ID,
    KEY_KIND,
    KEY_STAMP,
    RESERVED_PREFIX,
    Envelope,
    Kind,
    decode_v5,
    encode_v5,
    validate_user_properties,
)
from mnemoq5._stamp import MAX_COUNTER, MAX_MILLIS

VECTORS = json.loads((Path(__file__).parent.parent / "spec" / "vectors" / "envelope_v5.json").read_text())


def as_pairs(properties: object) -> object:
    """Turn the JSON arrays of a vector into tuples where they are pairs of the wire format."""
    if isinstance(properties, list):
        return [tuple(item) if isinstance(item, list) else item for item in properties]
    return properties


# -- vectors ---------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda case: case["name"])
def test_decode_valid(case: dict[str, object]) -> None:
    envelope = decode_v5(as_pairs(case["properties"]))
    expected_stamp = case["stamp"]
    assert envelope.sender == case["sender"]
    assert envelope.kind == (None if case["kind"] is None else Kind(case["kind"]))
    if expected_stamp is None:
        assert envelope.stamp is None
    else:
        assert isinstance(expected_stamp, dict)
        assert envelope.stamp == Stamp(expected_stamp["millis"], expected_stamp["counter"], expected_stamp["writer"])
    assert envelope.user_properties == tuple(tuple(pair) for pair in case["user_properties"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda case: case["name"])
def test_decode_invalid(case: dict[str, object]) -> None:
    error_type = getattr(mnemoq5, str(case["error"]))
    with pytest.raises(error_type) as raised:
        decode_v5(as_pairs(case["properties"]))
    assert str(case["message_contains"]) in str(raised.value)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda case: case["name"])
def test_decode_valid_lists(case: dict[str, object]) -> None:
    # Pairs may arrive as lists (JSON, some client libraries) as well as tuples.
    from_lists = decode_v5(case["properties"])
    from_tuples = decode_v5(as_pairs(case["properties"]))
    assert from_lists == from_tuples


# -- encoding --------------------------------------------------------------


def test_encode_reserved_first() -> None:
    stamp = Stamp(1_700_000_000_000, 3, "w")
    encoded = encode_v5("w", Kind.DATA, stamp, (("unit", "C"), ("unit", "")))
    assert encoded == [
        (KEY_ID, "w"),
        (KEY_KIND, "data"),
        (KEY_STAMP, "1700000000000:3"),
        ("unit", "C"),
        ("unit", ""),
    ]


def test_encode_request_without_stamp() -> None:
    assert encode_v5("w", Kind.REQUEST, None) == [(KEY_ID, "w"), (KEY_KIND, "request")]


@pytest.mark.parametrize("kind", [Kind.DATA, Kind.DELETE])
def test_encode_missing_stamp(kind: Kind) -> None:
    with pytest.raises(ValueError, match="needs a stamp"):
        encode_v5("w", kind, None)


@pytest.mark.parametrize("kind", [Kind.REQUEST, Kind.REPLY, Kind.PRESENCE])
def test_encode_unexpected_stamp(kind: Kind) -> None:
    with pytest.raises(ValueError, match="must not carry a stamp"):
        encode_v5("w", kind, Stamp(1, 0, "w"))


def test_encode_empty_sender() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        encode_v5("", Kind.DATA, Stamp(1, 0, ""))


# -- application properties --------------------------------------------------


def test_validate_keeps_order() -> None:
    pairs = [("b", "2"), ("a", ""), ("b", "2"), ("", "")]
    assert validate_user_properties(pairs) == tuple(pairs)


def test_validate_accepts_lists_and_none() -> None:
    assert validate_user_properties([["k", "v"]]) == (("k", "v"),)  # type: ignore[list-item]
    assert validate_user_properties(None) == ()
    assert validate_user_properties(iter([("k", "v")])) == (("k", "v"),)


@pytest.mark.parametrize("key", [KEY_ID, KEY_KIND, KEY_STAMP, RESERVED_PREFIX, RESERVED_PREFIX + "other"])
def test_validate_reserved_key(key: str) -> None:
    with pytest.raises(InvalidPropertyError) as raised:
        validate_user_properties([("ok", "1"), (key, "x")])
    assert "reserved prefix" in str(raised.value)
    assert repr(key) in str(raised.value)


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ("k=v", "sequence of (key, value) pairs"),
        (b"k", "sequence of (key, value) pairs"),
        ({"k": "v"}, "sequence of (key, value) pairs"),
        (5, "sequence of (key, value) pairs"),
        ([("k",)], "not a (key, value) pair"),
        ([("k", "v", "w")], "not a (key, value) pair"),
        (["kv"], "not a (key, value) pair"),
        ([("k", 1)], "must be str"),
        ([(None, "v")], "must be str"),
        ([("k", b"v")], "must be str"),
        ([("k\x00", "v")], "MQTT-1.5.4-2"),
        ([("k", "v\x00")], "MQTT-1.5.4-2"),
        ([("k\ud800", "v")], "MQTT-1.5.4-1"),
        ([("k", "a" * 65_536)], "65536 UTF-8 bytes"),
    ],
)
def test_validate_invalid(properties: object, fragment: str) -> None:
    with pytest.raises(InvalidPropertyError) as raised:
        validate_user_properties(properties)  # type: ignore[arg-type]
    assert fragment in str(raised.value)


def test_validate_maximum_length() -> None:
    value = "\u00e9" * 32_767 + "a"
    assert validate_user_properties([("k", value)]) == (("k", value),)


# -- properties ------------------------------------------------------------

# Application keys: any text, unless it starts with the reserved prefix.
application_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
application_keys = st.one_of(application_text, st.sampled_from(["", "mnemoq5", "MNEMOQ5:id", "unit"])).filter(
    lambda key: not key.startswith(RESERVED_PREFIX)
)
application_pairs = st.lists(st.tuples(application_keys, application_text), max_size=6)


@st.composite
def application_properties(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Application pairs, with some of them repeated at random places."""
    pairs = draw(application_pairs)
    if pairs:
        for _ in range(draw(st.integers(0, 3))):
            repeated = draw(st.sampled_from(pairs))
            pairs.insert(draw(st.integers(0, len(pairs))), repeated)
    return pairs


senders = st.text(min_size=1, alphabet=st.characters(blacklist_categories=("Cs",)))
stamp_parts = st.tuples(st.integers(0, MAX_MILLIS), st.integers(0, MAX_COUNTER))


@given(senders, st.sampled_from(list(Kind)), stamp_parts, application_properties())
def test_round_trip(sender: str, kind: Kind, parts: tuple[int, int], pairs: list[tuple[str, str]]) -> None:
    stamp = Stamp(parts[0], parts[1], sender) if kind.carries_stamp else None
    validated = validate_user_properties(pairs)
    decoded = decode_v5(encode_v5(sender, kind, stamp, validated))
    assert decoded == Envelope(sender, kind, stamp, tuple(pairs))


@given(senders, stamp_parts, application_properties(), st.randoms(use_true_random=False))
def test_round_trip_any_position(
    sender: str, parts: tuple[int, int], pairs: list[tuple[str, str]], shuffler: object
) -> None:
    stamp = Stamp(parts[0], parts[1], sender)
    encoded = encode_v5(sender, Kind.DATA, stamp, validate_user_properties(pairs))
    reserved, application = encoded[:3], encoded[3:]
    # Insert the reserved keys at random positions; the application pairs keep their order.
    mixed = list(application)
    for pair in reserved:
        mixed.insert(shuffler.randint(0, len(mixed)), pair)  # type: ignore[attr-defined]
    assert decode_v5(mixed) == Envelope(sender, Kind.DATA, stamp, tuple(pairs))


@given(application_properties())
def test_plain_properties_pass_through(pairs: list[tuple[str, str]]) -> None:
    assert decode_v5(pairs) == Envelope(None, None, None, tuple(pairs))


# Anything at all: scalars, bytes, nested lists, tuples and dicts.
anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.sampled_from([KEY_ID, KEY_KIND, KEY_STAMP, RESERVED_PREFIX, "data", "delete", "request", "1:0", "w"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=2), children, max_size=2),
    ),
    max_leaves=12,
)

# Lists of pairs shaped like real envelopes, with reserved keys anywhere and values of any type.
envelope_keys = st.one_of(
    st.sampled_from([KEY_ID, KEY_KIND, KEY_STAMP, RESERVED_PREFIX + "x", "k", ""]), st.text(max_size=3)
)
envelope_values = st.one_of(
    st.sampled_from(["", "w", "data", "delete", "request", "reply", "presence", "0:0", "1:2", "01:2", "1:2:3"]),
    st.text(max_size=5),
    st.integers(),
    st.none(),
    st.binary(max_size=3),
)
envelope_lists = st.lists(
    st.one_of(
        st.tuples(envelope_keys, envelope_values),
        st.lists(envelope_values, max_size=3),
        anything,
    ),
    max_size=7,
)


def check_decode(properties: object) -> None:
    """Decode ``properties``; pass if it returns a consistent envelope or raises EnvelopeError."""
    try:
        envelope = decode_v5(properties)
    except EnvelopeError:
        return
    assert isinstance(envelope, Envelope)
    for key, _ in envelope.user_properties:
        assert not key.startswith(RESERVED_PREFIX)
    if envelope.sender is None:
        assert envelope.kind is None
        assert envelope.stamp is None
        return
    assert envelope.sender != ""
    assert envelope.kind is not None
    assert (envelope.stamp is not None) is envelope.kind.carries_stamp
    if envelope.stamp is not None:
        assert envelope.stamp.writer == envelope.sender


@given(anything)
def test_decode_anything(properties: object) -> None:
    check_decode(properties)


@given(envelope_lists)
def test_decode_envelope_shaped(properties: list[object]) -> None:
    check_decode(properties)


@given(anything)
def test_validate_anything(properties: object) -> None:
    try:
        result = validate_user_properties(properties)  # type: ignore[arg-type]
    except InvalidPropertyError:
        return
    assert isinstance(result, tuple)
    for key, value in result:
        assert isinstance(key, str)
        assert isinstance(value, str)
        assert not key.startswith(RESERVED_PREFIX)
