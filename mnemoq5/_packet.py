"""Sizes of MQTT v5 packets, to respect the Maximum Packet Size before sending. Pure code."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["variable_byte_integer_size", "publish_packet_size"]


def variable_byte_integer_size(value: int) -> int:
    """Return the bytes a Variable Byte Integer of ``value`` takes (MQTT v5 1.5.5)."""
    size = 1
    while value >= 128:
        value //= 128
        size += 1
    return size


def publish_packet_size(
    topic: str,
    payload_size: int,
    qos: int,
    user_properties: Sequence[tuple[str, str]] = (),
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry: int | None = None,
    protocol_v5: bool = True,
) -> int:
    """Return the size in bytes of a whole PUBLISH packet, fixed header included."""
    remaining = 2 + len(topic.encode("utf-8")) + payload_size
    if qos > 0:
        remaining += 2
    if protocol_v5:
        properties = 0
        for key, value in user_properties:
            properties += 1 + 2 + len(key.encode("utf-8")) + 2 + len(value.encode("utf-8"))
        if response_topic is not None:
            properties += 1 + 2 + len(response_topic.encode("utf-8"))
        if correlation_data is not None:
            properties += 1 + 2 + len(correlation_data)
        if message_expiry is not None:
            properties += 1 + 4
        remaining += variable_byte_integer_size(properties) + properties
    return 1 + variable_byte_integer_size(remaining) + remaining
