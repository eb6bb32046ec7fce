"""The message type that ``MnemoQ.messages()`` yields."""

from __future__ import annotations

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
