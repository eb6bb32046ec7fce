"""The MnemoQ client: connection life, subscriptions, the store and delivery."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType

from . import _adapter
from ._adapter import BrokerLimits, Connection, ConnectionLost, Incoming
from ._envelope import Kind, decode_v5, encode_v5, validate_user_properties
from ._errors import (
    ConnectError,
    EnvelopeError,
    InvalidArgumentError,
    NotConnectedError,
    PacketTooLargeError,
    SubscribeError,
)
from ._message import Message
from ._packet import publish_packet_size
from ._ratelimit import RateLimitedWarning
from ._stamp import HybridClock, Stamp
from ._store import Entry, MemoryStore, Store, StoreView
from ._topics import is_shared_filter, topic_matches, validate_topic_filter, validate_topic_name

__all__ = ["MnemoQ", "ConnectionState", "Stats"]

logger = logging.getLogger(__name__)

# Subscription Identifier is a Variable Byte Integer from 1 to 268,435,455 (MQTT v5 3.8.2.1.2).
_MAX_SUBSCRIPTION_ID = 268_435_455


class ConnectionState(enum.Enum):
    """Where the client is in its connection life."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class Stats:
    """Counters of what the client dropped or did, for monitoring."""

    malformed_dropped: int = 0
    own_dropped: int = 0
    duplicates_dropped: int = 0
    stale_dropped: int = 0
    reconnects: int = 0


@dataclass
class _Subscription:
    topic_filter: str
    qos: int
    identifier: int


class _Closed:
    """Sentinel that ends ``messages()`` iterators."""


_CLOSED = _Closed()


def generate_client_id() -> str:
    """Return a random client id of 23 characters from [0-9a-z].

    A server must accept client ids of 1 to 23 such characters [MQTT-3.1.3-5].
    """
    return "mq5" + uuid.uuid4().hex[:20]


class MnemoQ:
    """An MQTT v5 client that remembers the last value it published on each topic.

    Use it as an async context manager, or call :meth:`connect` and
    :meth:`disconnect`. All settings are keyword-only:

    - ``host``, ``port``: the broker, default ``127.0.0.1:1883``.
    - ``client_id``: the MQTT client id and the peer's identity; None generates one.
    - ``keepalive``: MQTT keep alive in seconds, default 60.
    - ``tls``: an ``ssl.SSLContext`` to connect with TLS, default None (plain TCP).
    - ``username``, ``password``: credentials sent in CONNECT, default None.
    - ``reconnect_min_delay``, ``reconnect_max_delay``: the reconnect backoff in
      seconds, doubling from the minimum up to the maximum with full jitter,
      default 0.5 and 30.
    - ``session_expiry``: the Session Expiry Interval in seconds, default 0. The
      client starts every connection with Clean Start and resubscribes itself.
    - ``connect_timeout``: seconds to wait for CONNACK, default 10.
    - ``store``: the last-value store, default a new :class:`MemoryStore`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        client_id: str | None = None,
        *,
        keepalive: int = 60,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        session_expiry: int = 0,
        connect_timeout: float = 10.0,
        store: Store | None = None,
    ) -> None:
        if client_id is None:
            client_id = generate_client_id()
        _check_client_id(client_id)
        if not 0 < reconnect_min_delay <= reconnect_max_delay:
            raise InvalidArgumentError(
                f"reconnect delays {reconnect_min_delay!r}..{reconnect_max_delay!r} are invalid: "
                "need 0 < reconnect_min_delay <= reconnect_max_delay"
            )
        if not 0 <= keepalive <= 65_535:
            raise InvalidArgumentError(f"keepalive {keepalive!r} must be 0..65535 seconds")
        if not 0 <= session_expiry <= 0xFFFFFFFF:
            raise InvalidArgumentError(f"session_expiry {session_expiry!r} must be 0..4294967295 seconds")

        self._host = host
        self._port = port
        self._client_id = client_id
        self._keepalive = keepalive
        self._tls = tls
        self._username = username
        self._password = password
        self._reconnect_min_delay = reconnect_min_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._session_expiry = session_expiry
        self._connect_timeout = connect_timeout

        self._store = store if store is not None else MemoryStore()
        self._clock = HybridClock(client_id)
        newest = self._store.newest_stamp()
        if newest is not None:
            self._clock.observe(newest)

        self._state = ConnectionState.NEW
        self._connection: Connection | None = None
        self._limits: BrokerLimits | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._next_subscription_id = 1
        self._queue: asyncio.Queue[Message | _Closed] = asyncio.Queue()
        self._newest_delivered: dict[str, Stamp] = {}
        self._unsent_topics: set[str] = set()
        self._malformed_log = RateLimitedWarning(logger)
        self.stats = Stats()

    # -- properties -------------------------------------------------------

    @property
    def client_id(self) -> str:
        """The MQTT client id, which is this peer's identity."""
        return self._client_id

    @property
    def store(self) -> StoreView:
        """Read-only view of the last-value store: topic to :class:`Entry`."""
        return StoreView(self._store)

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def broker_limits(self) -> BrokerLimits | None:
        """What the broker imposed in its last CONNACK, or None before the first connection."""
        return self._limits

    def __repr__(self) -> str:
        return f"<MnemoQ {self._client_id} {self._host}:{self._port} {self._state.value}>"

    # -- connection life --------------------------------------------------

    async def __aenter__(self) -> MnemoQ:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Connect to the broker; raise ConnectError naming host and port if that fails.

        Later connection losses are repaired in the background with backoff and
        jitter, until :meth:`disconnect`.
        """
        if self._state is not ConnectionState.NEW:
            raise NotConnectedError(f"connect() can be called once, and the client is {self._state.value}")
        self._state = ConnectionState.CONNECTING
        try:
            await self._open_connection()
        except BaseException:
            self._state = ConnectionState.NEW
            raise
        self._state = ConnectionState.CONNECTED
        self._supervisor = asyncio.create_task(self._supervise(), name=f"mnemoq5-reconnect-{self._client_id}")

    async def disconnect(self) -> None:
        """Close the connection for good: stop reconnecting and end ``messages()``."""
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._queue.put_nowait(_CLOSED)
        logger.info("client %s disconnected from %s:%s", self._client_id, self._host, self._port)

    async def _open_connection(self) -> None:
        self._lost.clear()
        connection = Connection(
            self._client_id,
            on_message=self._dispatch,
            on_lost=self._lost.set,
            protocol_version=_adapter.MQTT_V5,
            username=self._username,
            password=self._password,
            session_expiry=self._session_expiry,
        )
        self._limits = await connection.open(
            self._host, self._port, tls=self._tls, keepalive=self._keepalive, timeout=self._connect_timeout
        )
        self._connection = connection
        logger.info(
            "client %s connected to %s:%s (maximum packet size %s, receive maximum %s)",
            self._client_id,
            self._host,
            self._port,
            self._limits.maximum_packet_size or "unlimited",
            self._limits.receive_maximum,
        )
        try:
            await self._resubscribe()
            await self._send_unsent()
        except ConnectionLost:
            self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            if self._connection is not None:
                await self._connection.close(send_disconnect=False)
                self._connection = None
            self._state = ConnectionState.RECONNECTING
            logger.info("client %s lost its connection to %s:%s", self._client_id, self._host, self._port)
            await self._reconnect()
            self._state = ConnectionState.CONNECTED
            self.stats.reconnects += 1

    async def _reconnect(self) -> None:
        attempt = 0
        while True:
            ceiling = min(self._reconnect_max_delay, self._reconnect_min_delay * 2**attempt)
            delay = random.uniform(self._reconnect_min_delay / 2, ceiling)
            attempt += 1
            await asyncio.sleep(delay)
            logger.info("client %s reconnect attempt %d to %s:%s", self._client_id, attempt, self._host, self._port)
            try:
                await self._open_connection()
                return
            except ConnectError as error:
                logger.info("reconnect attempt %d failed: %s", attempt, error)

    def _require_connection(self, what: str) -> Connection | None:
        if self._state in (ConnectionState.NEW, ConnectionState.CONNECTING, ConnectionState.CLOSED):
            raise NotConnectedError(f"cannot {what}: the client is {self._state.value}; call connect() first")
        connection = self._connection
        if connection is None or not connection.is_open:
            return None
        return connection

    # -- subscriptions ----------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        """Subscribe to ``topic_filter`` with NoLocal set; wait for SUBACK.

        Raises InvalidTopicError for an invalid filter and SubscribeError when the broker
        refuses. While the client reconnects, the subscription is recorded and sent
        with the next connection.
        """
        topic_filter = validate_topic_filter(topic_filter)
        _check_qos(qos)
        if is_shared_filter(topic_filter):
            raise InvalidArgumentError(
                f"shared subscription {topic_filter!r} is not supported: every mnemoq5 subscription sets "
                "No Local, and No Local on a shared subscription is a protocol error [MQTT-3.8.3-4]"
            )
        connection = self._require_connection("subscribe")

        subscription = self._subscriptions.get(topic_filter)
        if subscription is None:
            subscription = _Subscription(topic_filter, qos, self._allocate_subscription_id())
            self._subscriptions[topic_filter] = subscription
        subscription.qos = qos
        if connection is not None:
            await self._send_subscribe(connection, subscription)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Remove the subscription to ``topic_filter``; messages for it stop arriving."""
        topic_filter = validate_topic_filter(topic_filter)
        connection = self._require_connection("unsubscribe")
        if self._subscriptions.pop(topic_filter, None) is None:
            return
        if connection is not None:
            try:
                await connection.unsubscribe(topic_filter)
            except ConnectionLost:
                pass

    def _allocate_subscription_id(self) -> int:
        identifier = self._next_subscription_id
        self._next_subscription_id = identifier % _MAX_SUBSCRIPTION_ID + 1
        return identifier

    async def _send_subscribe(self, connection: Connection, subscription: _Subscription) -> None:
        use_ids = self._limits is not None and self._limits.subscription_identifiers
        try:
            reason_code = await connection.subscribe(
                subscription.topic_filter,
                qos=subscription.qos,
                no_local=True,
                subscription_id=subscription.identifier if use_ids else None,
            )
        except ConnectionLost:
            return
        if reason_code >= 0x80:
            self._subscriptions.pop(subscription.topic_filter, None)
            raise SubscribeError(subscription.topic_filter, reason_code)

    async def _resubscribe(self) -> None:
        connection = self._connection
        if connection is None:
            return
        subscriptions = list(self._subscriptions.values())
        results = await asyncio.gather(
            *(self._send_subscribe(connection, subscription) for subscription in subscriptions),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, SubscribeError):
                logger.error("resubscribing after reconnect failed: %s", result)
            elif isinstance(result, BaseException):
                raise result

    # -- publishing -------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | str,
        qos: int = 0,
        retain: bool = False,
        *,
        user_properties: Iterable[tuple[str, str]] | None = None,
    ) -> Entry:
        """Store ``payload`` as the newest value of ``topic``, then publish it.

        ``str`` payloads are encoded as UTF-8. The entry is in the store before anything
        is sent. While the client is disconnected, the value is stored and the newest
        value of each such topic is published after the next reconnect. At QoS 1 and 2
        this returns once the packet is handed to the network, without waiting for the
        acknowledgement. Returns the stored entry with its stamp.
        """
        topic = validate_topic_name(topic)
        _check_qos(qos)
        data = _payload_bytes(payload)
        properties = validate_user_properties(user_properties)
        connection = self._require_connection("publish")

        stamp = self._clock.next_stamp()
        wire_properties = encode_v5(self._client_id, Kind.DATA, stamp, properties)
        self._check_packet_size(topic, data, qos, wire_properties)

        entry = Entry(topic, data, qos, bool(retain), properties, stamp)
        self._store.put(entry)
        if connection is None:
            self._unsent_topics.add(topic)
            return entry
        try:
            await connection.publish(topic, data, qos=qos, retain=bool(retain), user_properties=wire_properties)
        except ConnectionLost:
            self._unsent_topics.add(topic)
        return entry

    def _check_packet_size(
        self, topic: str, payload: bytes, qos: int, user_properties: list[tuple[str, str]]
    ) -> None:
        maximum = self._limits.maximum_packet_size if self._limits else None
        if maximum is None:
            return
        size = publish_packet_size(topic, len(payload), qos, user_properties)
        if size > maximum:
            # [MQTT-3.1.2-24]: the client must not send a packet larger than the
            # Maximum Packet Size the server gave in CONNACK.
            raise PacketTooLargeError(
                f"a PUBLISH to {topic!r} would be {size} bytes, more than the broker's "
                f"Maximum Packet Size of {maximum} bytes [MQTT-3.1.2-24]; the stored value was kept"
            )

    async def _send_unsent(self) -> None:
        connection = self._connection
        while self._unsent_topics and connection is not None:
            topic = self._unsent_topics.pop()
            entry = self._store.get(topic)
            if entry is None:
                continue
            wire_properties = encode_v5(self._client_id, Kind.DATA, entry.stamp, entry.user_properties)
            try:
                await connection.publish(
                    topic, entry.payload, qos=entry.qos, retain=entry.retain, user_properties=wire_properties
                )
            except ConnectionLost:
                self._unsent_topics.add(topic)
                raise

    # -- receiving --------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Yield received messages until :meth:`disconnect`.

        All iterators share one queue, so each message goes to one of them.
        """
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)
                return
            yield item

    def _dispatch(self, incoming: Incoming) -> None:
        try:
            envelope = decode_v5(incoming.user_properties)
        except EnvelopeError as error:
            self._drop_malformed(incoming.topic, error)
            return
        if envelope.sender == self._client_id:
            # Mosquitto delivers a client's own retained message when it subscribes,
            # although No Local is set, so identity is checked as well.
            self.stats.own_dropped += 1
            return
        if envelope.kind not in (None, Kind.DATA):
            self._drop_malformed(incoming.topic, EnvelopeError(f"kind {envelope.kind.value!r} on a data topic"))
            return
        if not self._is_first_copy(incoming):
            self.stats.duplicates_dropped += 1
            return
        if envelope.stamp is not None and not self._accept_stamp(incoming.topic, envelope.stamp):
            return
        message = Message(
            topic=incoming.topic,
            payload=incoming.payload,
            qos=incoming.qos,
            retain=incoming.retain,
            sender=envelope.sender,
            user_properties=list(envelope.user_properties),
            replayed=False,
            stamp=envelope.stamp,
        )
        logger.debug("received %s from %s", incoming.topic, envelope.sender)
        self._queue.put_nowait(message)

    def _drop_malformed(self, topic: str, error: Exception) -> None:
        self.stats.malformed_dropped += 1
        self._malformed_log.warning("dropped a malformed message on %r: %s", topic, error)

    def _is_first_copy(self, incoming: Incoming) -> bool:
        """Return whether this copy is the one to deliver among overlapping subscriptions.

        The broker may send one copy per matching subscription. The copy that carries
        the lowest subscription identifier among this client's matching subscriptions
        is delivered, the others are dropped.
        """
        if not incoming.subscription_ids:
            return True
        matching = [
            subscription.identifier
            for subscription in self._subscriptions.values()
            if topic_matches(subscription.topic_filter, incoming.topic)
        ]
        if not matching:
            return True
        return min(matching) in incoming.subscription_ids

    def _accept_stamp(self, topic: str, stamp: Stamp) -> bool:
        """Record ``stamp`` as delivered for ``topic`` unless a version as new is known."""
        self._clock.observe(stamp)
        newest = self._newest_delivered.get(topic)
        own = self._store.get(topic)
        if own is not None and (newest is None or own.stamp > newest):
            newest = own.stamp
        if newest is not None and not stamp > newest:
            if stamp == newest:
                self.stats.duplicates_dropped += 1
            else:
                self.stats.stale_dropped += 1
            return False
        self._newest_delivered[topic] = stamp
        return True


def _check_client_id(client_id: object) -> None:
    if not isinstance(client_id, str) or client_id == "":
        raise InvalidArgumentError(f"client_id {client_id!r} must be a non-empty str")
    if "\x00" in client_id or "/" in client_id or "+" in client_id or "#" in client_id:
        raise InvalidArgumentError(
            f"client_id {client_id!r} must not contain U+0000, '/', '+' or '#', "
            "because it becomes a level of control topics"
        )
    try:
        size = len(client_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"client_id {client_id!r} must not contain surrogate code points") from None
    if size > 65_535:
        raise InvalidArgumentError(f"client_id is {size} UTF-8 bytes, more than the maximum of 65535")


def _check_qos(qos: object) -> None:
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise InvalidArgumentError(f"qos {qos!r} is invalid: it must be 0, 1 or 2")


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise InvalidArgumentError(f"payload must be bytes or str, not {type(payload).__name__}")
