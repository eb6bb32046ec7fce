"""Publish-to-receive throughput: one publisher to one subscriber through Mosquitto.

Each Python measurement runs publisher and subscriber in one process, so both share
one core and the broker has the other. The clock starts before the first publish and
stops when the subscriber receives the last message. The rate counts received
messages only, and the messages lost at QoS 0 are recorded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mnemoq5 import MnemoQ

from ._common import (
    IDLE_TIMEOUT,
    ReceiveCounter,
    Sample,
    client_id,
    connect_gmqtt,
    payload_of,
    subscribe_gmqtt,
    unique_topic,
)

# Asyncio publishers yield to the event loop after this many QoS 0 messages, so the
# subscriber in the same loop drains its socket while the publisher sends.
YIELD_EVERY = 16


def _deadline(count: int, size: int) -> float:
    # Generous: 20 s plus 10 s per 100 MB.
    return time.perf_counter() + 20 + 10 * count * size / 100e6


async def mnemoq5_transfer(host: str, port: int, size: int, qos: int, count: int) -> Sample:
    topic = unique_topic("throughput")
    payload = payload_of(size)
    counter = ReceiveCounter(count)
    async with MnemoQ(host, port) as publisher, MnemoQ(host, port) as subscriber:
        await subscriber.subscribe(topic, qos=qos)

        async def consume() -> None:
            async for _message in subscriber.messages():
                counter.add()
                if counter.done.is_set():
                    return

        consumer = asyncio.create_task(consume())
        start = time.perf_counter()
        for index in range(count):
            await publisher.publish(topic, payload, qos=qos)
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await counter.wait(_deadline(count, size))
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    return Sample(count, counter.count, (counter.last or time.perf_counter()) - start)


async def gmqtt_transfer(host: str, port: int, size: int, qos: int, count: int) -> Sample:
    topic = unique_topic("throughput")
    payload = payload_of(size)
    counter = ReceiveCounter(count)

    def on_message(client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        counter.add()
        return 0

    publisher = await connect_gmqtt(host, port)
    subscriber = await connect_gmqtt(host, port, on_message)
    try:
        await subscribe_gmqtt(subscriber, topic, qos)
        start = time.perf_counter()
        for index in range(count):
            if qos > 0:
                await publisher.window.slots.acquire()
            publisher.client.publish(topic, payload, qos=qos)
            if qos == 0 and index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await counter.wait(_deadline(count, size))
    finally:
        await publisher.client.disconnect()
        await subscriber.client.disconnect()
    return Sample(count, counter.count, (counter.last or time.perf_counter()) - start)


def paho_transfer(host: str, port: int, size: int, qos: int, count: int) -> Sample:
    """paho-mqtt 2.x with MQTT v5, each client with its own network thread (loop_start)."""
    topic = unique_topic("throughput")
    payload = payload_of(size)
    received = 0
    last = 0.0
    done = threading.Event()
    subscribed = threading.Event()
    connected = [threading.Event(), threading.Event()]

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        nonlocal received, last
        received += 1
        last = time.perf_counter()
        if received >= count:
            done.set()

    clients = []
    for index in range(2):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id("pa"), protocol=paho.MQTTv5)
        client.on_connect = lambda c, u, f, rc, p, event=connected[index]: event.set()
        client.connect(host, port)
        client.loop_start()
        clients.append(client)
    publisher, subscriber = clients
    try:
        for event in connected:
            if not event.wait(10):
                raise TimeoutError("paho-mqtt did not connect within 10 s")
        subscriber.on_message = on_message
        subscriber.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        subscriber.subscribe(topic, qos=qos)
        if not subscribed.wait(10):
            raise TimeoutError("paho-mqtt got no SUBACK within 10 s")
        start = time.perf_counter()
        for _ in range(count):
            publisher.publish(topic, payload, qos=qos)
        _wait_thread_counter(done, lambda: received, _deadline(count, size))
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
    return Sample(count, received, (last or time.perf_counter()) - start)


def _wait_thread_counter(done: threading.Event, read_count: object, deadline: float) -> None:
    seen = -1
    while not done.is_set() and time.perf_counter() < deadline:
        current = read_count()  # type: ignore[operator]
        if current == seen:
            return
        seen = current
        done.wait(IDLE_TIMEOUT)


# mosquitto_pub -l reads one message per stdin line and keeps up to 20 QoS 1 messages
# in flight, while --repeat was slower for 100-byte messages at QoS 1 (7,800 against
# 17,600 msg/s on the 2-core benchmark machine). Reading long lines was slower for
# 64 KiB and larger payloads, which therefore use -f with --repeat.
LINE_MODE_MAX_SIZE = 1024


def mosquitto_cli_transfer(host: str, port: int, size: int, qos: int, count: int) -> Sample:
    """mosquitto_pub -> mosquitto_sub -C COUNT, timed at the subscriber.

    Payloads up to LINE_MODE_MAX_SIZE bytes go through ``mosquitto_pub -l`` with one
    line per message; larger ones through ``mosquitto_pub -f FILE --repeat COUNT``.
    The clock starts when mosquitto_sub has its SUBACK and stops when it exits after
    the last message, so it includes the start-up of the mosquitto_pub process.
    """
    topic = unique_topic("throughput")
    with tempfile.TemporaryDirectory(prefix="mnemoq5-bench-") as directory:
        payload_path = Path(directory) / "payload"
        common = ["-h", host, "-p", str(port), "-t", topic, "-q", str(qos), "-V", "mqttv5"]
        if size <= LINE_MODE_MAX_SIZE:
            payload_path.write_bytes((b"a" * size + b"\n") * count)
            publish_command = ["mosquitto_pub", *common, "-l"]
        else:
            payload_path.write_bytes(payload_of(size))
            publish_command = ["mosquitto_pub", *common, "-f", str(payload_path), "--repeat", str(count)]
        output_path = Path(directory) / "sub.out"
        with open(output_path, "wb") as output:
            subscriber = subprocess.Popen(
                # stdbuf makes mosquitto_sub flush each debug line, so its SUBACK line is seen at once.
                ["stdbuf", "-oL", "mosquitto_sub", *common, "-C", str(count), "-d", "-N", "-F", ""],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_text(output_path, b"received SUBACK", 10.0)
            with open(payload_path, "rb") as stdin:
                start = time.perf_counter()
                publisher = subprocess.Popen(
                    publish_command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            end = _wait_for_exit(subscriber, output_path, _deadline(count, size))
            publisher.wait(timeout=30)
        finally:
            for process in (subscriber,):
                if process.poll() is None:
                    process.kill()
                    process.wait()
        received = output_path.read_bytes().count(b"received PUBLISH")
    return Sample(count, received, end - start)


def _wait_for_text(path: Path, text: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_bytes():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text.decode()!r} did not appear in {path} within {timeout} s")
        time.sleep(0.005)


def _wait_for_exit(process: subprocess.Popen[bytes], output_path: Path, deadline: float) -> float:
    """Return when ``process`` exited, or when its output stopped growing for IDLE_TIMEOUT seconds (lost messages)."""
    exited = threading.Event()
    end = [0.0]

    def watch() -> None:
        process.wait()
        end[0] = time.perf_counter()
        exited.set()

    threading.Thread(target=watch, daemon=True).start()
    size = -1
    idle_since = time.perf_counter()
    while not exited.wait(0.5):
        current = os.path.getsize(output_path)
        now = time.perf_counter()
        if current != size:
            size, idle_since = current, now
        elif now - idle_since > IDLE_TIMEOUT or now > deadline:
            return idle_since
    return end[0]
