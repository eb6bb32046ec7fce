"""The MQTT v5 envelope: identity, message kind and stamp in user properties.

Pure code: no I/O, no logging. Encoding validates the application's properties and
raises InvalidPropertyError; decoding arbitrary input returns an Envelope or raises
EnvelopeError, nothing else. The payload is never touched.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import EnvelopeError, InvalidPropertyError
from ._stamp import Stamp

__all__ = [
    "RESERVED_PREFIX",
    "KEY_ID",
    "KEY_KIND",
    "KEY_STAMP",
    "Kind",
    "Envelope",
    "UserProperties",
    "encode_v5",
    "decode_v5",
    "validate_user_properties",
]

UserProperties = tuple[tuple[str, str], ...]

RESERVED_PREFIX = "mnemoq5:"
KEY_ID = RESERVED_PREFIX + "id"
KEY_KIND = RESERVED_PREFIX + "kind"
KEY_STAMP = RESERVED_PREFIX + "stamp"
_REQUIRED_KEYS = (KEY_ID, KEY_KIND)

# The UTF-8 string pair lengths are Two Byte Integers [MQTT-1.5.4].
_MAX_STRING_BYTES = 65_535


class Kind(enum.Enum):
    """Message kind carried under ``mnemoq5:kind``."""

    DATA = "data"
    DELETE = "delete"
    REQUEST = "request"
    REPLY = "reply"
    PRESENCE = "presence"
    SYNC = "sync"

    @property
    def carries_stamp(self) -> bool:
        """Whether envelopes of this kind must carry ``mnemoq5:stamp``."""
        return self in (Kind.DATA, Kind.DELETE)


_KINDS_BY_VALUE = {kind.value: kind for kind in Kind}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The identity, kind, stamp and application properties of a received PUBLISH.

    ``sender`` and ``kind`` are None for a message from a plain MQTT publisher.
    """

    sender: str | None
    kind: Kind | None
    stamp: Stamp | None
    user_properties: UserProperties


def _check_mqtt_string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidPropertyError(f"user property {what} {value!r} must be str, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidPropertyError(f"user property {what} {value!r} must not contain U+0000 [MQTT-1.5.4-2]")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPropertyError(
            f"user property {what} {value!r} must not contain surrogate code points [MQTT-1.5.4-1]"
        ) from None
    if size > _MAX_STRING_BYTES:
        raise InvalidPropertyError(
            f"user property {what} is {size} UTF-8 bytes, more than the maximum of {_MAX_STRING_BYTES}"
        )
    return value


def validate_user_properties(properties: Iterable[tuple[str, str]] | None) -> UserProperties:
    """Return the application's user properties as a tuple of pairs, or raise InvalidPropertyError.

    Order, duplicates and empty strings are kept. Keys that start with the reserved
    prefix ``mnemoq5:`` are rejected because peers would read them as the envelope.
    """
    if properties is None:
        return ()
    if isinstance(properties, (str, bytes, dict)) or not isinstance(properties, Iterable):
        raise InvalidPropertyError(
            f"user_properties must be a sequence of (key, value) pairs, not {type(properties).__name__}"
        )
    result = []
    for pair in properties:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidPropertyError(f"user property {pair!r} is not a (key, value) pair")
        key = _check_mqtt_string(pair[0], "key")
        value = _check_mqtt_string(pair[1], "value")
        if key.startswith(RESERVED_PREFIX):
            raise InvalidPropertyError(
                f"user property key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}; choose another key"
            )
        result.append((key, value))
    return tuple(result)


def encode_v5(
    sender: str, kind: Kind, stamp: Stamp | None, user_properties: UserProperties = ()
) -> list[tuple[str, str]]:
    """Build the PUBLISH user property list: the reserved keys first, then the application's pairs.

    ``user_properties`` must already have passed validate_user_properties. Raises
    ValueError for an envelope that decode_v5 would reject: an empty sender, or a
    stamp missing from a kind that carries one or present on a kind that does not.
    """
    if sender == "":
        raise ValueError(f"the sender under {KEY_ID!r} must not be empty")
    if kind.carries_stamp and stamp is None:
        raise ValueError(f"kind {kind.value!r} needs a stamp")
    if not kind.carries_stamp and stamp is not None:
        raise ValueError(f"kind {kind.value!r} must not carry a stamp")
    encoded = [(KEY_ID, sender), (KEY_KIND, kind.value)]
    if stamp is not None:
        encoded.append((KEY_STAMP, stamp.to_text()))
    encoded.extend(user_properties)
    return encoded


def decode_v5(properties: object) -> Envelope:
    """Split received user properties into the envelope and the application's pairs.

    A list without any reserved key is a plain MQTT message (sender None). A list with
    reserved keys must carry ``mnemoq5:id`` and ``mnemoq5:kind`` exactly once each, and
    ``mnemoq5:stamp`` exactly once for kinds that carry a stamp. Duplicates are
    rejected even when their values agree. Unknown keys under the reserved prefix are
    rejected too, so a newer protocol never passes silently for this one.
    """
    if properties is None:
        return Envelope(None, None, None, ())
    fast = _decode_common(properties)
    if fast is not None:
        return fast
    if not isinstance(properties, Sequence) or isinstance(properties, (str, bytes)):
        raise EnvelopeError(f"user properties must be a sequence of pairs, not {type(properties).__name__}")

    reserved: dict[str, str] = {}
    application: list[tuple[str, str]] = []
    for pair in properties:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise EnvelopeError(f"user property {pair!r} is not a (key, value) pair")
        key, value = pair
        if not isinstance(key, str) or not isinstance(value, str):
            raise EnvelopeError(f"user property {pair!r} is not a pair of strings")
        if not key.startswith(RESERVED_PREFIX):
            application.append((key, value))
            continue
        if key not in (KEY_ID, KEY_KIND, KEY_STAMP):
            raise EnvelopeError(f"unknown reserved user property key {key!r}")
        if key in reserved:
            raise EnvelopeError(f"reserved user property key {key!r} appears more than once")
        reserved[key] = value

    if not reserved:
        return Envelope(None, None, None, tuple(application))
    return _decode_reserved(reserved, tuple(application))


def _decode_common(properties: object) -> Envelope | None:
    """Decode the usual list that encode_v5 builds, or return None to take the general path.

    The usual list starts with ``mnemoq5:id``, ``mnemoq5:kind`` and, for kinds that
    carry one, ``mnemoq5:stamp``, followed by application pairs without the reserved
    prefix. Anything else, valid or not, is left to decode_v5's general loop, which
    also produces its error messages.
    """
    if type(properties) is not list or len(properties) < 2:
        return None
    first, second = properties[0], properties[1]
    if type(first) is not tuple or type(second) is not tuple or len(first) != 2 or len(second) != 2:
        return None
    if first[0] != KEY_ID or second[0] != KEY_KIND:
        return None
    sender, kind_text = first[1], second[1]
    if type(sender) is not str or sender == "":
        return None
    kind = _KINDS_BY_VALUE.get(kind_text) if type(kind_text) is str else None
    if kind is None:
        return None
    start = 2
    stamp = None
    if kind.carries_stamp:
        if len(properties) < 3:
            return None
        third = properties[2]
        if type(third) is not tuple or len(third) != 2 or third[0] != KEY_STAMP or type(third[1]) is not str:
            return None
        try:
            stamp = Stamp.from_text(third[1], sender)
        except EnvelopeError:
            return None
        start = 3
    if len(properties) == start:
        return Envelope(sender, kind, stamp, ())
    application = tuple(properties[start:])
    for pair in application:
        if type(pair) is not tuple or len(pair) != 2:
            return None
        key, value = pair
        if type(key) is not str or type(value) is not str or key.startswith(RESERVED_PREFIX):
            return None
    return Envelope(sender, kind, stamp, application)


def _decode_reserved(reserved: dict[str, str], application: UserProperties) -> Envelope:
    for key in _REQUIRED_KEYS:
        if key not in reserved:
            raise EnvelopeError(f"envelope is missing the reserved key {key!r}")
    sender = reserved[KEY_ID]
    if sender == "":
        raise EnvelopeError(f"reserved key {KEY_ID!r} must not be empty")
    kind = _KINDS_BY_VALUE.get(reserved[KEY_KIND])
    if kind is None:
        raise EnvelopeError(f"unknown message kind {reserved[KEY_KIND]!r}")

    stamp_text = reserved.get(KEY_STAMP)
    if kind.carries_stamp and stamp_text is None:
        raise EnvelopeError(f"a {kind.value!r} envelope is missing {KEY_STAMP!r}")
    if not kind.carries_stamp and stamp_text is not None:
        raise EnvelopeError(f"a {kind.value!r} envelope must not carry {KEY_STAMP!r}")
    stamp = Stamp.from_text(stamp_text, sender) if stamp_text is not None else None
    return Envelope(sender, kind, stamp, application)
