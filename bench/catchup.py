"""Catch-up benchmarks, which need ``MnemoQ.reload()``.

``reload(topic_filter, timeout=...)`` returns a Mapping of topic to Message with a
``complete`` attribute. While MnemoQ has no ``reload``, every function here raises
NotAvailable and the run records a skip with that reason.

- Catch-up time: N topics held by 1 or 10 live mnemoq5 peers, fetched by a late
  client with ``reload``, against the replay of N retained messages to a late raw
  gmqtt subscriber and to ``mosquitto_sub``.
- Completeness: the share of N topics that ``reload`` returns on the stock Mosquitto
  configuration (max_queued_messages 1000, max_inflight_messages 20).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from mnemoq5 import MnemoQ

from ._common import NotAvailable, ReceiveCounter, connect_gmqtt, payload_of, subscribe_gmqtt, unique_topic

PAYLOAD_SIZE = 100
RELOAD_TIMEOUT = 120.0
REPLAY_CLI_TIMEOUT = 10


def require_reload() -> None:
    if not hasattr(MnemoQ, "reload"):
        raise NotAvailable("not available yet: MnemoQ.reload() does not exist in this version of mnemoq5")


async def _fill_peers(host: str, port: int, root: str, topics: int, peers: int) -> list[MnemoQ]:
    """Connect ``peers`` clients and store ``topics`` topics under ``root``, split evenly among them."""
    payload = payload_of(PAYLOAD_SIZE)
    clients = []
    for _ in range(peers):
        client = MnemoQ(host, port)
        await client.connect()
        clients.append(client)
    for index in range(topics):
        await clients[index % peers].publish(f"{root}/{index % peers}/{index}", payload)
        if index % 64 == 0:
            await asyncio.sleep(0)
    return clients


async def mnemoq5_reload(host: str, port: int, topics: int, peers: int) -> tuple[float, int, bool | None]:
    """Return (seconds, topics returned, the result's ``complete`` flag) for one reload."""
    require_reload()
    root = unique_topic("catchup")
    clients = await _fill_peers(host, port, root, topics, peers)
    try:
        async with MnemoQ(host, port) as late:
            start = time.perf_counter()
            result: Mapping[str, Any] = await late.reload(f"{root}/#", timeout=RELOAD_TIMEOUT)
            elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            await client.disconnect()
    return elapsed, len(result), getattr(result, "complete", None)


async def _store_retained(host: str, port: int, root: str, topics: int) -> None:
    """Publish ``topics`` retained messages at QoS 1, so each is stored by the broker before this returns."""
    payload = payload_of(PAYLOAD_SIZE)
    publisher = await connect_gmqtt(host, port)
    try:
        for index in range(topics):
            await publisher.window.slots.acquire()
            publisher.client.publish(f"{root}/{index}", payload, qos=1, retain=True)
        await asyncio.wait_for(publisher.window.wait_empty(), 60)
    finally:
        await publisher.client.disconnect()


async def gmqtt_retained_replay(host: str, port: int, topics: int) -> tuple[float, int]:
    """Return (seconds from SUBSCRIBE to the last retained message, messages received)."""
    require_reload()
    root = unique_topic("retained")
    await _store_retained(host, port, root, topics)
    counter = ReceiveCounter(topics)

    def on_message(client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        counter.add()
        return 0

    late = await connect_gmqtt(host, port, on_message)
    try:
        start = time.perf_counter()
        await subscribe_gmqtt(late, f"{root}/#", 0)
        await counter.wait(time.perf_counter() + RELOAD_TIMEOUT)
    finally:
        await late.client.disconnect()
    return (counter.last or time.perf_counter()) - start, counter.count


async def mosquitto_sub_retained_replay(host: str, port: int, topics: int) -> tuple[float, int]:
    """Return (seconds from starting mosquitto_sub to its exit, messages received).

    mosquitto_sub exits after ``topics`` messages or after REPLAY_CLI_TIMEOUT seconds.
    Mosquitto 2.0.11 drops part of a large retained replay to a QoS 0 subscriber that
    reads too slowly; the received count shows it.
    """
    require_reload()
    root = unique_topic("retained")
    await _store_retained(host, port, root, topics)
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", host, "-p", str(port), "-t", f"{root}/#", "-C", str(topics), "-V", "mqttv5",
        "-F", "%t", "-W", str(REPLAY_CLI_TIMEOUT),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RELOAD_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return time.perf_counter() - start, output.count(b"\n")


async def completeness(host: str, port: int, topics: int, peers: int) -> tuple[int, bool | None]:
    """Return (topics returned, ``complete`` flag) for one reload on the stock broker configuration."""
    require_reload()
    _, returned, complete = await mnemoq5_reload(host, port, topics, peers)
    return returned, complete
