"""Malformed catch-up traffic from a raw paho-mqtt v5 client, sent through Mosquitto.

Each malformed request or reply must be dropped and counted in
``stats.malformed_dropped``. The application gets no exception and no message, the
store keeps its entries, and the client goes on replying to requests and reloading.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cbor2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mnemoq5 import MnemoQ, Stamp
from mnemoq5._control import ReplyEntry, Request, decode_chunk, encode_chunk, encode_entry, encode_request

from .broker import Mosquitto
from .helpers import messages_until, wait_until


class RawMessage:
    """A PUBLISH received by the raw client, with the v5 properties the tests read."""

    def __init__(self, message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        self.topic = message.topic
        self.payload = bytes(message.payload)
        self.response_topic: str | None = getattr(properties, "ResponseTopic", None)
        self.correlation_data: bytes | None = getattr(properties, "CorrelationData", None)
        self.user_properties: list[tuple[str, str]] = list(getattr(properties, "UserProperty", []) or [])


class RawPeer:
    """A paho-mqtt v5 client that sends hand-made control messages under a control prefix."""

    def __init__(self, broker: Mosquitto, prefix: str) -> None:
        self.client_id = f"raw{uuid.uuid4().hex[:12]}"
        self.prefix = prefix
        self.requests: asyncio.Queue[RawMessage] = asyncio.Queue()
        self.replies: asyncio.Queue[RawMessage] = asyncio.Queue()
        self._broker = broker
        self._loop = asyncio.get_running_loop()
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._connected: asyncio.Future[int] = self._loop.create_future()

    @property
    def presence_topic(self) -> str:
        return f"{self.prefix}/presence/{self.client_id}"

    @property
    def reply_topic(self) -> str:
        return f"{self.prefix}/reply/{self.client_id}"

    def envelope(self, kind: str) -> list[tuple[str, str]]:
        return [("mnemoq5:id", self.client_id), ("mnemoq5:kind", kind)]

    # paho calls these from its network thread.

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._loop.call_soon_threadsafe(_resolve, self._connected, reason_code.value)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        codes = [code.value for code in reason_codes]
        self._loop.call_soon_threadsafe(self._suback_received, mid, codes)

    def _suback_received(self, mid: int, codes: list[int]) -> None:
        # Runs in the event loop, after subscribe() registered the future for ``mid``.
        future = self._subacks.pop(mid, None)
        if future is not None:
            _resolve(future, codes)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        raw = RawMessage(message)
        queue = self.requests if raw.topic == f"{self.prefix}/req" else self.replies
        self._loop.call_soon_threadsafe(queue.put_nowait, raw)

    # -- the tests' interface --------------------------------------------------

    async def connect(self) -> None:
        will = Properties(PacketTypes.WILLMESSAGE)
        will.UserProperty = self.envelope("presence")
        self._client.will_set(self.presence_topic, b"", qos=1, retain=True, properties=will)
        self._client.connect(self._broker.host, self._broker.port)
        self._client.loop_start()
        reason_code = await asyncio.wait_for(self._connected, 5)
        assert reason_code == 0
        for topic_filter in (f"{self.prefix}/req", self.reply_topic):
            (result, mid) = self._client.subscribe(topic_filter, options=SubscribeOptions(qos=1))
            assert result == paho.MQTT_ERR_SUCCESS
            future: asyncio.Future[list[int]] = self._loop.create_future()
            self._subacks[mid] = future
            codes = await asyncio.wait_for(future, 5)
            assert codes == [1]

    async def publish(
        self,
        topic: str,
        payload: bytes,
        user_properties: list[tuple[str, str]] | None,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish at QoS 1 and wait for PUBACK."""
        properties = Properties(PacketTypes.PUBLISH)
        if user_properties:
            properties.UserProperty = user_properties
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation_data is not None:
            properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        await asyncio.to_thread(info.wait_for_publish, 5)
        assert info.is_published()

    async def announce(self) -> None:
        """Publish the retained presence that makes mnemoq5 clients count this client as a live peer."""
        await self.publish(self.presence_topic, cbor2.dumps([1, 0]), self.envelope("presence"), retain=True)

    async def withdraw(self) -> None:
        await self.publish(self.presence_topic, b"", self.envelope("presence"), retain=True)

    async def reply(self, request: RawMessage, payload: bytes, correlation_data: bytes | None = None) -> None:
        assert request.response_topic is not None
        await self.publish(
            request.response_topic,
            payload,
            self.envelope("reply"),
            correlation_data=request.correlation_data if correlation_data is None else correlation_data,
        )

    async def next_request(self) -> RawMessage:
        return await asyncio.wait_for(self.requests.get(), 5)

    async def next_reply(self) -> RawMessage:
        return await asyncio.wait_for(self.replies.get(), 5)

    async def close(self) -> None:
        if self._client.is_connected():
            await self.withdraw()
            self._client.disconnect()
        self._client.loop_stop()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


@pytest.fixture
async def raw(broker: Mosquitto, control_prefix: str) -> AsyncIterator[RawPeer]:
    """A connected raw client that mnemoq5 clients see as a live peer."""
    peer = RawPeer(broker, control_prefix)
    await peer.connect()
    await peer.announce()
    yield peer
    await peer.close()


@pytest.fixture
async def target(raw: RawPeer, make_peer: Callable[..., Awaitable[MnemoQ]], topic_root: str) -> MnemoQ:
    """The mnemoq5 client under attack: it stores one value and subscribes to the test's topics."""
    client = await make_peer()
    assert raw.client_id in client.peers()
    await client.subscribe(f"{topic_root}/#", qos=1)
    await client.publish(f"{topic_root}/stored", b"stored", qos=1)
    return client


def entry(topic: str, payload: bytes = b"value", writer: str = "writer") -> ReplyEntry:
    return ReplyEntry(topic, payload, Stamp(1_700_000_000_000, 0, writer), 1, False, ())


def chunk(sequence: int, entries: list[ReplyEntry], end_count: int | None) -> bytes:
    return encode_chunk(sequence, [encode_entry(item) for item in entries], end_count)


async def check_still_works(
    target: MnemoQ, raw: RawPeer, make_peer: Callable[..., Awaitable[MnemoQ]], root: str
) -> None:
    """Check that ``target`` still receives live values, replies to requests and reloads."""
    await raw.withdraw()
    await wait_until(lambda: raw.client_id not in target.peers(), "target sees the raw peer leave")
    helper = await make_peer()
    await helper.publish(f"{root}/after", b"after", qos=1)

    received = await messages_until(target, f"{root}/after")
    live = received[-1]
    assert live.payload == b"after"
    assert not live.replayed
    # Only values from well-formed replies may come before the live one.
    for message in received[:-1]:
        assert message.replayed
        assert "forged" not in message.topic

    from_target = await helper.reload(f"{root}/#", timeout=5)
    assert from_target.complete
    assert target.client_id in from_target.answered
    assert from_target[f"{root}/stored"].payload == b"stored"

    from_helper = await target.reload(f"{root}/#", timeout=5)
    assert from_helper.complete
    assert from_helper.answered == {helper.client_id}
    assert from_helper[f"{root}/after"].payload == b"after"

    await target.publish(f"{root}/stored", b"stored again", qos=1)
    assert target.store[f"{root}/stored"].payload == b"stored again"


# -- requests sent to a responder ----------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe not CBOR",
        b"",
        cbor2.dumps({"filter": "#"}),
        cbor2.dumps([1, "#"]),
        cbor2.dumps([1, "a/#/b", None, None]),
        cbor2.dumps([1, 7, None, None]),
        cbor2.dumps([-1, "#", None, None]),
        cbor2.dumps([1, "#", "big", None]),
        cbor2.dumps([1, "#", None, "everyone"]),
        # An array header that announces 2**32 elements and carries none.
        b"\x9a\xff\xff\xff\xff",
    ],
    ids=[
        "garbage",
        "empty",
        "map",
        "short",
        "bad-filter",
        "filter-int",
        "version-neg",
        "size-text",
        "peers-text",
        "huge-array",
    ],
)
async def test_request_malformed_payload(target, raw, make_peer, topic_root, payload):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped

    await raw.publish(
        f"{raw.prefix}/req",
        payload,
        raw.envelope("request"),
        response_topic=raw.reply_topic,
        correlation_data=b"bad request",
    )

    await wait_until(lambda: target.stats.malformed_dropped > dropped_before, "target drops the malformed message")
    assert target.stats.malformed_dropped == dropped_before + 1
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


@pytest.mark.parametrize("kind", ["bogus", "reply", "data", ""])
async def test_request_unknown_kind(target, raw, make_peer, topic_root, kind):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped

    await raw.publish(
        f"{raw.prefix}/req",
        encode_request(Request(f"{topic_root}/#", None, None)),
        raw.envelope(kind),
        response_topic=raw.reply_topic,
        correlation_data=b"unknown kind",
    )

    await wait_until(lambda: target.stats.malformed_dropped > dropped_before, "target drops the malformed message")
    assert target.stats.malformed_dropped == dropped_before + 1
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


@pytest.mark.parametrize(
    ("response_topic", "correlation_data"),
    [(None, b"no response topic"), ("own", None), ("other", b"someone else's reply topic")],
    ids=["no-response-topic", "no-correlation", "foreign-response-topic"],
)
async def test_request_without_reply_route(target, raw, make_peer, topic_root, response_topic, correlation_data):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    if response_topic == "own":
        response_topic = raw.reply_topic
    elif response_topic == "other":
        response_topic = f"{raw.prefix}/reply/{target.client_id}"

    await raw.publish(
        f"{raw.prefix}/req",
        encode_request(Request(f"{topic_root}/#", None, None)),
        raw.envelope("request"),
        response_topic=response_topic,
        correlation_data=correlation_data,
    )

    await wait_until(lambda: target.stats.malformed_dropped > dropped_before, "target drops the malformed message")
    assert target.stats.malformed_dropped == dropped_before + 1
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


async def test_request_valid_answered(target, raw, topic_root):
    # The raw client's own request path works, so the drops above are due to the payloads.
    await raw.publish(
        f"{raw.prefix}/req",
        encode_request(Request(f"{topic_root}/#", None, None)),
        raw.envelope("request"),
        response_topic=raw.reply_topic,
        correlation_data=b"valid",
    )

    reply = await raw.next_reply()
    decoded = decode_chunk(reply.payload)

    assert reply.correlation_data == b"valid"
    assert ("mnemoq5:id", target.client_id) in reply.user_properties
    assert [item.topic for item in decoded.entries] == [f"{topic_root}/stored"]
    assert decoded.end_count in (None, 1)


# -- replies sent to a requester ---------------------------------------------


async def test_reply_unknown_correlation(target, raw, make_peer, topic_root):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    reload = asyncio.create_task(target.reload(f"{topic_root}/#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, chunk(0, [entry(f"{topic_root}/forged")], 1), correlation_data=os.urandom(16))
    await wait_until(lambda: target.stats.malformed_dropped > dropped_before, "target drops the malformed message")
    await raw.reply(request, chunk(0, [entry(f"{topic_root}/real")], 1))
    snapshot = await asyncio.wait_for(reload, 5)

    assert target.stats.malformed_dropped == dropped_before + 1
    assert snapshot.complete
    assert snapshot.answered == {raw.client_id}
    assert f"{topic_root}/forged" not in snapshot
    assert snapshot[f"{topic_root}/real"].payload == b"value"
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


async def test_reply_without_pending_reload(target, raw, make_peer, topic_root):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped

    await raw.publish(
        f"{raw.prefix}/reply/{target.client_id}",
        chunk(0, [entry(f"{topic_root}/forged")], 1),
        raw.envelope("reply"),
        correlation_data=os.urandom(16),
    )

    await wait_until(lambda: target.stats.malformed_dropped > dropped_before, "target drops the malformed message")
    assert target.stats.malformed_dropped == dropped_before + 1
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


async def test_reply_end_count_mismatch(target, raw, make_peer, topic_root):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    reload = asyncio.create_task(target.reload(f"{topic_root}/#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, chunk(0, [entry(f"{topic_root}/counted")], 5))
    # The malformed reply ends the wait for this peer long before the 30 s timeout.
    snapshot = await asyncio.wait_for(reload, 5)

    assert target.stats.malformed_dropped == dropped_before + 1
    assert not snapshot.complete
    assert snapshot.missing == {raw.client_id}
    assert snapshot.answered == frozenset()
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


@pytest.mark.parametrize(
    "relative_topic",
    ["elsewhere/x", "../x", "", "/x"],
    ids=["sibling", "dots", "empty-suffix", "leading-slash"],
)
async def test_reply_topic_outside_filter(target, raw, make_peer, topic_root, relative_topic):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    outside = f"{topic_root}-other/{relative_topic}"
    reload = asyncio.create_task(target.reload(f"{topic_root}/in/#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, chunk(0, [entry(f"{topic_root}/in/ok"), entry(outside)], 2))
    snapshot = await asyncio.wait_for(reload, 5)

    assert target.stats.malformed_dropped == dropped_before + 1
    assert not snapshot.complete
    assert snapshot.missing == {raw.client_id}
    # The whole chunk is rejected, the valid entry beside the foreign one included.
    assert f"{topic_root}/in/ok" not in snapshot
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


async def test_reply_control_topic_entry(target, raw, make_peer, topic_root):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    reload = asyncio.create_task(target.reload("#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, chunk(0, [entry(f"{raw.prefix}/presence/forged")], 1))
    snapshot = await asyncio.wait_for(reload, 5)

    assert target.stats.malformed_dropped == dropped_before + 1
    assert snapshot.missing == {raw.client_id}
    assert "forged" not in target.peers()
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


def _entry_fields(topic: str) -> list[Any]:
    return [topic, b"value", 1_700_000_000_000, 0, "writer", 1, False, []]


@pytest.mark.parametrize(
    "payload_for",
    [
        lambda root: b"\xff\xfe not CBOR",
        lambda root: b"",
        lambda root: b"\xff" * 100_000,
        lambda root: cbor2.dumps({"sequence": 0}),
        lambda root: cbor2.dumps([0, [], 0, 0]),
        lambda root: cbor2.dumps([0, "entries", 0]),
        lambda root: cbor2.dumps([-1, [], 0]),
        lambda root: cbor2.dumps([0, [], "one"]),
        lambda root: cbor2.dumps([3, [], 0]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", "text"]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", "text", *_entry_fields(root)[2:]]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/+", *_entry_fields(root)[1:]]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", b"v", 1, 0, "", 1, False, []]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", b"v", 1, 0, "w", 3, False, []]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", b"v", 2**64, 0, "w", 1, False, []]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", b"v", 1, 0, "w", 1, False, [["mnemoq5:id", "x"]]]], 1]),
        lambda root: cbor2.dumps([0, [[f"{root}/x", b"v", 1, 0, "w", 1, False, [], "yes", None]], 1]),
        # A byte string header that announces 2**62 bytes and carries one.
        lambda root: b"\x83\x00\x81\x88\x61x\x5b" + (2**62).to_bytes(8, "big") + b"v",
        # An array header that announces 2**32 entries and carries none.
        lambda root: b"\x83\x00\x9a\xff\xff\xff\xff",
    ],
    ids=[
        "garbage",
        "empty",
        "oversized-garbage",
        "map",
        "long-array",
        "entries-text",
        "sequence-neg",
        "count-text",
        "sequence-gap",
        "short-entry",
        "payload-text",
        "topic-wildcard",
        "writer-empty",
        "qos-3",
        "millis-too-big",
        "reserved-property",
        "deleted-text",
        "huge-bytes",
        "huge-array",
    ],
)
async def test_reply_malformed_chunk(target, raw, make_peer, topic_root, payload_for):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    reload = asyncio.create_task(target.reload(f"{topic_root}/#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, payload_for(topic_root))
    snapshot = await asyncio.wait_for(reload, 5)

    assert target.stats.malformed_dropped == dropped_before + 1
    assert not snapshot.complete
    assert snapshot.missing == {raw.client_id}
    assert set(snapshot) == {f"{topic_root}/stored"}
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)


async def test_late_reply_ignored(target, raw, make_peer, topic_root):
    store_before = dict(target.store)
    dropped_before = target.stats.malformed_dropped
    reload = asyncio.create_task(target.reload(f"{topic_root}/#", timeout=30))
    request = await raw.next_request()

    await raw.reply(request, b"\xff garbage")
    snapshot = await asyncio.wait_for(reload, 5)
    # The reload is over, so a well-formed reply with its correlation data is late: it
    # is ignored without being counted. A reply with unknown correlation data, sent
    # after it on the same topic, is counted, and shows that the late one was handled.
    await raw.reply(request, chunk(0, [entry(f"{topic_root}/late")], 1))
    await raw.reply(request, chunk(0, [], 0), correlation_data=b"marker")
    await wait_until(
        lambda: target.stats.malformed_dropped == dropped_before + 2, "target drops both malformed messages"
    )

    assert snapshot.missing == {raw.client_id}
    assert f"{topic_root}/late" not in target.store
    assert dict(target.store) == store_before
    await check_still_works(target, raw, make_peer, topic_root)
