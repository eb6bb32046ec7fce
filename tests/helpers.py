"""Helpers shared by the test modules: polling, message collection and a paho-mqtt client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mnemoq5 import Message, MnemoQ

# Seconds a PahoPeer waits for CONNACK, SUBACK, PUBACK or a message.
PAHO_TIMEOUT = 5.0


async def wait_until(condition: Callable[[], bool], description: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` every 20 ms until it returns true, or raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{description} did not hold within {timeout} s")
        await asyncio.sleep(0.02)


async def messages_until(client: MnemoQ, topic: str, timeout: float = 10.0) -> list[Message]:
    """Return the messages of ``client`` up to and including the first one on ``topic``."""

    async def read() -> list[Message]:
        received: list[Message] = []
        async for message in client.messages():
            received.append(message)
            if message.topic == topic:
                break
        return received

    return await asyncio.wait_for(read(), timeout)


def user_properties_of(message: paho.MQTTMessage) -> list[tuple[str, str]]:
    return list(getattr(message.properties, "UserProperty", []))


class PahoPeer:
    """An independent paho-mqtt client, MQTT v5 or 3.1.1, whose network loop runs in its own thread.

    Callbacks run in paho's thread and hand their results to the event loop with
    call_soon_threadsafe, so tests await them without blocking the MnemoQ clients that
    share the loop.
    """

    def __init__(self, host: str, port: int, *, v5: bool = True) -> None:
        self._host = host
        self._port = port
        self._v5 = v5
        self._loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[int] = self._loop.create_future()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self.client_id = "paho-" + uuid.uuid4().hex[:12]
        protocol = paho.MQTTv5 if v5 else paho.MQTTv311
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # paho's thread --------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self._loop.call_soon_threadsafe(self._resolve, self._connected, reason.value)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: Any, props: object) -> None:
        self._loop.call_soon_threadsafe(self._resolve_ack, mid, [reason.value for reason in reasons])

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        self._loop.call_soon_threadsafe(self._resolve_ack, mid, reason.value)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    # event loop thread ----------------------------------------------------

    @staticmethod
    def _resolve(future: asyncio.Future[Any], value: object) -> None:
        if not future.done():
            future.set_result(value)

    def _resolve_ack(self, mid: int, value: object) -> None:
        future = self._acks.pop(mid, None)
        if future is not None:
            self._resolve(future, value)

    def _expect_ack(self, mid: int) -> asyncio.Future[Any]:
        # The acknowledgement is handed over with call_soon_threadsafe, so it runs after
        # this synchronous registration even when paho receives it first.
        future: asyncio.Future[Any] = self._loop.create_future()
        self._acks[mid] = future
        return future

    async def start(self) -> PahoPeer:
        if self._v5:
            self._client.connect(self._host, self._port, keepalive=30, clean_start=True)
        else:
            self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        reason = await asyncio.wait_for(self._connected, PAHO_TIMEOUT)
        assert reason == 0, f"paho connect refused with reason code {reason}"
        return self

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS
        assert mid is not None
        reasons = await asyncio.wait_for(self._expect_ack(mid), PAHO_TIMEOUT)
        assert reasons == [qos], f"paho subscription {topic_filter!r} refused: {reasons}"

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        """Publish ``payload`` and, at QoS 1 or 2, wait for the broker's acknowledgement."""
        properties = None
        if user_properties:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(user_properties)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == paho.MQTT_ERR_SUCCESS
        acknowledged = self._expect_ack(info.mid)
        if qos > 0:
            await asyncio.wait_for(acknowledged, PAHO_TIMEOUT)

    async def next_message(self, timeout: float = PAHO_TIMEOUT) -> paho.MQTTMessage:
        return await asyncio.wait_for(self.messages.get(), timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
