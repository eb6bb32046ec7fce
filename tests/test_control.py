"""Catch-up payloads: the vectors in spec/vectors/catch_up.json and Hypothesis round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemoq5._control import (
    CHUNK_OVERHEAD,
    ReplyChunk,
    ReplyEntry,
    Request,
    decode_chunk,
    decode_presence,
    decode_request,
    encode_chunk,
    encode_entry,
    encode_presence,
    encode_request,
    split_into_chunks,
)
from mnemoq5._errors import EnvelopeError
from mnemoq5._stamp import MAX_COUNTER, MAX_MILLIS, Stamp

VECTORS = json.loads((Path(__file__).parent.parent / "spec" / "vectors" / "catch_up.json").read_text())


def _entry_from_vector(vector: dict[str, Any]) -> ReplyEntry:
    return ReplyEntry(
        vector["topic"],
        bytes.fromhex(vector["payload_hex"]),
        Stamp(vector["millis"], vector["counter"], vector["writer"]),
        vector["qos"],
        vector["retain"],
        tuple((key, value) for key, value in vector["user_properties"]),
        vector["deleted"],
        vector["expiry"],
    )


@pytest.mark.parametrize("vector", VECTORS["chunks"], ids=lambda vector: vector["hex"][:16])
def test_chunk_vector_decodes(vector: dict[str, Any]) -> None:
    chunk = decode_chunk(bytes.fromhex(vector["hex"]))
    assert chunk.sequence == vector["sequence"]
    assert chunk.end_count == vector["end"]
    assert chunk.entries == tuple(_entry_from_vector(entry) for entry in vector["entries"])


@pytest.mark.parametrize("vector", VECTORS["chunks"], ids=lambda vector: vector["hex"][:16])
def test_chunk_vector_encodes(vector: dict[str, Any]) -> None:
    entries = [encode_entry(_entry_from_vector(entry)) for entry in vector["entries"]]
    assert encode_chunk(vector["sequence"], entries, vector["end"]).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS["invalid_chunks"], ids=lambda vector: vector["case"])
def test_chunk_vector_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError):
        decode_chunk(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda vector: vector["filter"])
def test_request_vector(vector: dict[str, Any]) -> None:
    request = decode_request(bytes.fromhex(vector["hex"]))
    assert request.topic_filter == vector["filter"]
    assert request.maximum_packet_size == vector["maximum_packet_size"]
    peers = None if request.peers is None else sorted(request.peers)
    assert peers == vector["peers"]
    assert encode_request(request).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS["presence"], ids=lambda vector: vector["hex"] or "empty")
def test_presence_vector(vector: dict[str, Any]) -> None:
    assert decode_presence(bytes.fromhex(vector["hex"])) == vector["started"]


# -- Hypothesis ---------------------------------------------------------------------

mqtt_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
topic_levels = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#"), max_size=8
)
topic_names = st.lists(topic_levels, min_size=1, max_size=4).map("/".join).filter(bool)
application_keys = mqtt_text.filter(lambda key: not key.startswith("mnemoq5:"))

entries = st.builds(
    ReplyEntry,
    topic=topic_names,
    payload=st.binary(max_size=64),
    stamp=st.builds(
        Stamp,
        st.integers(0, MAX_MILLIS),
        st.integers(0, MAX_COUNTER),
        mqtt_text.filter(bool),
    ),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    user_properties=st.lists(st.tuples(application_keys, mqtt_text), max_size=4).map(tuple),
    deleted=st.booleans(),
    expiry=st.none() | st.integers(0, 0xFFFFFFFF),
).map(lambda entry: dataclasses.replace(entry, payload=b"") if entry.deleted else entry)


@given(st.integers(0, 2**64 - 1), st.lists(entries, max_size=6), st.none() | st.integers(0, 2**64 - 1))
def test_chunk_round_trip(sequence: int, items: list[ReplyEntry], end: int | None) -> None:
    chunk = decode_chunk(encode_chunk(sequence, [encode_entry(item) for item in items], end))
    assert chunk.sequence == sequence
    assert chunk.entries == tuple(items)
    assert chunk.end_count == end


@given(st.lists(entries, min_size=1, max_size=30), st.integers(CHUNK_OVERHEAD + 1, 600))
def test_split_respects_limit(items: list[ReplyEntry], limit: int) -> None:
    encoded = [encode_entry(item) for item in items]
    groups = list(split_into_chunks(encoded, limit))
    assert [part for group in groups for part in group] == encoded
    for group in groups:
        if len(group) > 1:
            assert len(encode_chunk(2**64 - 1, group, 2**64 - 1)) <= limit


@given(st.binary(max_size=200))
def test_chunk_decoder_raises_only_envelope_error(data: bytes) -> None:
    try:
        chunk = decode_chunk(data)
    except EnvelopeError as error:
        assert str(error)
    else:
        assert isinstance(chunk, ReplyChunk)


@given(st.binary(max_size=200))
def test_request_decoder_raises_only_envelope_error(data: bytes) -> None:
    try:
        request = decode_request(data)
    except EnvelopeError as error:
        assert str(error)
    else:
        assert isinstance(request, Request)


@given(st.integers(0, 2**64 - 1))
def test_presence_round_trip(started: int) -> None:
    assert decode_presence(encode_presence(started)) == started


@given(topic_names.map(lambda name: name + "/#"), st.none() | st.integers(0, 268_435_460))
def test_request_round_trip(topic_filter: str, maximum: int | None) -> None:
    request = Request(topic_filter, maximum, frozenset({"a", "b"}))
    assert decode_request(encode_request(request)) == request
