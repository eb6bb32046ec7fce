"""Catch-up: presence, the responder that replies to requests, and the requester that collects replies.

The client owns the connection and the store; this module owns the control protocol
state. It calls back into the client through the small :class:`CatchUpHost` interface.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ._adapter import ConnectionLost, Incoming
from ._control import (
    CHUNK_OVERHEAD,
    ControlTopics,
    Request,
    decode_presence,
    decode_reply,
    decode_request,
    encode_chunk,
    encode_entries,
    encode_request,
    split_into_chunks,
)
from ._envelope import Envelope, Kind, encode_v5
from ._errors import EnvelopeError
from ._message import Message
from ._packet import publish_packet_size
from ._ratelimit import RateLimitedWarning
from ._store import Store
from ._topics import filter_base, filter_matcher
from ._wire import wrap

__all__ = ["CatchUpEngine", "CatchUpHost", "PendingReload"]

logger = logging.getLogger(__name__)

# Reply chunks group entries up to this size even when neither side limits packets:
# gmqtt rebuilds its read buffer on every 64 KiB read, so very large packets read
# slowly. A single larger entry still goes in a chunk of its own.
DEFAULT_MAX_CHUNK = 256 * 1024
# The largest whole packet MQTT can carry: a 1-byte header and a Remaining Length of at
# most 268,435,455 in 4 bytes (MQTT v5 section 2.1.4).
MAX_MQTT_PACKET = 1 + 4 + 268_435_455
# A requester may send this many requests at once, then this many per second. Requests
# beyond that wait for their turn, up to MAX_DEFERRAL seconds; later ones are dropped.
REQUEST_BURST = 20
REQUEST_RATE = 10.0
MAX_DEFERRAL = 30.0


class CatchUpHost(Protocol):
    """The interface of the client that the catch-up engine calls."""

    @property
    def client_id(self) -> str: ...

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
        """Publish a control message; raise ConnectionLost when there is no connection.

        ``compat`` None wraps the message when this client or the receiving peer uses
        the compat envelope.
        """

    def is_compat_peer(self, peer: str) -> bool:
        """Return whether ``peer`` reads only the compat envelope (or this client is in compat mode)."""

    def own_maximum_packet_size(self) -> int | None:
        """Return the Maximum Packet Size this client sent in CONNECT, or None."""

    def broker_maximum_packet_size(self) -> int | None:
        """Return the Maximum Packet Size from the broker's CONNACK, or None."""

    def apply_replayed(self, messages: list[Message], reload: PendingReload) -> None:
        """Apply the replayed messages of one reply chunk, in order."""

    def drop_malformed(self, topic: str, error: Exception) -> None: ...


@dataclass
class PendingReload:
    """One outstanding request and the progress of each peer's reply."""

    topic_filter: str
    correlation: bytes
    expected: set[str]
    deliver: bool
    answered: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    next_sequence: dict[str, int] = field(default_factory=dict)
    received_count: dict[str, int] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check_done(self) -> None:
        if self.expected <= self.answered | self.failed:
            self.done.set()


class _TokenBucket:
    """A token bucket that may go into debt, so a burst is spread out instead of dropped."""

    def __init__(self) -> None:
        self.tokens = float(REQUEST_BURST)
        self.updated = time.monotonic()

    def reserve(self) -> float | None:
        """Take a token; return the seconds to wait before using it, or None when the wait is too long."""
        now = time.monotonic()
        self.tokens = min(float(REQUEST_BURST), self.tokens + (now - self.updated) * REQUEST_RATE)
        self.updated = now
        wait = (1 - self.tokens) / REQUEST_RATE if self.tokens < 1 else 0.0
        if wait > MAX_DEFERRAL:
            return None
        self.tokens -= 1
        return wait


class CatchUpEngine:
    """Presence tracking, the responder and the requester side of catch-up."""

    def __init__(self, host: CatchUpHost, topics: ControlTopics, store: Store, *, reply_jitter: float) -> None:
        self._host = host
        self._topics = topics
        self._store = store
        self._reply_jitter = reply_jitter
        self.peers: dict[str, int] = {}
        self._pending: dict[bytes, PendingReload] = {}
        # Correlation data of recent reloads, so that their late replies are ignored quietly.
        self._finished: collections.deque[bytes] = collections.deque(maxlen=256)
        self._buckets: dict[str, _TokenBucket] = {}
        self._reply_tasks: set[asyncio.Task[None]] = set()
        self._rate_log = RateLimitedWarning(logger)
        self.requests_rate_limited = 0

    # -- presence -------------------------------------------------------

    def reset_presence(self) -> None:
        """Forget the known peers; the next subscription to presence rebuilds them."""
        self.peers.clear()

    def handle_presence(self, incoming: Incoming, envelope: Envelope) -> str | None:
        """Update the peer table; return the id of a peer that announced itself live, else None."""
        owner = self._topics.presence_owner(incoming.topic)
        if owner is None or owner == self._host.client_id:
            return None
        if envelope.sender is not None and envelope.sender != owner:
            raise EnvelopeError(f"presence for {owner!r} was sent by {envelope.sender!r}")
        started = decode_presence(incoming.payload)
        if started is None:
            if self.peers.pop(owner, None) is not None:
                logger.info("peer %s left", owner)
            self._peer_left(owner)
            return None
        joined = owner not in self.peers
        self.peers[owner] = started
        if joined:
            logger.info("peer %s is live", owner)
        return owner if joined and not incoming.retain else None

    def handle_introduction(self, incoming: Incoming, envelope: Envelope) -> str | None:
        """Record a peer that introduced itself on this client's reply topic; return its id if it is new.

        Peers introduce themselves to each newcomer, because some brokers (RabbitMQ 3.x)
        do not send retained messages to wildcard subscriptions such as the presence
        filter.
        """
        peer = envelope.sender
        assert peer is not None
        started = decode_presence(incoming.payload)
        if started is None:
            raise EnvelopeError("an introduction must carry a presence payload")
        joined = peer not in self.peers
        self.peers[peer] = started
        if joined:
            logger.info("peer %s is live (introduced itself)", peer)
        return peer if joined else None

    def _peer_left(self, peer: str) -> None:
        for reload in self._pending.values():
            if peer in reload.expected and peer not in reload.answered:
                reload.failed.add(peer)
                reload.check_done()

    # -- requester side ---------------------------------------------------

    async def start_reload(
        self, topic_filter: str, *, deliver: bool, peers: Iterable[str] | None = None
    ) -> PendingReload:
        """Register a reload and send its request; the caller awaits ``done``."""
        expected = set(self.peers) if peers is None else set(peers) & set(self.peers)
        expected.discard(self._host.client_id)
        reload = PendingReload(topic_filter, os.urandom(16), expected, deliver)
        if not expected:
            reload.done.set()
            return reload
        self._pending[reload.correlation] = reload
        # Peers that read only the compat envelope get a wrapped copy of the request.
        compat_peers = {peer for peer in expected if self._host.is_compat_peer(peer)}
        try:
            for group, compat in ((compat_peers, True), (expected - compat_peers, False)):
                if not group:
                    continue
                # The request names its peers, so a peer whose presence has not reached
                # this client yet does not send a reply that no reload waits for.
                request = Request(topic_filter, self._host.own_maximum_packet_size(), frozenset(group))
                await self._host.control_send(
                    self._topics.request,
                    encode_request(request),
                    Kind.REQUEST,
                    qos=1,
                    response_topic=self._topics.reply(self._host.client_id),
                    correlation_data=reload.correlation,
                    compat=compat,
                )
        except ConnectionLost:
            self.finish_reload(reload)
            raise
        logger.debug("reload %r sent to %d peers", topic_filter, len(expected))
        return reload

    def connection_lost(self) -> None:
        """End every pending reload: replies cannot arrive on a connection that is gone."""
        for reload in self._pending.values():
            reload.failed.update(reload.expected - reload.answered)
            reload.check_done()

    def finish_reload(self, reload: PendingReload) -> None:
        if self._pending.pop(reload.correlation, None) is not None:
            self._finished.append(reload.correlation)

    def handle_reply(self, incoming: Incoming, envelope: Envelope) -> None:
        correlation = incoming.correlation_data or b""
        reload = self._pending.get(correlation)
        if reload is None:
            if correlation in self._finished:
                # The reload ended at its timeout before this reply came in.
                logger.debug("ignored a reply from %s to a reload that has ended", envelope.sender)
                return
            raise EnvelopeError("reply with unknown correlation data")
        peer = envelope.sender
        assert peer is not None
        if peer not in reload.expected or peer in reload.answered or peer in reload.failed:
            raise EnvelopeError(f"reply from {peer!r}, which this reload is not waiting for")
        with collector_paused():
            try:
                sequence, messages, end_count = decode_reply(incoming.payload)
                self._check_chunk(reload, peer, sequence, messages, end_count)
            except EnvelopeError:
                reload.failed.add(peer)
                reload.check_done()
                raise
            self._host.apply_replayed(messages, reload)
        reload.received_count[peer] = reload.received_count.get(peer, 0) + len(messages)
        reload.next_sequence[peer] = sequence + 1
        if end_count is not None:
            reload.answered.add(peer)
            reload.check_done()

    def _check_chunk(
        self, reload: PendingReload, peer: str, sequence: int, messages: list[Message], end_count: int | None
    ) -> None:
        """Raise EnvelopeError unless the chunk is the next one and all its entries belong to the reload."""
        expected_sequence = reload.next_sequence.get(peer, 0)
        if sequence != expected_sequence:
            raise EnvelopeError(f"reply chunk {sequence} from {peer!r}, expected {expected_sequence}")
        total = reload.received_count.get(peer, 0) + len(messages)
        if end_count is not None and end_count != total:
            raise EnvelopeError(
                f"reply from {peer!r} announced {end_count} entries but carried {total}; "
                "a responder counts the entries too large to send, so its reply is incomplete"
            )
        base = filter_base(reload.topic_filter)
        if base is not None and not self._filter_may_match_control(reload.topic_filter):
            head = base + "/"
            for message in messages:
                topic = message.topic
                if not (topic.startswith(head) or topic == base):
                    raise EnvelopeError(f"reply entry {topic!r} is outside the filter {reload.topic_filter!r}")
            return
        matches = filter_matcher(reload.topic_filter)
        contains = self._topics.contains
        for message in messages:
            topic = message.topic
            if not matches(topic):
                raise EnvelopeError(f"reply entry {topic!r} is outside the filter {reload.topic_filter!r}")
            if contains(topic):
                raise EnvelopeError(f"reply entry {topic!r} is a control topic")

    def _filter_may_match_control(self, topic_filter: str) -> bool:
        """Return False when no topic under ``topic_filter`` can be a control topic.

        A filter without '+' is a name, or a base followed by "/#" that matches the base
        and the topics below it. Such a filter misses the control namespace (the prefix
        and the topics below it) unless one of base and prefix lies at or below the other.
        """
        if "+" in topic_filter or topic_filter == "#":
            return True
        if not topic_filter.endswith("/#"):
            return self._topics.contains(topic_filter)
        base = topic_filter[:-2]
        prefix = self._topics.prefix
        return base == prefix or base.startswith(prefix + "/") or prefix.startswith(base + "/")

    # -- responder side -------------------------------------------------

    def handle_request(self, incoming: Incoming, envelope: Envelope) -> None:
        requester = envelope.sender
        assert requester is not None
        if requester == self._host.client_id:
            return
        if incoming.response_topic is None or incoming.correlation_data is None:
            raise EnvelopeError("request without Response Topic or Correlation Data")
        if incoming.response_topic != self._topics.reply(requester):
            raise EnvelopeError(f"request Response Topic {incoming.response_topic!r} is not the requester's")
        request = decode_request(incoming.payload)
        if request.peers is not None and self._host.client_id not in request.peers:
            return
        bucket = self._buckets.setdefault(requester, _TokenBucket())
        wait = bucket.reserve()
        if wait is None:
            self.requests_rate_limited += 1
            self._rate_log.warning(
                "ignored a catch-up request from %s: its requests would wait more than %s s at %s per second",
                requester,
                MAX_DEFERRAL,
                REQUEST_RATE,
            )
            return
        task = asyncio.create_task(
            self._send_reply(request, incoming.response_topic, incoming.correlation_data, wait),
            name=f"mnemoq5-reply-{requester}",
        )
        self._reply_tasks.add(task)
        task.add_done_callback(self._reply_tasks.discard)

    async def _send_reply(self, request: Request, reply_topic: str, correlation: bytes, wait: float) -> None:
        if wait > 0:
            # The requester sent more than REQUEST_BURST requests: reply at REQUEST_RATE.
            await asyncio.sleep(wait)
        if self._reply_jitter > 0 and not _names_one_peer(request):
            # Spread the replies of many peers so they do not reach the broker at once.
            # A request that names this peer alone gets one reply, which needs no delay.
            await asyncio.sleep(random.uniform(0, self._reply_jitter))
        limit = self._reply_payload_limit(request, reply_topic, correlation)
        encoded = self._encoded_entries_for(request.topic_filter)
        sequence = 0
        sent = 0
        skipped = 0
        try:
            for group in split_into_chunks(encoded, min(limit, DEFAULT_MAX_CHUNK)):
                if len(group) == 1 and len(group[0]) + CHUNK_OVERHEAD > limit:
                    skipped += 1
                    logger.warning(
                        "an entry of %d bytes does not fit a reply packet of at most %d bytes and was not sent; "
                        "the reply to %s counts it, so the requester sees this peer as missing",
                        len(group[0]),
                        limit,
                        reply_topic,
                    )
                    continue
                await self._send_chunk(reply_topic, correlation, encode_chunk(sequence, group, None))
                sequence += 1
                sent += len(group)
            # A skipped entry is counted, so the count does not match and the reply is incomplete.
            await self._send_chunk(reply_topic, correlation, encode_chunk(sequence, [], sent + skipped))
        except ConnectionLost:
            logger.info("connection lost while replying to %s; the requester will see this peer missing", reply_topic)
            return
        logger.debug("replied with %d entries in %d chunks to %s", sent, sequence + 1, reply_topic)

    async def _send_chunk(self, reply_topic: str, correlation: bytes, payload: bytes) -> None:
        await self._host.control_send(reply_topic, payload, Kind.REPLY, qos=1, correlation_data=correlation)

    def _encoded_entries_for(self, topic_filter: str) -> list[bytes]:
        """Encode the stored entries under ``topic_filter`` that are neither control topics nor expired.

        All entries are encoded before the first chunk is sent, so the reply is one
        consistent view of the store even when values change while it is sent.
        """
        skip = self._topics.contains if self._filter_may_match_control(topic_filter) else None
        return encode_entries(self._store.matching(topic_filter), time.time(), skip)

    def _reply_payload_limit(self, request: Request, reply_topic: str, correlation: bytes) -> int:
        """Return the largest chunk payload whose PUBLISH fits both Maximum Packet Sizes and MQTT's own limit."""
        limits = []
        for maximum in (self._host.broker_maximum_packet_size(), request.maximum_packet_size, MAX_MQTT_PACKET):
            if maximum is not None:
                overhead = publish_packet_size(
                    reply_topic,
                    0,
                    1,
                    encode_v5(self._host.client_id, Kind.REPLY, None),
                    correlation_data=correlation,
                )
                # The compat prefix may take the place of the properties; four more
                # bytes cover a longer Remaining Length field.
                compat_prefix = len(
                    wrap(self._host.client_id, Kind.REPLY, None, b"", compat=True, correlation_data=correlation).payload
                )
                limits.append(maximum - overhead - compat_prefix - 4)
        return max(CHUNK_OVERHEAD + 1, min(limits))

    async def close(self) -> None:
        for task in list(self._reply_tasks):
            task.cancel()
        await asyncio.gather(*self._reply_tasks, return_exceptions=True)
        for reload in self._pending.values():
            reload.done.set()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for a block that builds many objects.

    A reply chunk of a few thousand entries allocates a few objects per entry, none of
    them in a reference cycle. With CPython's default thresholds, every 700 allocations
    start a collection of the youngest generation, and every tenth of those a
    collection of the middle one. After enough of them a full collection walks every
    object of the process, and in a 10,000-topic reload that took longer than decoding
    the whole chunk. Paused, the allocations of the block lead to one young collection
    afterwards. The collector is left as it was found, so an application that turned
    it off keeps it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _names_one_peer(request: Request) -> bool:
    return request.peers is not None and len(request.peers) == 1
