"""The only module that talks to gmqtt.

A :class:`Connection` is one MQTT network connection. The client makes a new one for
every connect attempt and owns reconnecting, so gmqtt's own reconnect, resubscribe and
protocol downgrade never run. gmqtt's callbacks, property dicts and exceptions stop
here, so the rest of the library uses :class:`Incoming`, :class:`BrokerLimits` and its
own exceptions.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl as ssl_module
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from ._errors import ConnectError, ProtocolVersionError

__all__ = ["BrokerLimits", "Incoming", "Will", "Connection", "ConnectionLost", "MQTT_V5", "MQTT_V311"]

logger = logging.getLogger(__name__)

MQTT_V5 = MQTTv50
MQTT_V311 = MQTTv311

# CONNACK reason codes that mean the broker does not speak the requested version:
# 0x01 in MQTT 3.1.1 and 0x84 in MQTT v5.
_UNSUPPORTED_VERSION_CODES = frozenset({0x01, 0x84})

# PUBLISH fixed header type and the property identifiers of MQTT v5 section 2.2.2.2.
_PUBLISH = 0x30
_PAYLOAD_FORMAT = 0x01
_MESSAGE_EXPIRY = 0x02
_CONTENT_TYPE = 0x03
_RESPONSE_TOPIC = 0x08
_CORRELATION_DATA = 0x09
_SUBSCRIPTION_ID = 0x0B
_USER_PROPERTY = 0x26
# The largest Remaining Length a Variable Byte Integer can carry (MQTT v5 1.5.5).
_MAX_REMAINING_LENGTH = 268_435_455
# The most encoded user property pairs one connection keeps.
_MAX_ENCODED_PAIRS = 64

_pack_u16 = struct.Struct("!H").pack
_pack_id_u16 = struct.Struct("!BH").pack
_pack_id_u32 = struct.Struct("!BI").pack
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from


_USE_COMPAT = "use compat mode (compat=True, or --compat on the command line)"

# DISCONNECT reason codes a broker sends, MQTT v5 section 3.14.2.1.
_DISCONNECT_REASONS = {
    0x00: "normal disconnection",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x87: "not authorized",
    0x89: "server busy",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over: another client connected with the same client id",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


class ConnectionLost(Exception):
    """Internal: the connection closed while an operation waited on it."""


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """Values the broker imposed in CONNACK (MQTT v5 section 3.2.2.3)."""

    maximum_packet_size: int | None
    receive_maximum: int
    subscription_identifiers: bool
    retain_available: bool
    maximum_qos: int
    protocol_version: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received PUBLISH, with gmqtt's property dict flattened."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]] | None
    response_topic: str | None
    correlation_data: bytes | None
    subscription_ids: tuple[int, ...]
    message_expiry: int | None


@dataclass(frozen=True, slots=True)
class Will:
    """The will message the broker publishes when this connection dies."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]]


class _InflightWindow:
    """Counts packet identifiers in use, so gmqtt never runs out of them.

    gmqtt allocates PUBLISH, SUBSCRIBE and UNSUBSCRIBE packet ids from one pool capped
    at the broker's Receive Maximum and raises OverflowError when it is full. Senders
    acquire a slot before sending and release it on the acknowledgement.
    """

    def __init__(self) -> None:
        self.capacity = 1
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._failed: BaseException | None = None

    async def acquire(self) -> None:
        while True:
            if self._failed is not None:
                raise self._failed
            if self.used < self.capacity:
                self.used += 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self) -> None:
        if self.used > 0:
            self.used -= 1
        self._wake_one()

    def fail(self, error: BaseException) -> None:
        self._failed = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _InflightStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight QoS store, releasing a window slot when a PUBLISH is acknowledged."""

    def __init__(self, window: _InflightWindow) -> None:
        super().__init__()
        self._window = window

    def remove_message_by_mid(self, mid: int) -> None:
        known = mid in self._messages
        super().remove_message_by_mid(mid)
        if known:
            self._window.release()

    def clear(self) -> None:
        for _ in range(len(self._messages)):
            self._window.release()
        super().clear()


class _GmqttClient(gmqtt.Client):  # type: ignore[misc]
    """gmqtt client whose reconnect hook reports the loss instead of reconnecting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_callback: Callable[[], None] = lambda: None

    async def reconnect(self, delay: bool = False) -> None:
        self.lost_callback()


class Connection:
    """One MQTT connection to a broker, opened once and never reopened."""

    def __init__(
        self,
        client_id: str,
        *,
        on_message: Callable[[Incoming], None],
        on_lost: Callable[[], None],
        protocol_version: int = MQTT_V5,
        will: Will | None = None,
        username: str | None = None,
        password: str | None = None,
        session_expiry: int = 0,
        maximum_packet_size: int | None = None,
        constant_property_keys: frozenset[str] = frozenset(),
    ) -> None:
        self._on_message = on_message
        # Encoded user property pairs whose key is in constant_property_keys: the
        # caller promises few distinct values under those keys, such as a sender id.
        self._constant_property_keys = constant_property_keys
        self._encoded_pairs: dict[tuple[str, str], bytes] = {}
        self._on_lost = on_lost
        self._protocol_version = protocol_version
        self._window = _InflightWindow()
        self._pending_acks: dict[int, asyncio.Future[Sequence[int]]] = {}
        self._lost = asyncio.Event()
        self._open = False
        self.limits: BrokerLimits | None = None

        connect_properties: dict[str, Any] = {}
        if protocol_version >= MQTT_V5:
            connect_properties["session_expiry_interval"] = session_expiry
            if maximum_packet_size is not None:
                connect_properties["maximum_packet_size"] = maximum_packet_size

        self._client = _GmqttClient(
            # gmqtt sizes CONNECT by len(client_id), which counts characters in a str;
            # bytes make the length right for non-ASCII ids.
            client_id.encode("utf-8"),
            clean_session=True,
            optimistic_acknowledgement=True,
            will_message=_gmqtt_will(will, protocol_version),
            persistent_storage=_InflightStorage(self._window),
            logger=logging.getLogger("gmqtt"),
            **connect_properties,
        )
        self._client.lost_callback = self._handle_lost
        if username is not None:
            self._client.set_auth_credentials(username, password)
        self._client.on_message = self._handle_message
        handler = self._client._package_handler
        self._gmqtt_publish_handler: Callable[[int, bytes], None] = handler._handle_publish_packet
        # gmqtt looks up its packet handlers in this cache by packet type, so the fast
        # PUBLISH parser below replaces its generic one for this client only.
        handler._handler_cache[_PUBLISH] = self._handle_publish_packet
        self._client.on_subscribe = self._handle_suback
        self._client.on_unsubscribe = self._handle_unsuback
        self._client.on_disconnect = self._handle_disconnect
        self._disconnect_reason: int | None = None

    @property
    def is_open(self) -> bool:
        return self._open and not self._lost.is_set()

    async def open(
        self, host: str, port: int, *, tls: ssl_module.SSLContext | None, keepalive: int, timeout: float
    ) -> BrokerLimits:
        """Open the TCP connection, send CONNECT and wait for CONNACK; raise ConnectError."""
        connect = asyncio.ensure_future(
            self._client.connect(host, port, ssl=tls or False, keepalive=keepalive, version=self._protocol_version)
        )
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({connect, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # disconnect() cancelled this attempt: a connect that completes later must not stay open.
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            await self._abort()
            raise
        finally:
            lost.cancel()
        if connect in done:
            self._raise_connect_failure(connect, host, port)
        else:
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            await self._abort()
            if not done:
                # NOTE: amqtt replies to a v5 CONNECT with CONNACK 0x01 and closes at once.
                # gmqtt 0.8 then loses the CONNACK and does not notice the close, so this
                # case ends at the timeout instead of raising ProtocolVersionError.
                raise ConnectError(
                    host,
                    port,
                    f"no CONNACK within {timeout:g} s; if the broker only speaks MQTT 3.1.1, {_USE_COMPAT}",
                )
            self._raise_if_downgraded(host, port)
            raise ConnectError(
                host,
                port,
                f"the broker closed the connection before CONNACK; if it only speaks MQTT 3.1.1, {_USE_COMPAT}",
            )
        self.limits = self._read_limits()
        self._window.capacity = max(1, self.limits.receive_maximum - 2)
        self._open = True
        return self.limits

    def _raise_connect_failure(self, connect: asyncio.Future[None], host: str, port: int) -> None:
        error = connect.exception()
        if error is None:
            self._raise_if_downgraded(host, port)
            return
        reason_code = getattr(error, "_code", None)
        if isinstance(error, gmqtt.MQTTConnectError) and reason_code in _UNSUPPORTED_VERSION_CODES:
            raise ProtocolVersionError(host, port, _unsupported_version_text(self._protocol_version)) from None
        if isinstance(error, gmqtt.MQTTConnectError):
            raise ConnectError(host, port, f"broker refused the connection, {error}") from None
        if isinstance(error, OSError):
            raise ConnectError(host, port, error.strerror or str(error)) from None
        raise ConnectError(host, port, f"{type(error).__name__}: {error}") from None

    def _raise_if_downgraded(self, host: str, port: int) -> None:
        # gmqtt handles a CONNACK of 0x01 to a v5 CONNECT by switching the process to
        # MQTT 3.1.1 and retrying. mnemoq5 never downgrades silently.
        if self._client._connection_state.protocol_version != self._protocol_version:
            raise ProtocolVersionError(host, port, _unsupported_version_text(self._protocol_version))

    def _read_limits(self) -> BrokerLimits:
        properties = self._client._package_handler._connack_properties
        is_v5 = self._protocol_version >= MQTT_V5

        def first(name: str, default: Any) -> Any:
            values = properties.get(name)
            return values[0] if values else default

        return BrokerLimits(
            maximum_packet_size=first("maximum_packet_size", None),
            receive_maximum=first("receive_maximum", 65_535) if is_v5 else 65_535,
            subscription_identifiers=bool(first("sub_id_available", 1)) if is_v5 else False,
            retain_available=bool(first("retain_available", 1)),
            maximum_qos=first("max_qos", 2),
            protocol_version=self._protocol_version,
        )

    def _handle_disconnect(self, client: object, packet: object = None, *rest: object) -> None:
        # A DISCONNECT from an MQTT v5 broker starts with its reason code; the one gmqtt
        # makes up when the socket closes is empty.
        if self._disconnect_reason is None and isinstance(packet, (bytes, bytearray)) and packet:
            self._disconnect_reason = packet[0]
        self._handle_lost()

    def disconnect_reason_text(self) -> str:
        """Describe the reason code of the broker's DISCONNECT, or return "" when there was none."""
        code = self._disconnect_reason
        if code is None or self._protocol_version < MQTT_V5:
            return ""
        name = _DISCONNECT_REASONS.get(code, "unknown reason")
        return f"the broker sent DISCONNECT with reason code 0x{code:02X} ({name})"

    def _handle_lost(self) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        self._window.fail(ConnectionLost())
        for future in self._pending_acks.values():
            if not future.done():
                future.set_exception(ConnectionLost())
        self._pending_acks.clear()
        if self._open:
            self._on_lost()

    def _handle_message(
        self, client: object, topic: object, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        if not isinstance(topic, str):
            logger.warning("dropped a PUBLISH whose topic is not valid UTF-8: %r", topic)
            return

        def first(name: str) -> Any:
            values = properties.get(name)
            return values[0] if values else None

        self._on_message(
            Incoming(
                topic=topic,
                payload=bytes(payload),
                qos=qos,
                retain=bool(properties.get("retain")),
                user_properties=properties.get("user_property"),
                response_topic=first("response_topic"),
                correlation_data=first("correlation_data"),
                subscription_ids=tuple(properties.get("subscription_identifier", ())),
                message_expiry=first("message_expiry_interval"),
            )
        )

    def _handle_publish_packet(self, cmd: int, raw_packet: bytes) -> None:
        """Parse a QoS 0 or 1 PUBLISH and deliver it without gmqtt's property dict.

        Anything the fast parser does not cover (QoS 2, a Topic Alias, an unknown
        property, a malformed packet, a topic that is not UTF-8) goes to gmqtt's own
        handler, which then behaves as before.
        """
        qos = (cmd & 0x06) >> 1
        incoming = None
        if qos < 2:
            try:
                parsed = _parse_publish(cmd, raw_packet, self._protocol_version >= MQTT_V5)
            except (IndexError, ValueError, struct.error):
                parsed = None
            if parsed is not None:
                mid, incoming = parsed
        if incoming is None:
            self._gmqtt_publish_handler(cmd, raw_packet)
            return
        if mid is not None:
            self._client._package_handler._send_puback(mid)
        self._on_message(incoming)

    def _handle_suback(self, client: object, mid: int, reason_codes: Sequence[int], properties: object) -> None:
        self._window.release()
        future = self._pending_acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(tuple(reason_codes))

    def _handle_unsuback(self, client: object, mid: int, reason_codes: Sequence[int]) -> None:
        self._window.release()
        future = self._pending_acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(tuple(reason_codes))

    def _require_open(self) -> None:
        if not self.is_open:
            raise ConnectionLost()

    async def subscribe(
        self, topic_filter: str, *, qos: int, no_local: bool, subscription_id: int | None
    ) -> int:
        """Send one SUBSCRIBE and return the SUBACK reason code; raise ConnectionLost."""
        await self._window.acquire()
        self._require_open()
        subscription = gmqtt.Subscription(
            topic_filter, qos=qos, no_local=no_local, subscription_identifier=subscription_id
        )
        future: asyncio.Future[Sequence[int]] = asyncio.get_running_loop().create_future()
        mid = self._client.subscribe(subscription)
        self._pending_acks[mid] = future
        reason_codes = await future
        return reason_codes[0] if reason_codes else 0x80

    async def unsubscribe(self, topic_filter: str) -> None:
        """Send one UNSUBSCRIBE and wait for UNSUBACK; raise ConnectionLost."""
        await self._window.acquire()
        self._require_open()
        future: asyncio.Future[Sequence[int]] = asyncio.get_running_loop().create_future()
        mid = self._client.unsubscribe(topic_filter)
        self._pending_acks[mid] = future
        await future

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        user_properties: Sequence[tuple[str, str]] = (),
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        message_expiry: int | None = None,
    ) -> None:
        """Hand one PUBLISH to the transport; at QoS 1 and 2, first wait for a free packet id.

        Returns before the acknowledgement arrives. Raises ConnectionLost.
        """
        if qos > 0:
            await self._window.acquire()
        self._require_open()
        # The packet is built here instead of by gmqtt's PublishPacket, which encodes
        # each property through a generic lookup: about a tenth of the time of a
        # 100-byte publish in bench.profile_publish. The bytes on the wire are the same.
        properties = b""
        if self._protocol_version >= MQTT_V5:
            properties = self._encode_properties(user_properties, response_topic, correlation_data, message_expiry)
        mid = self._client._package_handler.id_generator.next_id() if qos > 0 else None
        packet = _encode_publish(topic, payload, qos, retain, mid, properties)
        self._client._connection._protocol.write_data(packet)
        if mid is not None:
            # gmqtt's in-flight store releases the window slot on PUBACK (_InflightStorage).
            self._client._persistent_storage.push_message(mid, packet)

    def _encode_properties(
        self,
        user_properties: Sequence[tuple[str, str]],
        response_topic: str | None,
        correlation_data: bytes | None,
        message_expiry: int | None,
    ) -> bytes:
        """Encode the PUBLISH properties with their length prefix (MQTT v5 3.3.2.3)."""
        parts = []
        for key, value in user_properties:
            if key not in self._constant_property_keys:
                parts.append(_encode_user_property(key, value))
                continue
            encoded = self._encoded_pairs.get((key, value))
            if encoded is None:
                encoded = _encode_user_property(key, value)
                if len(self._encoded_pairs) < _MAX_ENCODED_PAIRS:
                    self._encoded_pairs[(key, value)] = encoded
            parts.append(encoded)
        if response_topic is not None:
            topic_bytes = response_topic.encode("utf-8")
            parts.append(_pack_id_u16(_RESPONSE_TOPIC, len(topic_bytes)))
            parts.append(topic_bytes)
        if correlation_data is not None:
            parts.append(_pack_id_u16(_CORRELATION_DATA, len(correlation_data)))
            parts.append(correlation_data)
        if message_expiry is not None:
            parts.append(_pack_id_u32(_MESSAGE_EXPIRY, message_expiry))
        body = b"".join(parts)
        return _variable_byte_integer(len(body)) + body

    async def close(self, *, send_disconnect: bool = True) -> None:
        """Close the connection; with ``send_disconnect`` send DISCONNECT first, so no will is published."""
        was_open = self.is_open
        self._open = False
        self._handle_lost()
        if was_open and send_disconnect:
            try:
                await asyncio.wait_for(self._client.disconnect(), timeout=5)
            except (OSError, asyncio.TimeoutError, RuntimeError) as error:
                logger.debug("closing the connection failed: %s", error)
            return
        await self._abort()

    async def _abort(self) -> None:
        self._client._is_active = False
        connection = self._client._connection
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except (OSError, asyncio.TimeoutError, RuntimeError) as error:
                logger.debug("aborting the connection failed: %s", error)


def _gmqtt_will(will: Will | None, protocol_version: int) -> gmqtt.Message | None:
    if will is None:
        return None
    properties: dict[str, Any] = {}
    if protocol_version >= MQTT_V5 and will.user_properties:
        properties["user_property"] = list(will.user_properties)
    return gmqtt.Message(will.topic, will.payload, qos=will.qos, retain=will.retain, **properties)


def _unsupported_version_text(protocol_version: int) -> str:
    if protocol_version >= MQTT_V5:
        return f"the broker does not support MQTT v5; for MQTT 3.1.1, {_USE_COMPAT}"
    return "the broker does not support MQTT 3.1.1"


def _encode_user_property(key: str, value: str) -> bytes:
    key_bytes = key.encode("utf-8")
    value_bytes = value.encode("utf-8")
    return b"".join((_pack_id_u16(_USER_PROPERTY, len(key_bytes)), key_bytes, _pack_u16(len(value_bytes)), value_bytes))


def _encode_publish(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int | None, properties: bytes
) -> bytes:
    """Encode a whole PUBLISH packet; ``properties`` is empty for MQTT 3.1.1."""
    # gmqtt.Message encodes topics with errors="replace"; the same keeps behaviour unchanged.
    topic_bytes = topic.encode("utf-8", "replace")
    if len(payload) > _MAX_REMAINING_LENGTH:
        raise ValueError("Payload too large.")
    remaining = 2 + len(topic_bytes) + len(properties) + len(payload)
    parts = [
        bytes((_PUBLISH | (qos << 1) | (1 if retain else 0),)),
        b"",
        _pack_u16(len(topic_bytes)),
        topic_bytes,
    ]
    if mid is not None:
        remaining += 2
        parts.append(_pack_u16(mid))
    parts[1] = _variable_byte_integer(remaining)
    parts.append(properties)
    parts.append(payload)
    return b"".join(parts)


def _variable_byte_integer(value: int) -> bytes:
    if value < 128:
        return bytes((value,))
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        if value > 0:
            digit |= 0x80
        encoded.append(digit)
        if value == 0:
            return bytes(encoded)


def _read_variable_byte_integer(data: bytes, offset: int) -> tuple[int, int]:
    """Return the value at ``offset`` and the offset after it; raise ValueError when malformed."""
    value = 0
    for shift in (0, 7, 14, 21):
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise ValueError("malformed Variable Byte Integer")


def _read_string(data: bytes, offset: int, end: int) -> tuple[str, int]:
    (length,) = _unpack_u16(data, offset)
    start = offset + 2
    stop = start + length
    if stop > end:
        raise ValueError("string runs past the properties")
    return bytes(data[start:stop]).decode("utf-8"), stop


def _parse_publish(cmd: int, packet: bytes, v5: bool) -> tuple[int | None, Incoming] | None:
    """Parse a QoS 0 or 1 PUBLISH into its packet id and an Incoming.

    Returns None for what the fast path leaves to gmqtt: an empty topic, a topic that
    is not UTF-8, a Topic Alias or any property this parser does not know. Raises
    IndexError, ValueError or struct.error for a malformed packet.
    """
    qos = (cmd & 0x06) >> 1
    (topic_length,) = _unpack_u16(packet, 0)
    offset = 2 + topic_length
    if topic_length == 0 or offset > len(packet):
        return None
    try:
        topic = bytes(packet[2:offset]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    mid = None
    if qos > 0:
        (mid,) = _unpack_u16(packet, offset)
        offset += 2
    user_properties: list[tuple[str, str]] | None = None
    response_topic = None
    correlation_data = None
    subscription_ids: list[int] = []
    message_expiry = None
    if v5:
        length, offset = _read_variable_byte_integer(packet, offset)
        end = offset + length
        if end > len(packet):
            raise ValueError("properties run past the packet")
        while offset < end:
            identifier = packet[offset]
            offset += 1
            if identifier == _USER_PROPERTY:
                key, offset = _read_string(packet, offset, end)
                value, offset = _read_string(packet, offset, end)
                if user_properties is None:
                    user_properties = []
                user_properties.append((key, value))
            elif identifier == _SUBSCRIPTION_ID:
                identifier_value, offset = _read_variable_byte_integer(packet, offset)
                subscription_ids.append(identifier_value)
            elif identifier == _RESPONSE_TOPIC:
                text, offset = _read_string(packet, offset, end)
                response_topic = text if response_topic is None else response_topic
            elif identifier == _CORRELATION_DATA:
                (length,) = _unpack_u16(packet, offset)
                data = bytes(packet[offset + 2 : offset + 2 + length])
                offset += 2 + length
                correlation_data = data if correlation_data is None else correlation_data
            elif identifier == _MESSAGE_EXPIRY:
                (seconds,) = _unpack_u32(packet, offset)
                offset += 4
                message_expiry = seconds if message_expiry is None else message_expiry
            elif identifier == _PAYLOAD_FORMAT:
                offset += 1
            elif identifier == _CONTENT_TYPE:
                _, offset = _read_string(packet, offset, end)
            else:
                return None
        if offset != end:
            raise ValueError("a property runs past the properties")
    incoming = Incoming(
        topic=topic,
        payload=bytes(packet[offset:]),
        qos=qos,
        retain=bool(cmd & 0x01),
        user_properties=user_properties,
        response_topic=response_topic,
        correlation_data=correlation_data,
        subscription_ids=tuple(subscription_ids),
        message_expiry=message_expiry,
    )
    return mid, incoming
