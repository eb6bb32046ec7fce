"""The amqtt fixture, and how amqtt 0.12 treats what an MQTT v5 client would send.

The compat client depends on two of these facts: amqtt refuses a v5 CONNECT with
CONNACK 0x01, and it accepts a 3.1.1 SUBSCRIBE with the NoLocal bit set but then
delivers nothing on that subscription.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator

import gmqtt
import paho.mqtt.client as paho
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from .amqtt_broker import Amqtt

TIMEOUT = 5.0

# MQTT 3.1.1 control packet types, section 2.2.1, shifted into the fixed header byte.
CONNACK = 0x20
PUBLISH = 0x30
SUBACK = 0x90
PINGRESP = 0xD0


@pytest.fixture(scope="module")
def amqtt_broker() -> Iterator[Amqtt]:
    """One private amqtt broker for the tests of this module that do not stop it."""
    with Amqtt() as instance:
        yield instance


def encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def packet(first_byte: int, body: bytes) -> bytes:
    """Frame ``body`` with a fixed header; the bodies here stay below 128 bytes."""
    assert len(body) < 128
    return bytes([first_byte, len(body)]) + body


def connect_packet(client_id: str, protocol_level: int) -> bytes:
    # Protocol name "MQTT", level, Clean Session flag, keep alive 60 s.
    variable_header = encode_string("MQTT") + bytes([protocol_level, 0x02]) + (60).to_bytes(2, "big")
    if protocol_level == 5:
        variable_header += b"\x00"  # empty CONNECT properties
    return packet(0x10, variable_header + encode_string(client_id))


def subscribe_packet(packet_id: int, topic_filter: str, options: int) -> bytes:
    # Fixed header flags 0010 [MQTT-3.8.1-1].
    return packet(0x82, packet_id.to_bytes(2, "big") + encode_string(topic_filter) + bytes([options]))


class RawClient:
    """A blocking MQTT client on a bare socket, to send bytes that libraries refuse to send."""

    def __init__(self, broker: Amqtt) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError(f"the broker closed the connection after {len(data)} of {size} bytes")
            data += chunk
        return data

    def read_packet(self) -> tuple[int, bytes]:
        """Return the next packet's first byte and body; raise EOFError when the broker closes."""
        first = self.read_exact(1)[0]
        size, shift = 0, 0
        for _ in range(4):
            byte = self.read_exact(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        return first, self.read_exact(size)

    def closed_by_peer(self) -> bool:
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


class PahoClient:
    """A paho-mqtt MQTT 3.1.1 client whose callbacks feed events and a message queue."""

    def __init__(self, broker: Amqtt, client_id: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        self.client.on_connect = lambda client, userdata, flags, reason, properties: self.connected.set()
        self.client.on_subscribe = lambda client, userdata, mid, reasons, properties: self.subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), f"{client_id} got no CONNACK"

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(TIMEOUT), f"no SUBACK for {topic_filter}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for_log(broker: Amqtt, text: str) -> bool:
    """Poll the broker log until it contains ``text``, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while text not in broker.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_paho_publish_receive(amqtt_broker: Amqtt, topic_root: str) -> None:
    subscriber = PahoClient(amqtt_broker, "paho-sub")
    publisher = PahoClient(amqtt_broker, "paho-pub")
    try:
        subscriber.subscribe(f"{topic_root}/#")
        publisher.client.publish(f"{topic_root}/a", b"\xffmq5 payload", qos=1)
        message = subscriber.messages.get(timeout=TIMEOUT)
    finally:
        publisher.close()
        subscriber.close()
    assert message.topic == f"{topic_root}/a"
    assert message.payload == b"\xffmq5 payload"


def test_raw_v5_connect(amqtt_broker: Amqtt) -> None:
    client = RawClient(amqtt_broker)
    try:
        client.send(connect_packet("raw-v5", protocol_level=5))
        first, body = client.read_packet()
        closed = client.closed_by_peer()
    finally:
        client.close()
    assert first == CONNACK
    # A 3.1.1 CONNACK: no session present, return code 0x01, unacceptable protocol version.
    assert body == b"\x00\x01"
    assert closed


async def test_gmqtt_v5_downgrades(amqtt_broker: Amqtt, caplog: pytest.LogCaptureFixture) -> None:
    # gmqtt 0.8 reacts to CONNACK 0x01 after a v5 CONNECT by switching the client to 3.1.1
    # and reconnecting after reconnect_delay, so connect() succeeds with MQTT 3.1.1.
    client = gmqtt.Client("gmqtt-v5")
    client.set_config({"reconnect_delay": 0})
    caplog.set_level(logging.WARNING, logger="gmqtt")
    try:
        await asyncio.wait_for(client.connect(amqtt_broker.host, amqtt_broker.port, version=MQTTv50), TIMEOUT)
        version = client._connection_state.protocol_version
    finally:
        await client.disconnect()
    assert "CONNACK: 0x1" in caplog.text
    assert version == MQTTv311


def test_subscribe_no_local_bit(amqtt_broker: Amqtt, topic_root: str) -> None:
    # MQTT 3.1.1 [MQTT-3-8.3-4]: reserved bits in the requested QoS byte make the
    # SUBSCRIBE malformed and the server must close the connection. amqtt 0.12 does not.
    no_local_topic = f"{topic_root}/no-local"
    control_topic = f"{topic_root}/control"
    client = RawClient(amqtt_broker)
    publisher = PahoClient(amqtt_broker, "paho-no-local")
    try:
        client.send(connect_packet("raw-no-local", protocol_level=4))
        connack = client.read_packet()
        client.send(subscribe_packet(1, no_local_topic, options=0x04))
        suback = client.read_packet()
        client.send(subscribe_packet(2, control_topic, options=0x00))
        control_suback = client.read_packet()

        publisher.client.publish(no_local_topic, b"dropped", qos=0)
        publisher.client.publish(control_topic, b"delivered", qos=0)
        first, body = client.read_packet()
        logged = wait_for_log(amqtt_broker, "Unexpected QOS value '4'")
    finally:
        publisher.close()
        client.close()

    assert connack == (CONNACK, b"\x00\x00")
    # The SUBACK grants "QoS 4": the options byte echoed back, not a 3.1.1 return code.
    assert suback == (SUBACK, b"\x00\x01\x04")
    assert control_suback == (SUBACK, b"\x00\x02\x00")
    # The message on the NoLocal subscription never arrives; the next one does.
    assert first == PUBLISH
    assert body == encode_string(control_topic) + b"delivered"
    assert logged, amqtt_broker.log()


def test_restart_same_port(topic_root: str) -> None:
    with Amqtt() as broker:
        broker.restart()
        client = PahoClient(broker, "paho-restart")
        try:
            client.subscribe(f"{topic_root}/#")
            client.client.publish(f"{topic_root}/a", b"after restart", qos=1)
            message = client.messages.get(timeout=TIMEOUT)
        finally:
            client.close()
    assert message.payload == b"after restart"
