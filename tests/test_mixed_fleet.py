"""MQTT v5 and compat (MQTT 3.1.1) clients together on one Mosquitto, and v5 against amqtt.

What each side receives follows spec/compat.md: a v5 client reads the compat envelope, so
it gets a compat peer's sender; a compat client gets a v5 peer's live data without
the user properties that MQTT 3.1.1 cannot carry, so with sender None. Catch-up works
both ways, because a v5 requester sends compat peers a wrapped copy of its request and
answers wrapped requests with wrapped replies, and reply entries name their writer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mnemoq5 import ConnectError, MnemoQ
from mnemoq5._compat import MAGIC, decode_compat
from mnemoq5._envelope import KEY_ID

from .broker import Mosquitto
from .conftest import next_message
from .helpers import PahoPeer
from .test_compat_client import TIMEOUT

MQTT_V311_LEVEL = 4
MQTT_V5_LEVEL = 5


class Clients:
    """Connected clients on one broker that share a control prefix, closed at teardown."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.control_prefix = f"mq5m-{uuid.uuid4().hex[:10]}"
        self.clients: list[MnemoQ] = []
        self.plain_clients: list[PahoPeer] = []

    async def v5(self, **settings: Any) -> MnemoQ:
        return await self._connect(compat=False, **settings)

    async def compat(self, **settings: Any) -> MnemoQ:
        return await self._connect(compat=True, **settings)

    async def _connect(self, **settings: Any) -> MnemoQ:
        settings.setdefault("control_prefix", self.control_prefix)
        client = MnemoQ(host=self.host, port=self.port, **settings)
        await client.connect()
        self.clients.append(client)
        return client

    async def plain(self, *, v5: bool) -> PahoPeer:
        client = await PahoPeer(self.host, self.port, v5=v5).start()
        self.plain_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.disconnect()
        for plain in self.plain_clients:
            plain.stop()


@pytest.fixture
async def clients(broker: Mosquitto) -> AsyncIterator[Clients]:
    instance = Clients(broker.host, broker.port)
    try:
        yield instance
    finally:
        await instance.close()


# -- live data ------------------------------------------------------------------


async def test_v5_reads_compat_sender(clients: Clients, topic_root: str) -> None:
    subscriber = await clients.v5()
    publisher = await clients.compat()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)
    properties = [("k", "1"), ("k", "1"), ("z", "2")]

    entry = await publisher.publish(f"{topic_root}/a", MAGIC + b"data", qos=1, user_properties=properties)
    message = await next_message(subscriber)

    assert message.payload == MAGIC + b"data"
    assert message.sender == publisher.client_id
    assert message.user_properties == properties
    assert message.stamp == entry.stamp


async def test_compat_reads_v5_without_sender(clients: Clients, topic_root: str) -> None:
    subscriber = await clients.compat()
    publisher = await clients.v5()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)

    await publisher.publish(f"{topic_root}/a", b"data", qos=1, user_properties=[("k", "1")])
    message = await next_message(subscriber)

    # MQTT 3.1.1 drops user properties, so the v5 envelope does not reach the compat client.
    assert message.payload == b"data"
    assert message.sender is None
    assert message.stamp is None
    assert message.user_properties == []
    assert message.replayed is False


# -- catch-up across modes -------------------------------------------------------


@pytest.mark.parametrize("requester_compat", [False, True], ids=["v5_requester", "compat_requester"])
async def test_reload_across_modes(clients: Clients, topic_root: str, requester_compat: bool) -> None:
    v5_peer = await clients.v5()
    compat_peer = await clients.compat()
    await v5_peer.publish(f"{topic_root}/v5", b"from v5", qos=1, user_properties=[("mode", "v5")])
    await compat_peer.publish(f"{topic_root}/compat", b"from compat", qos=1, user_properties=[("mode", "compat")])

    requester = await (clients.compat() if requester_compat else clients.v5())
    snapshot = await requester.reload(f"{topic_root}/#", timeout=TIMEOUT)

    assert snapshot.complete
    assert snapshot.answered == {v5_peer.client_id, compat_peer.client_id}
    assert snapshot[f"{topic_root}/v5"].payload == b"from v5"
    assert snapshot[f"{topic_root}/v5"].sender == v5_peer.client_id
    assert snapshot[f"{topic_root}/v5"].user_properties == [("mode", "v5")]
    assert snapshot[f"{topic_root}/compat"].payload == b"from compat"
    assert snapshot[f"{topic_root}/compat"].sender == compat_peer.client_id
    assert snapshot[f"{topic_root}/compat"].user_properties == [("mode", "compat")]


async def test_compat_catch_up_from_v5(clients: Clients, topic_root: str) -> None:
    publisher = await clients.v5()
    await publisher.publish(f"{topic_root}/a", b"A", qos=1)

    late = await clients.compat()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True, timeout=TIMEOUT)
    message = await next_message(late)

    # Replayed values carry their writer in the reply entry, so the sender is known.
    assert message.payload == b"A"
    assert message.replayed is True
    assert message.sender == publisher.client_id


# -- two protocol versions in one process ------------------------------------------


async def test_one_process_both_versions(clients: Clients, topic_root: str) -> None:
    observer = await clients.plain(v5=True)
    await observer.subscribe(f"{topic_root}/#")
    # Connect both at once: gmqtt before 0.8 kept the protocol version in process-wide state.
    compat, v5 = await asyncio.gather(clients.compat(), clients.v5())

    await v5.publish(f"{topic_root}/v5", b"v5 payload", qos=1)
    from_v5 = await observer.next_message()
    await compat.publish(f"{topic_root}/compat", b"compat payload", qos=1)
    from_compat = await observer.next_message()

    assert v5.broker_limits is not None
    assert v5.broker_limits.protocol_version == MQTT_V5_LEVEL
    assert compat.broker_limits is not None
    assert compat.broker_limits.protocol_version == MQTT_V311_LEVEL
    # The v5 connection sent the envelope in user properties and the payload unchanged.
    assert from_v5.payload == b"v5 payload"
    assert dict(from_v5.properties.UserProperty)[KEY_ID] == v5.client_id
    # The 3.1.1 connection sent no properties, so the envelope is in the payload.
    assert not hasattr(from_compat.properties, "UserProperty")
    decoded = decode_compat(from_compat.payload)
    assert decoded is not None
    assert decoded[0].sender == compat.client_id
    assert decoded[1] == b"compat payload"


async def test_compat_then_v5_in_one_process(clients: Clients, topic_root: str) -> None:
    compat = await clients.compat()
    v5 = await clients.v5()
    compat_subscriber = await clients.compat()
    await compat_subscriber.subscribe(f"{topic_root}/#", qos=1)

    await v5.publish(f"{topic_root}/v5", b"x", qos=1)
    from_v5 = await next_message(compat_subscriber)
    await compat.publish(f"{topic_root}/compat", b"y", qos=1)
    from_compat = await next_message(compat_subscriber)

    assert v5.broker_limits is not None
    assert v5.broker_limits.protocol_version == MQTT_V5_LEVEL
    assert from_v5.sender is None
    assert from_compat.sender == compat.client_id


# -- v5 against an MQTT 3.1.1-only broker ----------------------------------------


async def test_v5_against_amqtt_fails(session_amqtt: Any, broker: Mosquitto) -> None:
    client = MnemoQ(host=session_amqtt.host, port=session_amqtt.port, connect_timeout=2)

    with pytest.raises(ConnectError) as raised:
        await client.connect()

    assert "compat=True" in str(raised.value)
    # The failed attempt leaves the process able to use both versions.
    compat = MnemoQ(host=session_amqtt.host, port=session_amqtt.port, compat=True)
    v5 = MnemoQ(host=broker.host, port=broker.port)
    await compat.connect()
    await v5.connect()
    try:
        assert compat.broker_limits is not None
        assert compat.broker_limits.protocol_version == MQTT_V311_LEVEL
        assert v5.broker_limits is not None
        assert v5.broker_limits.protocol_version == MQTT_V5_LEVEL
    finally:
        await compat.disconnect()
        await v5.disconnect()
