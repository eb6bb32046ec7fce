"""The message type that ``MnemoQ.messages()`` yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._stamp import Stamp

__all__ = ["Message"]


@dataclass(frozen=True, slots=True)
class Message:
    """One received value.

    ``payload`` is the exact bytes the publisher sent. ``sender`` is the client id of
    the mnemoq5 peer that wrote the value, or None for a plain MQTT publisher.
    ``user_properties`` are the application's own pairs in order, with the envelope's
    reserved keys removed. ``replayed`` is True when the value arrived through catch-up
    instead of a live publish. ``stamp`` is the version stamp, None for plain MQTT.
    ``deleted`` is True for a deletion: the topic has no value from ``stamp`` on, and
    ``payload`` is empty. ``expiry`` is the remaining lifetime in seconds when the
    value was received, or None when it does not expire.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    sender: str | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    replayed: bool = False
    stamp: Stamp | None = None
    deleted: bool = False
    expiry: int | None = None


def _slot_setter(name: str) -> Callable[[object, object], None]:
    setter: Callable[[object, object], None] = Message.__dict__[name].__set__
    return setter


def _stamp_setter(name: str) -> Callable[[object, object], None]:
    setter: Callable[[object, object], None] = Stamp.__dict__[name].__set__
    return setter


_new = object.__new__
_set_topic = _slot_setter("topic")
_set_payload = _slot_setter("payload")
_set_qos = _slot_setter("qos")
_set_retain = _slot_setter("retain")
_set_sender = _slot_setter("sender")
_set_user_properties = _slot_setter("user_properties")
_set_replayed = _slot_setter("replayed")
_set_stamp = _slot_setter("stamp")
_set_deleted = _slot_setter("deleted")
_set_expiry = _slot_setter("expiry")
_set_millis = _stamp_setter("millis")
_set_counter = _stamp_setter("counter")
_set_writer = _stamp_setter("writer")


def replayed_message(
    topic: str,
    payload: bytes,
    millis: int,
    counter: int,
    writer: str,
    qos: int,
    retain: bool,
    user_properties: list[tuple[str, str]],
    deleted: bool,
    expiry: int | None,
) -> Message:
    """Return the Message of a replayed value, equal to what the dataclass constructors build.

    The result is ``Message(topic, payload, qos, retain, writer, user_properties,
    True, Stamp(millis, counter, writer), deleted, expiry)``.

    The generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``. Setting the slots through their descriptors builds the
    same objects in half the time, which counts when a catch-up builds thousands.
    """
    stamp = _new(Stamp)
    _set_millis(stamp, millis)
    _set_counter(stamp, counter)
    _set_writer(stamp, writer)
    message = _new(Message)
    _set_topic(message, topic)
    _set_payload(message, payload)
    _set_qos(message, qos)
    _set_retain(message, retain)
    _set_sender(message, writer)
    _set_user_properties(message, user_properties)
    _set_replayed(message, True)
    _set_stamp(message, stamp)
    _set_deleted(message, deleted)
    _set_expiry(message, expiry)
    return message
