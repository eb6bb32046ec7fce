"""Topic name and topic filter validation and matching, MQTT v5 sections 1.5.4 and 4.7.

Pure code: no I/O, no logging. Validation raises InvalidTopicError naming the value and
the rule; matching never normalises, so ``a/b``, ``a/b/``, ``/a/b`` and ``a//b`` are four
distinct topics.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import InvalidTopicError

__all__ = [
    "MAX_TOPIC_BYTES",
    "validate_topic_name",
    "validate_topic_filter",
    "topic_matches",
    "filter_matcher",
    "filter_base",
    "is_shared_filter",
]

# A UTF-8 Encoded String is prefixed by a Two Byte Integer length [MQTT-1.5.4].
MAX_TOPIC_BYTES = 65_535


def _validate_utf8_string(value: object, what: str) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTopicError(value, f"{what} is not valid UTF-8 [MQTT-1.5.4-1]") from None
    if not isinstance(value, str):
        raise InvalidTopicError(value, f"{what} must be str, not {type(value).__name__}")
    if value == "":
        # [MQTT-4.7.3-1]: topic names and topic filters are at least one character long.
        raise InvalidTopicError(value, f"{what} must not be empty [MQTT-4.7.3-1]")
    if "\x00" in value:
        raise InvalidTopicError(value, f"{what} must not contain U+0000 [MQTT-1.5.4-2], [MQTT-4.7.3-2]")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTopicError(
            value, f"{what} must not contain surrogate code points U+D800..U+DFFF [MQTT-1.5.4-1]"
        ) from None
    if len(encoded) > MAX_TOPIC_BYTES:
        raise InvalidTopicError(
            value[:40] + "...",
            f"{what} is {len(encoded)} UTF-8 bytes, more than the maximum of {MAX_TOPIC_BYTES} [MQTT-4.7.3-3]",
        )
    return value


def validate_topic_name(topic: object) -> str:
    """Return ``topic`` as str if it is a valid topic name for PUBLISH, else raise InvalidTopicError."""
    # Fast path: an ASCII str has no surrogates and as many UTF-8 bytes as characters,
    # so the rules below reduce to these checks. Everything else takes the full path.
    if (
        type(topic) is str
        and topic.isascii()
        and 0 < len(topic) <= MAX_TOPIC_BYTES
        and "\x00" not in topic
        and "+" not in topic
        and "#" not in topic
    ):
        return topic
    return _validate_topic_name(topic)


def _validate_topic_name(topic: object) -> str:
    name = _validate_utf8_string(topic, "topic name")
    if "+" in name or "#" in name:
        # [MQTT-3.3.2-2]: the Topic Name in a PUBLISH packet must not contain wildcard characters.
        raise InvalidTopicError(name, "a topic name must not contain the wildcards '+' or '#' [MQTT-3.3.2-2]")
    return name


def validate_topic_filter(topic_filter: object) -> str:
    """Return ``topic_filter`` as str if it is a valid topic filter, else raise InvalidTopicError."""
    text = _validate_utf8_string(topic_filter, "topic filter")
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise InvalidTopicError(
                    text, "'#' must occupy a whole level of the filter [MQTT-4.7.1-1]"
                )
            if index != len(levels) - 1:
                raise InvalidTopicError(text, "'#' must be the last level of the filter [MQTT-4.7.1-1]")
        if "+" in level and level != "+":
            raise InvalidTopicError(text, "'+' must occupy a whole level of the filter [MQTT-4.7.1-2]")
    if is_shared_filter(text):
        _validate_shared_filter(text)
    return text


def is_shared_filter(topic_filter: str) -> bool:
    """Return whether ``topic_filter`` names a shared subscription (``$share/{group}/{filter}``)."""
    return topic_filter.startswith("$share/")


def _validate_shared_filter(text: str) -> None:
    parts = text.split("/", 2)
    if len(parts) < 3 or parts[2] == "":
        raise InvalidTopicError(
            text, "a shared subscription needs a share name and a filter: $share/{name}/{filter} [MQTT-4.8.2-2]"
        )
    share_name = parts[1]
    if share_name == "":
        raise InvalidTopicError(text, "a share name must be at least one character long [MQTT-4.8.2-1]")
    if "+" in share_name or "#" in share_name:
        raise InvalidTopicError(text, "a share name must not contain '+' or '#' [MQTT-4.8.2-2]")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Return whether the topic name ``topic`` matches ``topic_filter`` (MQTT v5 section 4.7).

    ``#`` matches the parent level and any number of child levels (section 4.7.1.2), ``+``
    matches exactly one level, which may be empty, and a filter that starts with a
    wildcard does not match a topic that starts with ``$`` [MQTT-4.7.2-1]. Both
    arguments are assumed valid; shared subscription prefixes are not interpreted.
    """
    if topic.startswith("$") and topic_filter[:1] in ("#", "+"):
        return False
    if "+" not in topic_filter:
        # Without '+' a filter is a plain name, "#", or a plain prefix followed by "/#".
        if not topic_filter.endswith("#"):
            return topic_filter == topic
        if topic_filter == "#":
            return True
        base_length = len(topic_filter) - 2
        return topic.startswith(topic_filter[:base_length]) and (
            len(topic) == base_length or topic[base_length] == "/"
        )
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


def filter_matcher(topic_filter: str) -> Callable[[str], bool]:
    """Return a function of a topic name that equals ``topic_matches(topic_filter, topic)``.

    For the common filters without '+' (a plain name, ``#`` or ``prefix/#``) the
    returned function avoids splitting both strings on every call.
    """
    if "+" in topic_filter:
        return lambda topic: topic_matches(topic_filter, topic)
    if topic_filter == "#":
        return lambda topic: not topic.startswith("$")
    if not topic_filter.endswith("#"):
        return topic_filter.__eq__
    base = topic_filter[:-2]
    base_length = len(base)

    def matches_prefix(topic: str) -> bool:
        return topic.startswith(base) and (len(topic) == base_length or topic[base_length] == "/")

    return matches_prefix


def filter_base(topic_filter: str) -> str | None:
    """Return ``base`` for a filter ``base/#`` without '+', else None.

    Such a filter matches the topic ``base`` and every topic that starts with
    ``base + "/"`` (MQTT v5 section 4.7.1.2), so loops over many topics can test
    that with str.startswith instead of calling a matcher per topic.
    """
    if topic_filter.endswith("/#") and "+" not in topic_filter:
        return topic_filter[:-2]
    return None
