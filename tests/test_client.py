"""Conformance of MnemoQ against a real Mosquitto, checked by an independent paho-mqtt v5 client."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.package import PublishPacket

from mnemoq5 import (
    ConnectError,
    ConnectionState,
    InvalidArgumentError,
    InvalidPropertyError,
    InvalidTopicError,
    MnemoQ,
    PacketTooLargeError,
)
from mnemoq5._envelope import KEY_ID, KEY_KIND, KEY_STAMP, Kind, encode_v5
from mnemoq5._packet import publish_packet_size
from mnemoq5._stamp import Stamp

from .broker import LOOPBACK, Mosquitto, free_port
from .conftest import next_message
from .helpers import PahoPeer, user_properties_of, wait_until

TIMEOUT = 5.0


APPLICATION_PROPERTIES = [
    ("unit", "C"),
    ("unit", ""),
    ("", "empty key"),
    ("unit", "C"),
    ("mnemoq5", "not reserved"),
    ("z\u00fcrich", "\u6771\u4eac \U0001f600"),
]


# -- No Local and identity ------------------------------------------------------


async def test_nolocal_own_publish(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    client = await make_client()
    other = await make_client()
    observer = await paho_peer()
    await client.subscribe(topic, qos=1)
    await observer.subscribe(topic)
    own_before = client.stats.own_dropped

    await client.publish(topic, b"own", qos=1)
    # The observer received the value, so the broker has routed it to every subscriber.
    assert (await observer.next_message()).payload == b"own"
    await other.publish(topic, b"other", qos=1)

    message = await next_message(client)
    assert message.payload == b"other"
    assert message.sender == other.client_id
    # Nothing reached the identity check: the broker applied No Local.
    assert client.stats.own_dropped == own_before


async def test_own_retained_dropped(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    client = await make_client()
    observer = await paho_peer()
    await observer.subscribe(topic)
    await client.publish(topic, b"own", qos=1, retain=True)
    assert (await observer.next_message()).payload == b"own"
    own_before = client.stats.own_dropped

    # Mosquitto sends the retained message on subscribe although No Local is set.
    await client.subscribe(topic, qos=1)
    await observer.publish(topic, b"other")

    message = await next_message(client)
    assert message.payload == b"other"
    assert message.sender is None
    assert client.stats.own_dropped == own_before + 1


# -- the wire format as an independent client sees it --------------------------------


async def test_wire_format_seen_by_paho(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/raw"
    payload = bytes(range(256)) + b"\x00\x00"
    client = await make_client()
    observer = await paho_peer()
    await observer.subscribe(topic)

    entry = await client.publish(topic, payload, qos=1, user_properties=APPLICATION_PROPERTIES)
    received = await observer.next_message()

    assert received.topic == topic
    assert received.payload == payload
    assert received.qos == 1
    assert not received.retain
    assert user_properties_of(received) == [
        (KEY_ID, client.client_id),
        (KEY_KIND, "data"),
        (KEY_STAMP, entry.stamp.to_text()),
        *APPLICATION_PROPERTIES,
    ]


async def test_wire_str_payload_utf8(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/text"
    client = await make_client()
    observer = await paho_peer()
    await observer.subscribe(topic)

    entry = await client.publish(topic, "h\u00e9llo \U0001f600", qos=1)
    received = await observer.next_message()
    assert received.payload == "h\u00e9llo \U0001f600".encode()
    assert entry.payload == received.payload


async def test_plain_publisher_delivered(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/plain"
    client = await make_client()
    publisher = await paho_peer()
    await client.subscribe(topic, qos=1)

    await publisher.publish(topic, b"\xff\x00plain", user_properties=APPLICATION_PROPERTIES)
    message = await next_message(client)
    assert message.topic == topic
    assert message.payload == b"\xff\x00plain"
    assert message.sender is None
    assert message.stamp is None
    assert message.user_properties == APPLICATION_PROPERTIES
    assert not message.replayed


async def test_plain_publisher_without_properties(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/plain"
    client = await make_client()
    publisher = await paho_peer()
    await client.subscribe(topic, qos=1)

    await publisher.publish(topic, b"")
    message = await next_message(client)
    assert message.payload == b""
    assert message.sender is None
    assert message.user_properties == []


async def test_properties_kept_in_order(make_client: Any, topic_root: str) -> None:
    topic = f"{topic_root}/ordered"
    publisher = await make_client()
    subscriber = await make_client()
    await subscriber.subscribe(topic, qos=1)

    entry = await publisher.publish(topic, b"v", qos=1, user_properties=APPLICATION_PROPERTIES)
    message = await next_message(subscriber)
    assert message.user_properties == APPLICATION_PROPERTIES
    assert message.sender == publisher.client_id
    assert message.stamp == entry.stamp
    assert entry.user_properties == tuple(APPLICATION_PROPERTIES)


async def test_malformed_envelope_dropped(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/malformed"
    client = await make_client()
    publisher = await paho_peer()
    await client.subscribe(topic, qos=1)
    malformed_before = client.stats.malformed_dropped

    duplicate_id = [(KEY_ID, "peer"), (KEY_ID, "peer"), (KEY_KIND, "data"), (KEY_STAMP, "1:0")]
    await publisher.publish(topic, b"bad", user_properties=duplicate_id)
    await publisher.publish(topic, b"good", user_properties=[("k", "v")])

    message = await next_message(client)
    assert message.payload == b"good"
    assert client.stats.malformed_dropped == malformed_before + 1


# -- overlapping subscriptions ------------------------------------------------------


async def test_overlapping_delivered_once(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    client = await make_client()
    publisher = await make_client()
    plain_publisher = await paho_peer()
    await client.subscribe(f"{topic_root}/x/#", qos=1)
    await client.subscribe(f"{topic_root}/x/y", qos=1)
    iterator = client.messages().__aiter__()

    async def received() -> bytes:
        message = await asyncio.wait_for(iterator.__anext__(), TIMEOUT)
        return message.payload

    # Stamped values: subscription identifiers and stamps both drop the second copy.
    await publisher.publish(f"{topic_root}/x/y", b"A", qos=1)
    await publisher.publish(f"{topic_root}/x/y", b"B", qos=1)
    assert await received() == b"A"
    assert await received() == b"B"

    # Plain values have no stamp: only the subscription identifier drops the copy.
    await plain_publisher.publish(f"{topic_root}/x/y", b"C")
    await plain_publisher.publish(f"{topic_root}/x/y", b"D")
    assert await received() == b"C"
    assert await received() == b"D"

    # A value that matches one subscription only arrives after every earlier copy.
    await plain_publisher.publish(f"{topic_root}/x/z", b"E")
    assert await received() == b"E"


# -- rejected before sending ----------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "rule"),
    [("/+/x", "MQTT-3.3.2-2"), ("/#", "MQTT-3.3.2-2"), ("/a\x00b", "MQTT-1.5.4-2"), ("/\ud800", "MQTT-1.5.4-1")],
    ids=["plus", "hash", "null", "surrogate"],
)
async def test_publish_invalid_topic(
    make_client: Any, paho_peer: Any, topic_root: str, suffix: str, rule: str
) -> None:
    client = await make_client()
    observer = await paho_peer()
    await observer.subscribe(f"{topic_root}/#")
    invalid = topic_root + suffix

    with pytest.raises(InvalidTopicError) as raised:
        await client.publish(invalid, b"v", qos=1)
    assert raised.value.value == invalid
    assert rule in raised.value.rule
    assert invalid not in client.store

    # The connection survived, so nothing invalid reached the broker.
    await client.publish(f"{topic_root}/valid", b"after", qos=1)
    received = await observer.next_message()
    assert received.topic == f"{topic_root}/valid"
    assert client.state is ConnectionState.CONNECTED
    assert client.stats.reconnects == 0


async def test_publish_empty_topic(make_client: Any) -> None:
    client = await make_client()
    with pytest.raises(InvalidTopicError) as raised:
        await client.publish("", b"v")
    assert raised.value.value == ""
    assert "MQTT-4.7.3-1" in raised.value.rule


@pytest.mark.parametrize(
    ("suffix", "rule"),
    [("/#/x", "MQTT-4.7.1-1"), ("/a#", "MQTT-4.7.1-1"), ("/a+", "MQTT-4.7.1-2"), ("/\x00", "MQTT-1.5.4-2")],
    ids=["hash-not-last", "hash-in-level", "plus-in-level", "null"],
)
async def test_subscribe_invalid_filter(make_client: Any, topic_root: str, suffix: str, rule: str) -> None:
    client = await make_client()
    invalid = topic_root + suffix
    with pytest.raises(InvalidTopicError) as raised:
        await client.subscribe(invalid)
    assert raised.value.value == invalid
    assert rule in raised.value.rule
    assert repr(invalid) in str(raised.value)
    assert client.state is ConnectionState.CONNECTED


@pytest.mark.parametrize("key", [KEY_ID, KEY_KIND, KEY_STAMP, "mnemoq5:other"])
async def test_publish_reserved_key(make_client: Any, paho_peer: Any, topic_root: str, key: str) -> None:
    topic = f"{topic_root}/reserved"
    client = await make_client()
    observer = await paho_peer()
    await observer.subscribe(topic)

    with pytest.raises(InvalidPropertyError) as raised:
        await client.publish(topic, b"bad", qos=1, user_properties=[("ok", "1"), (key, "x")])
    assert repr(key) in str(raised.value)
    assert topic not in client.store

    await client.publish(topic, b"good", qos=1)
    assert (await observer.next_message()).payload == b"good"


async def test_shared_subscription_rejected(make_client: Any, topic_root: str) -> None:
    client = await make_client()
    shared = f"$share/group/{topic_root}/#"
    with pytest.raises(InvalidArgumentError) as raised:
        await client.subscribe(shared)
    assert shared in str(raised.value)
    assert "MQTT-3.8.3-4" in str(raised.value)


# -- connection ---------------------------------------------------------------------------


async def test_connect_failure_names_address() -> None:
    port = free_port()
    client = MnemoQ(host=LOOPBACK, port=port, connect_timeout=3)
    with pytest.raises(ConnectError) as raised:
        await client.connect()
    assert raised.value.host == LOOPBACK
    assert raised.value.port == port
    assert f"{LOOPBACK}:{port}" in str(raised.value)
    assert client.state is ConnectionState.NEW


async def test_client_id_generated() -> None:
    client = MnemoQ(host=LOOPBACK, port=1)
    # Every server must accept 1 to 23 characters of [0-9a-zA-Z] [MQTT-3.1.3-5].
    assert len(client.client_id) == 23
    assert client.client_id.isascii()
    assert client.client_id.isalnum()


@pytest.mark.parametrize("client_id", ["", "a/b", "a+b", "a#b", "a\x00b", "\ud800", 5])
def test_client_id_invalid(client_id: object) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        MnemoQ(host=LOOPBACK, port=1, client_id=client_id)  # type: ignore[arg-type]
    assert "client_id" in str(raised.value)


async def test_client_id_long(make_client: Any, topic_root: str) -> None:
    # Longer than the 23 characters every server must accept; Mosquitto 2.0 accepts it.
    client_id = "long-" + "x" * 100
    client = await make_client(client_id=client_id)
    assert client.client_id == client_id
    assert client.state is ConnectionState.CONNECTED


async def test_client_id_non_ascii(broker: Mosquitto) -> None:
    client = MnemoQ(host=broker.host, port=broker.port, client_id="z\u00fcrich", connect_timeout=3)
    try:
        await client.connect()
        assert client.state is ConnectionState.CONNECTED
    finally:
        await client.disconnect()


# -- store ----------------------------------------------------------------------------------


async def test_store_view_read_only(make_client: Any, topic_root: str) -> None:
    topic = f"{topic_root}/stored"
    publisher = await make_client()
    subscriber = await make_client()
    await subscriber.subscribe(topic, qos=1)

    entry = await publisher.publish(topic, b"v1", qos=1, user_properties=[("k", "v")])
    view = publisher.store
    assert view[topic] == entry
    assert view[topic].stamp == entry.stamp
    assert view[topic].user_properties == (("k", "v"),)
    assert list(view) == [topic]
    assert len(view) == 1
    with pytest.raises(TypeError):
        view[topic] = entry  # type: ignore[index]
    with pytest.raises(TypeError):
        del view[topic]  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        view[topic].payload = b"changed"  # type: ignore[misc]
    assert not hasattr(view, "put")

    # The receiver gets the stamp that the publisher stored.
    message = await next_message(subscriber)
    assert message.stamp == entry.stamp


async def test_store_newer_stamp_replaces(make_client: Any, topic_root: str) -> None:
    topic = f"{topic_root}/stored"
    client = await make_client()
    first = await client.publish(topic, b"v1")
    second = await client.publish(topic, b"v2")
    assert second.stamp > first.stamp
    assert client.store[topic].payload == b"v2"
    assert client.store[topic].stamp == second.stamp


# -- packet size -------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("payload_size", [0, 100, 20_000])
def test_packet_size_matches_gmqtt(qos: int, payload_size: int) -> None:
    topic = "caf\u00e9/\U0001f600/t"
    writer = "writer-\u00fc"
    properties = encode_v5(writer, Kind.DATA, Stamp(1_700_000_000_000, 12, writer), (("k", "\u6771"),))
    message = gmqtt.Message(topic, b"p" * payload_size, qos=qos, user_property=properties)
    # build_package reads only the protocol version and the packet id generator.
    protocol = SimpleNamespace(proto_ver=5, id_generator=SimpleNamespace(next_id=lambda: 1))
    _, packet = PublishPacket.build_package(message, protocol)
    assert publish_packet_size(topic, payload_size, qos, properties) == len(packet)


async def test_packet_too_large_keeps_value(topic_root: str) -> None:
    topic = f"{topic_root}/big"
    with Mosquitto(config="mosquitto-small-packets.conf") as small:
        client = MnemoQ(host=small.host, port=small.port)
        observer = PahoPeer(small.host, small.port)
        await client.connect()
        try:
            await observer.start()
            await observer.subscribe(topic)
            limits = client.broker_limits
            assert limits is not None
            assert limits.maximum_packet_size == 4096

            previous = await client.publish(topic, b"small", qos=1)
            assert (await observer.next_message()).payload == b"small"

            with pytest.raises(PacketTooLargeError) as raised:
                await client.publish(topic, b"x" * 5000, qos=1)
            assert "4096" in str(raised.value)
            assert client.store[topic] == previous
            assert client.state is ConnectionState.CONNECTED

            # A value just under the limit still goes through on the same connection.
            fitting = b"y" * 3900
            entry = await client.publish(topic, fitting, qos=1)
            size = publish_packet_size(topic, len(fitting), 1, encode_v5(client.client_id, Kind.DATA, entry.stamp))
            assert size <= 4096
            assert (await observer.next_message()).payload == fitting
        finally:
            observer.stop()
            await client.disconnect()


# -- offline publishing ----------------------------------------------------------------------------


async def test_publish_while_disconnected(own_broker: Mosquitto, topic_root: str) -> None:
    topic = f"{topic_root}/offline"
    client = MnemoQ(
        host=own_broker.host, port=own_broker.port, reconnect_min_delay=0.05, reconnect_max_delay=0.2
    )
    await client.connect()
    observer: PahoPeer | None = None
    try:
        own_broker.kill()
        await wait_until(lambda: client.state is ConnectionState.RECONNECTING, "state RECONNECTING")

        entry = await client.publish(topic, b"offline", qos=1, retain=True, user_properties=[("k", "v")])
        assert client.store[topic] == entry

        own_broker.start()
        await wait_until(lambda: client.state is ConnectionState.CONNECTED, "state CONNECTED")

        # The broker restarted empty, so a retained or live copy can only come from the resend.
        observer = PahoPeer(own_broker.host, own_broker.port)
        await observer.start()
        await observer.subscribe(topic)
        received = await observer.next_message()
        assert received.payload == b"offline"
        assert user_properties_of(received) == [
            (KEY_ID, client.client_id),
            (KEY_KIND, "data"),
            (KEY_STAMP, entry.stamp.to_text()),
            ("k", "v"),
        ]
        assert client.stats.reconnects == 1
    finally:
        if observer is not None:
            observer.stop()
        await client.disconnect()
