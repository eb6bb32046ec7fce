"""The MnemoQ client: connection life, subscriptions, the store and delivery."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import _adapter
from ._adapter import BrokerLimits, Connection, ConnectionLost, Incoming, Will
from ._catchup import CatchUpEngine, PendingReload
from ._control import ControlTopics, encode_presence
from ._envelope import KEY_ID, KEY_KIND, Envelope, Kind, encode_v5, validate_user_properties
from ._errors import (
    ConnectError,
    EnvelopeError,
    InvalidArgumentError,
    InvalidTopicError,
    MnemoqError,
    NotConnectedError,
    PacketTooLargeError,
    StoreError,
    SubscribeError,
)
from ._expiry import ExpiryIndex
from ._message import Message
from ._packet import publish_packet_size
from ._ratelimit import RateLimitedWarning
from ._snapshot import Snapshot
from ._stamp import HybridClock, Stamp, wall_clock_millis
from ._store import Entry, MemoryStore, Store, StoreView
from ._topics import (
    filter_base,
    filter_matcher,
    is_shared_filter,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)
from ._wire import Outgoing, unwrap, wrap

__all__ = ["MnemoQ", "ConnectionState", "Stats"]

logger = logging.getLogger(__name__)

# The largest whole MQTT packet: a 1-byte header and a Remaining Length of at most
# 268,435,455 in 4 bytes (MQTT v5 section 2.1.4).
_MAX_MQTT_PACKET = 1 + 4 + 268_435_455
# Payloads below this size cannot reach the protocol limit, so only a broker's
# Maximum Packet Size needs the size computed.
_SMALL_PAYLOAD = 65_536
# How many times a background catch-up sends its request to peers whose reply was incomplete.
_BACKGROUND_RELOAD_ATTEMPTS = 3
# Subscription Identifier is a Variable Byte Integer from 1 to 268,435,455 (MQTT v5 3.8.2.1.2).
_MAX_SUBSCRIPTION_ID = 268_435_455

# Topics whose lowest matching subscription identifier is cached; the cache is
# emptied when it reaches this size and whenever the subscriptions change.
_MATCH_CACHE_SIZE = 4096
_UNKNOWN = object()


class ConnectionState(enum.Enum):
    """The state of the client's connection to the broker."""

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
    requests_rate_limited: int = 0


@dataclass
class _Subscription:
    topic_filter: str
    qos: int
    identifier: int
    catch_up: bool = False
    no_local: bool = True


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
    - ``control_prefix``: the first level(s) of the control topics that carry catch-up
      requests, replies and presence, default ``"mnemoq5"``. Peers see each other only
      when they use the same prefix.
    - ``maximum_packet_size``: the largest packet this client accepts, sent in CONNECT;
      default None (no limit beyond the protocol's). Catch-up replies respect it.
    - ``reply_jitter``: the upper bound in seconds of the random delay before this
      client replies to a catch-up request, default 0.05, so many peers do not reply
      at the same instant. A request that names this client as its only peer gets its
      reply at once.
    - ``remember``: ``"published"`` (the default) keeps what this client publishes;
      ``"received"`` also keeps the newest value of everything it receives under its
      subscriptions and replies to catch-up requests for it, so values outlive their publisher.
    - ``tombstone_retention``: seconds a deletion is remembered before it is pruned,
      default 86400 (one day).
    - ``compat``: speak MQTT 3.1.1 and carry the envelope in a payload prefix, for
      brokers without MQTT v5; default False. Without it, a broker that rejects MQTT
      v5 makes :meth:`connect` raise ProtocolVersionError.
    - ``max_clock_skew``: seconds a received stamp may lie ahead of this machine's
      clock, default 300. A value stamped further ahead is dropped as malformed, so
      one peer with a wrong clock (or a forged stamp) cannot pin a topic or push this
      client's own clock to the end of its range. None turns the check off.
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
        control_prefix: str = "mnemoq5",
        maximum_packet_size: int | None = None,
        reply_jitter: float = 0.05,
        compat: bool = False,
        remember: str = "published",
        tombstone_retention: float = 86_400.0,
        max_clock_skew: float | None = 300.0,
    ) -> None:
        _check_control_prefix(control_prefix)
        if client_id is None:
            client_id = generate_client_id()
        _check_client_id(client_id, control_prefix)
        if store is not None and not isinstance(store, Store):
            raise InvalidArgumentError(
                f"store {store!r} must be a mnemoq5.Store such as MemoryStore() or SqliteStore(path), "
                f"not {type(store).__name__}"
            )
        if not isinstance(compat, bool):
            raise InvalidArgumentError(f"compat {compat!r} must be True or False")
        _check_seconds(connect_timeout, "connect_timeout")
        _check_seconds(reply_jitter, "reply_jitter", allow_zero=True)
        if max_clock_skew is not None:
            _check_seconds(max_clock_skew, "max_clock_skew")
        if not 0 < reconnect_min_delay <= reconnect_max_delay:
            raise InvalidArgumentError(
                f"reconnect delays {reconnect_min_delay!r}..{reconnect_max_delay!r} are invalid: "
                "need 0 < reconnect_min_delay <= reconnect_max_delay"
            )
        if not isinstance(keepalive, int) or not 0 <= keepalive <= 65_535:
            raise InvalidArgumentError(f"keepalive {keepalive!r} must be 0..65535 seconds")
        if not 0 <= session_expiry <= 0xFFFFFFFF:
            raise InvalidArgumentError(f"session_expiry {session_expiry!r} must be 0..4294967295 seconds")
        if remember not in ("published", "received"):
            raise InvalidArgumentError(f"remember {remember!r} is invalid: use 'published' or 'received'")
        _check_seconds(tombstone_retention, "tombstone_retention")
        if maximum_packet_size is not None and not 1024 <= maximum_packet_size <= 268_435_460:
            raise InvalidArgumentError(
                f"maximum_packet_size {maximum_packet_size!r} must be 1024..268435460 bytes or None"
            )

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
        self._maximum_packet_size = maximum_packet_size
        self._compat = compat
        self._max_clock_skew_ms = None if max_clock_skew is None else max_clock_skew * 1000
        self._remember_received = remember == "received"
        self._tombstone_retention = tombstone_retention
        self._compat_peers: set[str] = set()
        self._topics = ControlTopics(control_prefix)
        self._started_millis = wall_clock_millis()

        self._store = store if store is not None else MemoryStore()
        self._clock = HybridClock(client_id)
        self._seed_clock()

        self._state = ConnectionState.NEW
        self._connection: Connection | None = None
        self._limits: BrokerLimits | None = None
        self._lost = asyncio.Event()
        self._connected_at = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._next_subscription_id = 1
        self._queue: asyncio.Queue[Message | _Closed] = asyncio.Queue()
        self._known: dict[str, Message] = {}
        self._held_replays: dict[str, Message] = {}
        self._received_at: dict[str, float] = {}
        self._unsent_topics: set[str] = set()
        self._malformed_log = RateLimitedWarning(logger)
        self._sync_waiter: tuple[bytes, asyncio.Future[None]] | None = None
        self._control_subscriptions: list[_Subscription] = []
        self._lowest_matching_id: dict[str, object] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._catch_up = CatchUpEngine(self, self._topics, self._store, reply_jitter=reply_jitter)
        self._expiry = ExpiryIndex()
        for topic in list(self._store.topics()):
            stored = self._store.get(topic)
            if stored is not None:
                self._expiry.track(stored)
        self._stats = Stats()

    def _seed_clock(self) -> None:
        """Start the clock after the newest stamp in the store, unless that stamp is implausible.

        A stamp further ahead of the wall clock than ``max_clock_skew`` (kept by an
        older version, or received with the check off) would pin this writer's clock.
        """
        newest = self._store.newest_stamp()
        if newest is None:
            return
        limit = self._max_clock_skew_ms
        if limit is not None and newest.millis > wall_clock_millis() + limit:
            logger.warning(
                "the store contains stamp %s from %r, more than %g s ahead of this machine's clock; "
                "the clock starts from the wall clock instead",
                newest.to_text(),
                newest.writer,
                limit / 1000,
            )
            return
        self._clock.observe(newest)

    def _next_stamp(self) -> Stamp:
        try:
            return self._clock.next_stamp()
        except OverflowError as error:
            raise MnemoqError(
                f"cannot stamp a new value: {error}; the store or a peer carried a stamp at the end of the "
                "range, which only happens with max_clock_skew=None"
            ) from None

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
        """The connection state: new, connecting, connected, reconnecting or closed."""
        return self._state

    @property
    def stats(self) -> Stats:
        """Counters of dropped input, reconnects and rate-limited requests."""
        self._stats.requests_rate_limited = self._catch_up.requests_rate_limited
        return self._stats

    def peers(self) -> dict[str, int]:
        """Return the live peers seen through presence: client id to start time in Unix milliseconds."""
        return dict(self._catch_up.peers)

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
        self._spawn(self._sweep(), name="sweep")

    async def disconnect(self) -> None:
        """Close the connection for good: stop reconnecting and end ``messages()``."""
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._catch_up.close()
        if self._connection is not None:
            try:
                # Clear the retained presence: a clean DISCONNECT does not publish the will.
                await asyncio.wait_for(self._announce(b"", qos=0), timeout=1)
            except (ConnectionLost, asyncio.TimeoutError):
                pass
            await self._connection.close()
            self._connection = None
        self._queue.put_nowait(_CLOSED)
        logger.info("client %s disconnected from %s:%s", self._client_id, self._host, self._port)

    async def _open_connection(self) -> None:
        self._lost.clear()
        connection = Connection(
            self._client_id,
            on_message=self._dispatch,
            on_lost=self._connection_lost,
            protocol_version=_adapter.MQTT_V311 if self._compat else _adapter.MQTT_V5,
            will=Will(
                self._topics.presence(self._client_id),
                b"",
                qos=1,
                retain=True,
                user_properties=encode_v5(self._client_id, Kind.PRESENCE, None),
            ),
            username=self._username,
            password=self._password,
            session_expiry=self._session_expiry,
            maximum_packet_size=self._maximum_packet_size,
            constant_property_keys=frozenset((KEY_ID, KEY_KIND)),
        )
        self._limits = await connection.open(
            self._host, self._port, tls=self._tls, keepalive=self._keepalive, timeout=self._connect_timeout
        )
        self._connection = connection
        self._connected_at = time.monotonic()
        logger.info(
            "client %s connected to %s:%s (maximum packet size %s, receive maximum %s)",
            self._client_id,
            self._host,
            self._port,
            self._limits.maximum_packet_size or "unlimited",
            self._limits.receive_maximum,
        )
        self._catch_up.reset_presence()
        try:
            await self._subscribe_control()
            await self._resubscribe()
            await self._sync()
            await self._announce(encode_presence(self._started_millis), qos=1)
            await self._send_unsent()
        except ConnectionLost:
            self._lost.set()

    async def _subscribe_control(self) -> None:
        """Subscribe to requests, presence and this client's reply topic."""
        if not self._control_subscriptions:
            self._lowest_matching_id.clear()
            self._control_subscriptions = [
                _Subscription(self._topics.request, 1, self._allocate_subscription_id()),
                _Subscription(self._topics.presence_filter, 1, self._allocate_subscription_id()),
                # No Local stays off on the private reply topic, so the sync probe comes back.
                _Subscription(
                    self._topics.reply(self._client_id), 1, self._allocate_subscription_id(), no_local=False
                ),
            ]
        connection = self._connection
        assert connection is not None
        await asyncio.gather(*(self._send_subscribe(connection, sub) for sub in self._control_subscriptions))

    async def _sync(self) -> None:
        """Wait until the broker has sent every retained presence message.

        A probe published to this client's own reply topic comes back after the
        messages queued before it, so once it arrives the peer table is complete.
        NOTE: this relies on the broker delivering in order across topics, which
        Mosquitto does; MQTT only requires it per topic [MQTT-4.6.0-6].
        """
        token = os.urandom(8)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiter = (token, future)
        try:
            await self.control_send(self._topics.reply(self._client_id), b"", Kind.SYNC, qos=1, correlation_data=token)
            await asyncio.wait_for(future, self._connect_timeout)
        except asyncio.TimeoutError:
            logger.warning("the broker did not return the presence sync probe within %s s", self._connect_timeout)
        finally:
            self._sync_waiter = None

    async def _announce(self, payload: bytes, *, qos: int) -> None:
        topic = self._topics.presence(self._client_id)
        if payload:
            await self.control_send(topic, payload, Kind.PRESENCE, qos=qos, retain=True)
            return
        # An empty retained payload deletes the retained presence at the broker
        # [MQTT-3.3.1-6], so the clearing message is never wrapped in compat mode.
        connection = self._connection
        if connection is None or not connection.is_open:
            raise ConnectionLost()
        properties = [] if self._compat else encode_v5(self._client_id, Kind.PRESENCE, None)
        await connection.publish(topic, b"", qos=qos, retain=True, user_properties=properties)

    def _connection_lost(self) -> None:
        self._lost.set()
        self._catch_up.connection_lost()

    async def _supervise(self) -> None:
        # Connections that drop soon after they open (another client with the same id
        # taking the session over, a broker that disconnects at once) keep the backoff
        # growing instead of starting from the minimum delay each time.
        short_lived = 0
        while True:
            await self._lost.wait()
            reason = ""
            if self._connection is not None:
                reason = self._connection.disconnect_reason_text()
                await self._connection.close(send_disconnect=False)
                self._connection = None
            self._state = ConnectionState.RECONNECTING
            lived = time.monotonic() - self._connected_at
            short_lived = short_lived + 1 if lived < 10 else 0
            logger.log(
                logging.WARNING if reason else logging.INFO,
                "client %s lost its connection to %s:%s after %.1f s%s",
                self._client_id,
                self._host,
                self._port,
                lived,
                f": {reason}" if reason else "",
            )
            await self._reconnect(first_attempt=short_lived)
            self._state = ConnectionState.CONNECTED
            self._stats.reconnects += 1
            for subscription in self._subscriptions.values():
                if subscription.catch_up:
                    self._spawn(self._background_reload(subscription.topic_filter, None))

    async def _reconnect(self, first_attempt: int = 0) -> None:
        attempt = min(first_attempt, 30)
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

    async def subscribe(self, topic_filter: str, qos: int = 0, *, catch_up: bool = False, timeout: float = 2.0) -> None:
        """Subscribe to ``topic_filter`` with No Local set; wait for SUBACK.

        With ``catch_up`` the client then reloads the filter from its live peers, waiting
        at most ``timeout`` seconds, and the replayed values arrive through
        :meth:`messages` with ``replayed`` True. It reloads the filter again after each
        reconnect and sends the request to each peer that joins later.

        Raises InvalidTopicError for an invalid filter and SubscribeError when the broker
        refuses. While the client reconnects, the subscription is recorded and sent
        with the next connection.
        """
        topic_filter = validate_topic_filter(topic_filter)
        _check_qos(qos)
        _check_seconds(timeout, "timeout")
        self._reject_control_topic(topic_filter)
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
            self._lowest_matching_id.clear()
        subscription.qos = qos
        subscription.catch_up = subscription.catch_up or catch_up
        if connection is not None:
            await self._send_subscribe(connection, subscription)
        if catch_up and connection is not None:
            await self._reload(topic_filter, timeout=timeout, deliver=True)

    def _reject_control_topic(self, topic: str) -> None:
        if self._topics.contains(topic):
            raise InvalidTopicError(
                topic, f"topics under the control prefix {self._topics.prefix!r} are reserved for mnemoq5"
            )

    async def unsubscribe(self, topic_filter: str) -> None:
        """Remove the subscription to ``topic_filter``; messages for it stop arriving."""
        topic_filter = validate_topic_filter(topic_filter)
        connection = self._require_connection("unsubscribe")
        if self._subscriptions.pop(topic_filter, None) is None:
            return
        self._lowest_matching_id.clear()
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
                # No Local is a reserved bit in MQTT 3.1.1, where a SUBSCRIBE with a
                # nonzero reserved bit is malformed and the server closes the connection.
                no_local=subscription.no_local and not self._compat,
                subscription_id=subscription.identifier if use_ids else None,
            )
        except ConnectionLost:
            return
        if reason_code >= 0x80:
            self._subscriptions.pop(subscription.topic_filter, None)
            self._lowest_matching_id.clear()
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
        expiry: int | None = None,
    ) -> Entry:
        """Store ``payload`` as the newest value of ``topic``, then publish it.

        ``str`` payloads are encoded as UTF-8. The entry is in the store before anything
        is sent. While the client is disconnected, the value is stored and the newest
        value of each such topic is published after the next reconnect. At QoS 1 and 2
        this returns once the packet is handed to the network, without waiting for the
        acknowledgement. Returns the stored entry with its stamp.

        ``expiry`` sets the lifetime in seconds: it travels as the v5 Message Expiry
        Interval (or in the compat header), and every store that contains the value drops
        it when the lifetime ends, so it is never replayed after that.
        """
        topic = validate_topic_name(topic)
        _check_qos(qos)
        self._reject_control_topic(topic)
        data = _payload_bytes(payload)
        properties = validate_user_properties(user_properties)
        _check_expiry(expiry)
        connection = self._require_connection("publish")

        stamp = self._next_stamp()
        expires_at = None if expiry is None else time.time() + expiry
        entry = Entry(topic, data, qos, bool(retain), properties, stamp, expires_at=expires_at)
        return await self._store_and_send(entry, connection)

    async def delete(self, topic: str, qos: int = 1, *, retain: bool | None = None) -> Entry:
        """Delete ``topic`` everywhere: store a stamped tombstone and publish the deletion.

        Live subscribers receive a Message with ``deleted`` True and an empty payload.
        Peers that catch up later learn the deletion from the tombstone, and an older
        value held elsewhere cannot bring the topic back while the tombstone is kept
        (``tombstone_retention``). The deletion is published retained when ``retain`` is
        True, or when ``retain`` is None and this client's previous value was retained.
        In MQTT v5 a retained deletion has an empty payload, so it also clears the
        broker's retained message. In compat mode the payload carries the prefix, so
        the broker keeps the deletion as the retained message instead.
        """
        topic = validate_topic_name(topic)
        _check_qos(qos)
        self._reject_control_topic(topic)
        connection = self._require_connection("delete")
        if retain is None:
            previous = self._store.get(topic)
            retain = previous is not None and previous.retain and not previous.deleted
        tombstone = Entry(topic, b"", qos, retain, (), self._next_stamp(), deleted=True)
        return await self._store_and_send(tombstone, connection)

    async def _store_and_send(self, entry: Entry, connection: Connection | None) -> Entry:
        topic = entry.topic
        outgoing = self._wrap_entry(entry)
        self._check_packet_size(topic, entry.qos, outgoing)
        self._store.put(entry)
        self._expiry.track(entry)
        qos, retain = entry.qos, entry.retain
        if connection is None:
            self._unsent_topics.add(topic)
            return entry
        try:
            await self._send(connection, topic, outgoing, qos=qos, retain=retain)
        except ConnectionLost:
            self._unsent_topics.add(topic)
        return entry

    def _wrap_entry(self, entry: Entry) -> Outgoing:
        return wrap(
            self._client_id,
            Kind.DELETE if entry.deleted else Kind.DATA,
            entry.stamp,
            entry.payload,
            compat=self._compat,
            user_properties=entry.user_properties,
            message_expiry=_remaining_lifetime(entry.expires_at),
        )

    async def _send(self, connection: Connection, topic: str, outgoing: Outgoing, *, qos: int, retain: bool) -> None:
        await connection.publish(
            topic,
            outgoing.payload,
            qos=qos,
            retain=retain,
            user_properties=outgoing.user_properties,
            response_topic=outgoing.response_topic,
            correlation_data=outgoing.correlation_data,
            message_expiry=outgoing.message_expiry,
        )

    def _check_packet_size(self, topic: str, qos: int, outgoing: Outgoing) -> None:
        maximum = self._limits.maximum_packet_size if self._limits else None
        if maximum is None and len(outgoing.payload) < _SMALL_PAYLOAD:
            return
        size = publish_packet_size(
            topic,
            len(outgoing.payload),
            qos,
            outgoing.user_properties,
            message_expiry=outgoing.message_expiry,
            protocol_v5=not self._compat,
        )
        if size > _MAX_MQTT_PACKET:
            raise PacketTooLargeError(
                f"a PUBLISH to {topic!r} would be {size} bytes, more than the {_MAX_MQTT_PACKET} bytes "
                "an MQTT packet can carry (MQTT v5 section 2.1.4); the stored value was kept"
            )
        if maximum is not None and size > maximum:
            # [MQTT-3.2.2-15]: the client must not send a packet larger than the
            # Maximum Packet Size the server gave in CONNACK.
            raise PacketTooLargeError(
                f"a PUBLISH to {topic!r} would be {size} bytes, more than the broker's "
                f"Maximum Packet Size of {maximum} bytes [MQTT-3.2.2-15]; the stored value was kept"
            )

    async def _send_unsent(self) -> None:
        connection = self._connection
        while self._unsent_topics and connection is not None:
            topic = self._unsent_topics.pop()
            entry = self._store.get(topic)
            if entry is None:
                continue
            if entry.expires_at is not None and entry.expires_at <= time.time():
                continue
            if entry.stamp.writer != self._client_id:
                # A standby received a newer value from another writer meanwhile; that
                # writer publishes it, and catch-up serves it with its own stamp.
                continue
            outgoing = self._wrap_entry(entry)
            try:
                await self._send(connection, topic, outgoing, qos=entry.qos, retain=entry.retain)
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
            envelope, incoming, wrapped = unwrap(incoming)
        except EnvelopeError as error:
            self.drop_malformed(incoming.topic, error)
            return
        if wrapped and envelope.sender is not None and envelope.sender != self._client_id:
            self._compat_peers.add(envelope.sender)
        if not self._is_first_copy(incoming):
            self._stats.duplicates_dropped += 1
            return
        if self._topics.contains(incoming.topic):
            self._dispatch_control(incoming, envelope)
            return

        if envelope.sender == self._client_id:
            # Mosquitto delivers a client's own retained message when it subscribes,
            # although No Local is set, so identity is checked as well.
            self._stats.own_dropped += 1
            return
        if envelope.kind not in (None, Kind.DATA, Kind.DELETE):
            self.drop_malformed(incoming.topic, EnvelopeError(f"kind {envelope.kind.value!r} on a data topic"))
            return

        # Positional arguments in the field order of Message: topic, payload, qos,
        # retain, sender, user_properties, replayed, stamp, deleted, expiry.
        message = Message(
            incoming.topic,
            incoming.payload,
            incoming.qos,
            incoming.retain,
            envelope.sender,
            list(envelope.user_properties),
            False,
            envelope.stamp,
            envelope.kind is Kind.DELETE,
            incoming.message_expiry,
        )
        if message.deleted and message.payload:
            self.drop_malformed(incoming.topic, EnvelopeError("a deletion must have an empty payload"))
            return
        if envelope.stamp is not None and not self._accept(message):
            return
        logger.debug("received %s from %s", incoming.topic, envelope.sender)
        self._queue.put_nowait(message)

    def _dispatch_control(self, incoming: Incoming, envelope: Envelope) -> None:
        """Hand a control message to the catch-up engine; malformed ones are dropped and counted."""
        is_presence = self._topics.presence_owner(incoming.topic) is not None
        if envelope.sender is None and not is_presence:
            if self._compat:
                # A v5 peer's request or reply reaches a 3.1.1 client without its user
                # properties; v5 peers send compat peers a wrapped copy instead.
                logger.debug("ignored a control message without envelope on %r", incoming.topic)
            else:
                self.drop_malformed(incoming.topic, EnvelopeError("control message without an envelope"))
            return
        try:
            if envelope.kind is Kind.SYNC:
                self._handle_sync(incoming, envelope)
            elif envelope.sender == self._client_id:
                self._stats.own_dropped += 1
            elif is_presence and envelope.kind in (Kind.PRESENCE, None):
                joined = self._catch_up.handle_presence(incoming, envelope)
                if joined is not None:
                    self._spawn(self._introduce(joined), name="introduce")
                    self._peer_joined(joined)
            elif envelope.kind is Kind.PRESENCE and incoming.topic == self._topics.reply(self._client_id):
                introduced = self._catch_up.handle_introduction(incoming, envelope)
                if introduced is not None:
                    self._peer_joined(introduced)
            elif envelope.kind is Kind.REQUEST and incoming.topic == self._topics.request:
                self._catch_up.handle_request(incoming, envelope)
            elif envelope.kind is Kind.REPLY and incoming.topic == self._topics.reply(self._client_id):
                self._catch_up.handle_reply(incoming, envelope)
            else:
                kind = envelope.kind.value if envelope.kind else None
                raise EnvelopeError(f"unexpected kind {kind!r} on control topic")
        except EnvelopeError as error:
            self.drop_malformed(incoming.topic, error)

    def _handle_sync(self, incoming: Incoming, envelope: Envelope) -> None:
        waiter = self._sync_waiter
        if envelope.sender != self._client_id or waiter is None:
            raise EnvelopeError("sync probe that this client did not send")
        token, future = waiter
        if incoming.correlation_data == token and not future.done():
            future.set_result(None)

    async def _introduce(self, peer: str) -> None:
        """Send this client's presence to a peer that just joined, on the peer's reply topic."""
        try:
            await self.control_send(
                self._topics.reply(peer), encode_presence(self._started_millis), Kind.PRESENCE, qos=1
            )
        except ConnectionLost:
            pass

    def _peer_joined(self, peer: str) -> None:
        for subscription in self._subscriptions.values():
            if subscription.catch_up:
                self._spawn(self._background_reload(subscription.topic_filter, [peer]))

    def drop_malformed(self, topic: str, error: Exception) -> None:
        self._stats.malformed_dropped += 1
        self._malformed_log.warning("dropped a malformed message on %r: %s", topic, error)

    def _is_first_copy(self, incoming: Incoming) -> bool:
        """Return whether this copy is the one to deliver among overlapping subscriptions.

        The broker may send one copy per matching subscription. The copy that carries
        the lowest subscription identifier among this client's matching subscriptions
        is delivered, the others are dropped.
        """
        if not incoming.subscription_ids:
            return True
        lowest = self._lowest_matching_id.get(incoming.topic, _UNKNOWN)
        if lowest is _UNKNOWN:
            matching = [
                subscription.identifier
                for subscription in (*self._control_subscriptions, *self._subscriptions.values())
                if topic_matches(subscription.topic_filter, incoming.topic)
            ]
            lowest = min(matching) if matching else None
            if len(self._lowest_matching_id) >= _MATCH_CACHE_SIZE:
                self._lowest_matching_id.clear()
            self._lowest_matching_id[incoming.topic] = lowest
        if lowest is None:
            return True
        return lowest in incoming.subscription_ids

    def _newest_known(self, topic: str) -> Message | None:
        known = self._known.get(topic)
        own = self._store.get(topic)
        if own is not None and (known is None or known.stamp is None or own.stamp > known.stamp):
            return _entry_message(own)
        return known

    def _accept(self, message: Message) -> bool:
        """Record ``message`` as the newest version of its topic unless a version as new is known."""
        assert message.stamp is not None
        if self._max_clock_skew_ms is not None and message.stamp.millis > wall_clock_millis() + self._max_clock_skew_ms:
            self._drop_skewed(message)
            return False
        self._clock.observe(message.stamp)
        newest = self._newest_known(message.topic)
        if newest is not None and newest.stamp is not None and not message.stamp > newest.stamp:
            if message.stamp == newest.stamp:
                self._stats.duplicates_dropped += 1
            else:
                self._stats.stale_dropped += 1
            return False
        self._known[message.topic] = message
        now = time.time()
        if message.expiry is not None:
            self._received_at[message.topic] = now
        else:
            self._received_at.pop(message.topic, None)
        if self._remember_received:
            self._remember(message, now)
        return True

    def _drop_skewed(self, message: Message) -> None:
        assert message.stamp is not None and self._max_clock_skew_ms is not None
        self.drop_malformed(
            message.topic,
            EnvelopeError(
                f"stamp {message.stamp.to_text()} from {message.stamp.writer!r} is more than "
                f"{self._max_clock_skew_ms / 1000:g} s ahead of this machine's clock (max_clock_skew)"
            ),
        )

    def _remember(self, message: Message, now: float) -> None:
        """Store a received version that _accept found newest (remember="received")."""
        assert message.stamp is not None
        expires_at = None if message.expiry is None else now + message.expiry
        entry = Entry(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            tuple(message.user_properties),
            message.stamp,
            deleted=message.deleted,
            expires_at=expires_at,
        )
        self._store.put(entry)
        self._expiry.track(entry)

    # -- catch-up ---------------------------------------------------------

    async def reload(self, topic_filter: str, timeout: float = 2.0) -> Snapshot:
        """Ask the live peers for their newest values under ``topic_filter`` and wait for them.

        Returns when every peer that was live at the request has sent its whole reply,
        or after ``timeout`` seconds; ``Snapshot.complete`` and ``Snapshot.missing``
        tell which. With no live peer it returns at once. The snapshot contains the newest
        known version of each matching topic: from replies, from live messages, and from
        this client's own store. Replayed values that are newer than what the client had
        also go to :meth:`messages` when they match a subscription.
        """
        topic_filter = validate_topic_filter(topic_filter)
        self._reject_control_topic(topic_filter)
        if is_shared_filter(topic_filter):
            raise InvalidArgumentError(f"reload filter {topic_filter!r} must not be a shared subscription")
        _check_seconds(timeout, "timeout")
        if self._require_connection("reload") is None:
            raise NotConnectedError("cannot reload: the client is reconnecting to the broker")
        return await self._reload(topic_filter, timeout=timeout, deliver=True)

    async def _reload(
        self, topic_filter: str, *, timeout: float, deliver: bool, peers: list[str] | None = None
    ) -> Snapshot:
        try:
            pending = await self._catch_up.start_reload(topic_filter, deliver=deliver, peers=peers)
        except ConnectionLost:
            raise NotConnectedError("cannot reload: the connection to the broker was lost") from None
        try:
            await asyncio.wait_for(pending.done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._catch_up.finish_reload(pending)
            self._release_replays(pending)
        missing = frozenset(pending.expected - pending.answered)
        if missing:
            logger.info("reload %r: no complete reply from %s", topic_filter, sorted(missing))
        return Snapshot(topic_filter, self._snapshot_messages(topic_filter), frozenset(pending.answered), missing)

    def _snapshot_messages(self, topic_filter: str) -> dict[str, Message]:
        matches = filter_matcher(topic_filter)
        own = {entry.topic: entry for entry in self._store.matching(topic_filter)}
        now = time.time()
        received_at = self._received_at
        found: dict[str, Message] = {}
        base = filter_base(topic_filter)
        if base is not None:
            head = base + "/"
            candidates = [
                (topic, newest)
                for topic, newest in self._known.items()
                if (topic.startswith(head) or topic == base) and topic not in own
            ]
        else:
            candidates = [
                (topic, newest) for topic, newest in self._known.items() if matches(topic) and topic not in own
            ]
        for topic, newest in candidates:
            if newest.deleted:
                continue
            # Only a received version exists: _newest_known returns it, and it can have
            # expired only when it carries a lifetime, counted from its arrival.
            if newest.expiry is not None:
                arrived = received_at.get(topic)
                if arrived is not None and arrived + newest.expiry <= now:
                    continue
            found[topic] = newest
        for topic in own:
            stored = self._newest_known(topic)
            if stored is None or stored.deleted or self._has_expired(stored, now):
                continue
            found[topic] = stored
        return {topic: found[topic] for topic in sorted(found)}

    def _has_expired(self, message: Message, now: float) -> bool:
        own = self._store.get(message.topic)
        if own is not None and own.stamp == message.stamp:
            return own.expires_at is not None and own.expires_at <= now
        # A received value without a stored copy: the lifetime counts from its arrival.
        received_at = self._received_at.get(message.topic)
        return message.expiry is not None and received_at is not None and received_at + message.expiry <= now

    async def _sweep(self) -> None:
        """Drop expired entries when they expire, and prune old tombstones now and then."""
        next_prune = 0.0
        while True:
            now = time.time()
            try:
                for topic, stamp in self._expiry.pop_expired(now):
                    if self._store.discard(topic, stamp):
                        logger.debug("entry %r expired", topic)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + min(60.0, self._tombstone_retention / 4)
                    self._prune_tombstones(now)
            except StoreError as error:
                logger.error("removing expired entries and old tombstones failed, will retry: %s", error)
            delay = self._expiry.seconds_until_next(time.time())
            # A periodic timer, not synchronisation: expiry is checked at least every second.
            await asyncio.sleep(1.0 if delay is None else min(1.0, delay))

    def _prune_tombstones(self, now: float) -> None:
        """Forget deletions older than ``tombstone_retention``.

        NOTE: once a tombstone is pruned, a peer that still stores an older value of
        the topic (one that was offline during the deletion) can bring it back.
        """
        horizon = (now - self._tombstone_retention) * 1000
        for topic in list(self._store.topics()):
            entry = self._store.get(topic)
            if entry is not None and entry.deleted and entry.stamp.millis < horizon:
                self._store.discard(topic, entry.stamp)
        for topic, message in list(self._known.items()):
            if message.deleted and message.stamp is not None and message.stamp.millis < horizon:
                del self._known[topic]

    async def _background_reload(self, topic_filter: str, peers: list[str] | None) -> None:
        """Reload a catch-up filter after a reconnect or a peer joining; ask missing peers again."""
        for attempt in range(_BACKGROUND_RELOAD_ATTEMPTS):
            try:
                snapshot = await self._reload(topic_filter, timeout=self._connect_timeout, deliver=True, peers=peers)
            except NotConnectedError:
                return
            logger.info(
                "catch-up of %r: %d topics, complete replies from %d peers, missing %s",
                topic_filter,
                len(snapshot),
                len(snapshot.answered),
                sorted(snapshot.missing),
            )
            still_live = sorted(peer for peer in snapshot.missing if peer in self._catch_up.peers)
            if not still_live or self._state is not ConnectionState.CONNECTED:
                return
            peers = still_live
            # A retry delay, not synchronisation: give a busy peer time before asking again.
            await asyncio.sleep(self._reconnect_min_delay * 2**attempt)
        logger.warning("catch-up of %r stayed incomplete: no complete reply from %s", topic_filter, peers)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str = "catch-up") -> None:
        task = asyncio.create_task(coroutine, name=f"mnemoq5-{name}-{self._client_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the interface the catch-up engine uses --------------------------

    def apply_replayed(self, messages: list[Message], reload: PendingReload) -> None:
        """Apply replayed messages; each reaches messages() when its reload ends, if still the newest.

        This is _accept for a whole reply chunk: the same checks and counters per
        message, with the clock read once and advanced once for the chunk.
        """
        skew = self._max_clock_skew_ms
        latest = None if skew is None else wall_clock_millis() + skew
        known = self._known
        store_get = self._store.get
        store_empty = len(self._store) == 0
        received_at = self._received_at
        remember = self._remember_received
        held = self._held_replays if reload.deliver else None
        touched = reload.touched
        now = time.time()
        top: Stamp | None = None
        for message in messages:
            stamp = message.stamp
            assert stamp is not None
            if latest is not None and stamp.millis > latest:
                self._drop_skewed(message)
                continue
            if top is None or stamp.millis > top.millis or (stamp.millis == top.millis and stamp.counter > top.counter):
                top = stamp
            topic = message.topic
            current = known.get(topic)
            own = None if store_empty else store_get(topic)
            newest = current.stamp if current is not None else None
            if own is not None and (newest is None or own.stamp > newest):
                newest = own.stamp
            if newest is not None and not stamp > newest:
                if stamp == newest:
                    self._stats.duplicates_dropped += 1
                else:
                    self._stats.stale_dropped += 1
                continue
            known[topic] = message
            if message.expiry is not None:
                received_at[topic] = now
            elif received_at:
                received_at.pop(topic, None)
            if remember:
                self._remember(message, now)
                store_empty = False
            if held is not None:
                held[topic] = message
                touched.add(topic)
        if top is not None:
            self._clock.observe(top)

    def _release_replays(self, reload: PendingReload) -> None:
        """Queue the newest replayed version of each topic the reload touched.

        Holding replays until the reload ends means an older value from one peer never
        reaches the application just before a newer value or a deletion from another.
        """
        held = self._held_replays
        matchers = [filter_matcher(subscription.topic_filter) for subscription in self._subscriptions.values()]
        if not matchers:
            # Nothing can be queued: only forget what the reload held.
            if held.keys() == reload.touched:
                held.clear()
            else:
                for topic in reload.touched:
                    held.pop(topic, None)
            return
        known = self._known
        for topic in sorted(reload.touched):
            message = held.pop(topic, None)
            if message is None or known.get(topic) is not message:
                continue
            if any(matches(topic) for matches in matchers):
                self._queue.put_nowait(message)

    async def control_send(
        self,
        topic: str,
        payload: bytes,
        kind: Kind,
        *,
        qos: int,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        compat: bool | None = None,
    ) -> None:
        connection = self._connection
        if connection is None or not connection.is_open:
            raise ConnectionLost()
        if compat is None:
            compat = self._compat or self._topics.reply_owner(topic) in self._compat_peers
        outgoing = wrap(
            self._client_id,
            kind,
            None,
            payload,
            compat=compat,
            response_topic=response_topic,
            correlation_data=correlation_data,
        )
        await self._send(connection, topic, outgoing, qos=qos, retain=retain)

    def is_compat_peer(self, peer: str) -> bool:
        return self._compat or peer in self._compat_peers

    def own_maximum_packet_size(self) -> int | None:
        return self._maximum_packet_size

    def broker_maximum_packet_size(self) -> int | None:
        return self._limits.maximum_packet_size if self._limits else None


def _entry_message(entry: Entry) -> Message:
    return Message(
        topic=entry.topic,
        payload=entry.payload,
        qos=entry.qos,
        retain=entry.retain,
        sender=entry.stamp.writer,
        user_properties=list(entry.user_properties),
        replayed=False,
        stamp=entry.stamp,
        deleted=entry.deleted,
        expiry=_remaining_lifetime(entry.expires_at),
    )


def _remaining_lifetime(expires_at: float | None) -> int | None:
    if expires_at is None:
        return None
    return max(0, math.ceil(expires_at - time.time()))


def _check_expiry(expiry: object) -> None:
    if expiry is None:
        return
    if not isinstance(expiry, int) or isinstance(expiry, bool) or not 1 <= expiry <= 0xFFFFFFFF:
        # The Message Expiry Interval is a Four Byte Integer (MQTT v5 3.3.2.3.3).
        raise InvalidArgumentError(f"expiry {expiry!r} must be an int of seconds from 1 to 4294967295, or None")


def _check_client_id(client_id: object, control_prefix: str) -> None:
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
    # The id is the last level of this client's presence and reply topics, which are
    # UTF-8 strings of at most 65,535 bytes [MQTT-1.5.4].
    maximum = 65_535 - len(f"{control_prefix}/presence/".encode())
    if size > maximum:
        raise InvalidArgumentError(
            f"client_id is {size} UTF-8 bytes, more than the maximum of {maximum} "
            f"that fits the control topics under {control_prefix!r}"
        )


def _check_seconds(value: object, name: str, *, allow_zero: bool = False) -> None:
    """Raise InvalidArgumentError unless ``value`` is a finite number of seconds, positive or (if allowed) zero."""
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if valid and (value > 0 or (allow_zero and value == 0)):  # type: ignore[operator]
        return
    rule = "zero or more" if allow_zero else "more than zero"
    raise InvalidArgumentError(f"{name} {value!r} is invalid: it must be a finite number of seconds, {rule}")


def _check_qos(qos: object) -> None:
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise InvalidArgumentError(f"qos {qos!r} is invalid: it must be 0, 1 or 2")


def _check_control_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise InvalidArgumentError(f"control_prefix {prefix!r} must be str")
    validate_topic_name(prefix)
    if prefix.startswith("$") or prefix.endswith("/") or prefix.startswith("/"):
        raise InvalidArgumentError(
            f"control_prefix {prefix!r} must not start with '$' or '/' and must not end with '/'"
        )


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, str):
        try:
            return payload.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidArgumentError(
                f"str payload cannot be encoded as UTF-8 ({error.reason} at index {error.start}); pass bytes"
            ) from None
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise InvalidArgumentError(f"payload must be bytes or str, not {type(payload).__name__}")
