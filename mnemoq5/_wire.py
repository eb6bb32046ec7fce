"""The two places the envelope travels: user properties in MQTT v5, a payload prefix in compat mode.

Pure code. ``unwrap`` turns a received PUBLISH into the envelope and an Incoming whose
payload, Response Topic and Correlation Data are the application's, whichever way
they travelled. ``wrap`` does the reverse for one outgoing message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ._adapter import Incoming
from ._compat import MAGIC, CompatHeader, decode_compat, encode_compat
from ._envelope import Envelope, Kind, UserProperties, decode_v5, encode_v5
from ._errors import EnvelopeError
from ._stamp import Stamp

__all__ = ["Outgoing", "wrap", "unwrap"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One PUBLISH as it goes on the wire."""

    payload: bytes
    user_properties: list[tuple[str, str]]
    response_topic: str | None = None
    correlation_data: bytes | None = None
    message_expiry: int | None = None


def wrap(
    sender: str,
    kind: Kind,
    stamp: Stamp | None,
    payload: bytes,
    *,
    compat: bool,
    user_properties: UserProperties = (),
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry: int | None = None,
) -> Outgoing:
    """Put the envelope in user properties, or with ``compat`` in a payload prefix."""
    if not compat:
        return Outgoing(
            payload,
            encode_v5(sender, kind, stamp, user_properties),
            response_topic,
            correlation_data,
            message_expiry,
        )
    header = CompatHeader(
        sender=sender,
        kind=kind,
        stamp=stamp,
        user_properties=user_properties,
        response_topic=response_topic,
        correlation_data=correlation_data,
        message_expiry=message_expiry,
    )
    return Outgoing(encode_compat(header, payload), [])


def unwrap(incoming: Incoming) -> tuple[Envelope, Incoming, bool]:
    """Return the envelope, the message with the application's payload, and whether it was compat-wrapped.

    A v5 message without reserved user properties whose payload starts with the compat
    magic comes from a compat peer in a mixed fleet, so both forms are read in both
    modes. Raises EnvelopeError for a malformed envelope.
    """
    envelope = decode_v5(incoming.user_properties)
    if envelope.sender is not None or not incoming.payload.startswith(MAGIC):
        return envelope, incoming, False
    decoded = decode_compat(incoming.payload)
    if decoded is None:
        raise EnvelopeError("payload starts with the compat magic but does not decode")
    header, payload = decoded
    unwrapped = dataclasses.replace(
        incoming,
        payload=payload,
        response_topic=header.response_topic,
        correlation_data=header.correlation_data,
        message_expiry=header.message_expiry,
    )
    return Envelope(header.sender, header.kind, header.stamp, header.user_properties), unwrapped, True
