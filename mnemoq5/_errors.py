"""The exception hierarchy: one base class, subclasses by cause."""

from __future__ import annotations

__all__ = [
    "MnemoqError",
    "InvalidTopicError",
    "InvalidPropertyError",
    "InvalidArgumentError",
    "PacketTooLargeError",
    "EnvelopeError",
    "ConnectError",
    "ProtocolVersionError",
    "NotConnectedError",
    "SubscribeError",
    "StoreError",
]


class MnemoqError(Exception):
    """Base class of every exception that mnemoq5 raises."""


class InvalidArgumentError(MnemoqError, ValueError):
    """A value passed to the API breaks a rule; the message names the value and the rule."""


class InvalidTopicError(InvalidArgumentError):
    """A topic name or topic filter breaks a rule of MQTT v5 section 4.7 or 1.5.4."""

    def __init__(self, value: object, rule: str) -> None:
        self.value = value
        self.rule = rule
        super().__init__(f"invalid topic {value!r}: {rule}")


class InvalidPropertyError(InvalidArgumentError):
    """An application user property is malformed or uses the reserved key prefix."""


class PacketTooLargeError(InvalidArgumentError):
    """A PUBLISH packet would exceed the Maximum Packet Size that the broker imposed."""


class EnvelopeError(MnemoqError):
    """A message from a peer is malformed.

    The pure protocol layer raises it; the client catches it, counts and logs the
    message, and drops it. It never reaches the application from ``messages()``.
    """


class ConnectError(MnemoqError, ConnectionError):
    """The connection to the broker failed or was refused."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot connect to MQTT broker at {host}:{port}: {reason}")


class ProtocolVersionError(ConnectError):
    """The broker does not accept the MQTT protocol version the client asked for."""


class NotConnectedError(MnemoqError):
    """The operation needs a client that has connected and has not been closed."""


class SubscribeError(MnemoqError):
    """The broker refused a subscription (SUBACK reason code 0x80 or higher)."""

    def __init__(self, topic_filter: str, reason_code: int) -> None:
        self.topic_filter = topic_filter
        self.reason_code = reason_code
        name = _SUBACK_REASONS.get(reason_code, "unknown reason")
        super().__init__(
            f"broker refused subscription {topic_filter!r}: "
            f"reason code 0x{reason_code:02X} ({name})"
        )


class StoreError(MnemoqError):
    """The last-value store cannot be opened, read or written."""


# SUBACK reason codes, MQTT v5 section 3.9.3.
_SUBACK_REASONS = {
    0x80: "unspecified error",
    0x83: "implementation specific error",
    0x87: "not authorized",
    0x8F: "topic filter invalid",
    0x91: "packet identifier in use",
    0x97: "quota exceeded",
    0x9E: "shared subscriptions not supported",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}
