"""Shared pieces of the benchmarks: the broker, results, raw client helpers and timing."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage

from tests.broker import CONFIG_DIR, Mosquitto

# The stock configuration of the test suite; Mosquitto() appends "listener <port> 127.0.0.1".
BROKER_CONFIG = "mosquitto.conf"

# Stop waiting for messages when none arrived for this long (QoS 0 messages can be dropped).
IDLE_TIMEOUT = 2.0


class NotAvailable(Exception):
    """A benchmark that cannot run yet; the reason is recorded as a skip."""


@dataclass
class Sample:
    """One measured transfer: how many messages arrived and how long it took, in seconds."""

    sent: int
    received: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Result:
    """One benchmark cell: a scenario measured for one implementation."""

    group: str
    scenario: str
    implementation: str
    unit: str
    value: float | None = None
    runs: list[float] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def broker_config_text() -> str:
    """Return the broker configuration file as Mosquitto reads it, without the listener line."""
    return (CONFIG_DIR / BROKER_CONFIG).read_text()


def start_broker() -> Mosquitto:
    return Mosquitto(BROKER_CONFIG).start()


def unique_topic(name: str) -> str:
    return f"bench/{uuid.uuid4().hex[:10]}/{name}"


def client_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def payload_of(size: int) -> bytes:
    """Return ``size`` bytes that do not repeat within 256 bytes, so nothing compresses them away."""
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class ReceiveCounter:
    """Counts received messages, remembers when the last one arrived and wakes a waiter at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.last = 0.0
        self.done = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        self.last = time.perf_counter()
        if self.count >= self.target:
            self.done.set()

    async def wait(self, deadline: float) -> None:
        """Wait until the target is reached, no message arrived for IDLE_TIMEOUT seconds, or ``deadline`` passes."""
        seen = -1
        while not self.done.is_set() and time.perf_counter() < deadline:
            if self.count == seen:
                return
            seen = self.count
            try:
                await asyncio.wait_for(self.done.wait(), IDLE_TIMEOUT)
            except asyncio.TimeoutError:
                continue


class AckWindow(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight store with a semaphore released on every PUBACK.

    gmqtt raises OverflowError when a new packet id is requested while the broker's
    Receive Maximum is used up, so a raw gmqtt publisher at QoS 1 acquires a slot first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.slots = asyncio.Semaphore(1)

    def resize(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)

    def remove_message_by_mid(self, mid: int) -> None:
        if mid in self._messages:
            self.slots.release()
        super().remove_message_by_mid(mid)


@dataclass
class RawGmqtt:
    """A connected raw gmqtt client and its QoS 1 window."""

    client: Any
    window: AckWindow
    receive_maximum: int


async def connect_gmqtt(host: str, port: int, on_message: Any = None) -> RawGmqtt:
    """Connect a plain gmqtt 0.8 client with MQTT v5 and a PUBACK window of Receive Maximum - 2 slots.

    Receive Maximum - 2 is the window mnemoq5 uses, so both publishers keep the same
    number of QoS 1 messages in flight.
    """
    window = AckWindow()
    client = gmqtt.Client(client_id("gm"), persistent_storage=window)
    connack: dict[str, Any] = {}

    def on_connect(client: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
        connack.update(properties)

    client.on_connect = on_connect
    if on_message is not None:
        client.on_message = on_message
    await client.connect(host, port, version=MQTTv50)
    receive_maximum = connack.get("receive_maximum", [65_535])[0]
    window.resize(max(1, receive_maximum - 2))
    return RawGmqtt(client, window, receive_maximum)


async def subscribe_gmqtt(raw: RawGmqtt, topic: str, qos: int) -> None:
    """Subscribe and wait for SUBACK."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_subscribe(client: Any, mid: int, granted: Any, properties: Any) -> None:
        if not future.done():
            future.set_result(None)

    raw.client.on_subscribe = on_subscribe
    raw.client.subscribe(gmqtt.Subscription(topic, qos=qos))
    await asyncio.wait_for(future, 10)


def results_dir() -> Path:
    return Path(__file__).parent / "results"
