"""Topic name and filter validation and matching: the vectors in spec/vectors/topics.json and properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemoq5 import InvalidTopicError, topic_matches, validate_topic_filter, validate_topic_name
from mnemoq5._topics import MAX_TOPIC_BYTES, is_shared_filter

VECTORS = json.loads((Path(__file__).parent.parent / "spec" / "vectors" / "topics.json").read_text())


# -- vectors ---------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS["valid_names"])
def test_name_valid(name: str) -> None:
    assert validate_topic_name(name) == name


@pytest.mark.parametrize("case", VECTORS["invalid_names"], ids=lambda case: repr(case["name"]))
def test_name_invalid(case: dict[str, str]) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_name(case["name"])
    assert raised.value.value == case["name"]
    assert case["rule"] in raised.value.rule
    assert case["rule"] in str(raised.value)


@pytest.mark.parametrize("topic_filter", VECTORS["valid_filters"])
def test_filter_valid(topic_filter: str) -> None:
    assert validate_topic_filter(topic_filter) == topic_filter


@pytest.mark.parametrize("case", VECTORS["invalid_filters"], ids=lambda case: repr(case["filter"]))
def test_filter_invalid(case: dict[str, str]) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_filter(case["filter"])
    assert raised.value.value == case["filter"]
    assert case["rule"] in raised.value.rule


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), VECTORS["matches"])
def test_matches_vector(topic_filter: str, topic: str, expected: bool) -> None:
    assert validate_topic_filter(topic_filter) == topic_filter
    assert validate_topic_name(topic) == topic
    assert topic_matches(topic_filter, topic) is expected


def test_matches_distinct_topics() -> None:
    topics = VECTORS["distinct_topics"]
    for topic_filter in topics:
        for topic in topics:
            assert topic_matches(topic_filter, topic) is (topic_filter == topic), (topic_filter, topic)


# -- lengths and types -----------------------------------------------------


def test_name_maximum_length() -> None:
    name = "a" * MAX_TOPIC_BYTES
    assert validate_topic_name(name) == name


def test_name_too_long() -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_name("a" * (MAX_TOPIC_BYTES + 1))
    assert "MQTT-4.7.3-3" in raised.value.rule


def test_name_too_long_multibyte() -> None:
    # 32,768 characters of two UTF-8 bytes each: the limit is on bytes, not characters.
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_name("\u00e9" * 32_768)
    assert "65536 UTF-8 bytes" in raised.value.rule


def test_filter_too_long() -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_filter("a" * (MAX_TOPIC_BYTES - 1) + "/#")
    assert "MQTT-4.7.3-3" in raised.value.rule


def test_name_from_bytes() -> None:
    assert validate_topic_name("caf\u00e9/x".encode()) == "caf\u00e9/x"


def test_name_bytes_invalid_utf8() -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_name(b"a/\xff")
    assert "MQTT-1.5.4-1" in raised.value.rule


def test_filter_bytes_encoded_surrogate() -> None:
    # CESU-style encoding of U+D800 is not well-formed UTF-8.
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_filter(b"a/\xed\xa0\x80")
    assert "MQTT-1.5.4-1" in raised.value.rule


@pytest.mark.parametrize("value", [None, 5, 1.5, ["a"], object()])
def test_name_wrong_type(value: object) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        validate_topic_name(value)
    assert "must be str" in raised.value.rule


def test_shared_filter_detection() -> None:
    assert is_shared_filter("$share/g/a")
    assert not is_shared_filter("$SHARE/g/a")
    assert not is_shared_filter("share/g/a")


# -- properties ------------------------------------------------------------

# One topic level: any text without separators, wildcards, U+0000 or surrogates.
levels = st.text(
    alphabet=st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)),
    max_size=4,
)
topic_names = (
    st.lists(levels, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda name: name != "" and not name.startswith("$share/"))
)


@given(topic_names)
def test_name_property_valid(name: str) -> None:
    assert validate_topic_name(name) == name
    assert validate_topic_filter(name) == name


@given(topic_names)
def test_matches_itself(topic: str) -> None:
    assert topic_matches(topic, topic)


@given(topic_names, topic_names)
def test_literal_filter_is_equality(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) is (topic_filter == topic)


@given(topic_names)
def test_hash_matches_all(topic: str) -> None:
    assert topic_matches("#", topic) is (not topic.startswith("$"))


@given(topic_names, st.data())
def test_plus_replaces_level(topic: str, data: st.DataObject) -> None:
    topic_levels = topic.split("/")
    index = data.draw(st.integers(0, len(topic_levels) - 1))
    filter_levels = [*topic_levels[:index], "+", *topic_levels[index + 1 :]]
    topic_filter = "/".join(filter_levels)
    expected = not (index == 0 and topic.startswith("$"))
    assert validate_topic_filter(topic_filter) == topic_filter
    assert topic_matches(topic_filter, topic) is expected


@given(topic_names, st.data())
def test_hash_after_prefix(topic: str, data: st.DataObject) -> None:
    topic_levels = topic.split("/")
    # The prefix may be all levels: '#' also matches the parent level.
    count = data.draw(st.integers(1, len(topic_levels)))
    topic_filter = "/".join([*topic_levels[:count], "#"])
    assert validate_topic_filter(topic_filter) == topic_filter
    assert topic_matches(topic_filter, topic)


@given(topic_names, topic_names)
def test_hash_never_matches_sibling(prefix: str, other: str) -> None:
    topic_filter = prefix + "/#"
    topic = other
    expected = topic == prefix or topic.startswith(prefix + "/")
    assert topic_matches(topic_filter, topic) is expected


@given(topic_names, st.integers(1, 3))
def test_plus_counts_levels(topic: str, extra: int) -> None:
    depth = len(topic.split("/"))
    assert topic_matches("/".join(["+"] * depth), topic) is (not topic.startswith("$"))
    assert not topic_matches("/".join(["+"] * (depth + extra)), topic)


@given(st.text(max_size=20))
def test_name_raises_only_invalid_topic(text: str) -> None:
    try:
        result = validate_topic_name(text)
    except InvalidTopicError as error:
        assert error.value == text
        return
    assert result == text
    assert "+" not in result
    assert "#" not in result


@given(st.text(alphabet="ab/+#$\x00", max_size=12))
def test_filter_raises_only_invalid_topic(text: str) -> None:
    try:
        result = validate_topic_filter(text)
    except InvalidTopicError as error:
        assert "MQTT-" in error.rule
        return
    assert result == text
    for level in text.split("/"):
        assert level in ("+", "#") or ("+" not in level and "#" not in level)


@given(st.binary(max_size=12))
def test_name_bytes_raise_only_invalid_topic(raw: bytes) -> None:
    try:
        result = validate_topic_name(raw)
    except InvalidTopicError:
        return
    assert result.encode("utf-8") == raw
