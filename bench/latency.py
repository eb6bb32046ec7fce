"""Round-trip latency of small messages: ping-pong between two clients in one process.

The pinger publishes on a ping topic, the echoer republishes each payload on a pong
topic, and the pinger times each round trip before it sends the next ping. Both
clients share one event loop, so each round trip costs two publishes and two
receives of one implementation plus four passes through the broker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mnemoq5 import MnemoQ

from ._common import connect_gmqtt, payload_of, subscribe_gmqtt, unique_topic

PING_SIZE = 16
WARMUP = 20
TIMEOUT = 5.0


async def mnemoq5_round_trips(host: str, port: int, count: int) -> list[float]:
    ping, pong = unique_topic("ping"), unique_topic("pong")
    payload = payload_of(PING_SIZE)
    async with MnemoQ(host, port) as pinger, MnemoQ(host, port) as echoer:
        await echoer.subscribe(ping)
        await pinger.subscribe(pong)

        async def echo() -> None:
            async for message in echoer.messages():
                await echoer.publish(pong, message.payload)

        echo_task = asyncio.create_task(echo())
        replies = pinger.messages().__aiter__()
        times = []
        try:
            for index in range(WARMUP + count):
                start = time.perf_counter()
                await pinger.publish(ping, payload)
                await asyncio.wait_for(replies.__anext__(), TIMEOUT)
                if index >= WARMUP:
                    times.append(time.perf_counter() - start)
        finally:
            echo_task.cancel()
            await asyncio.gather(echo_task, return_exceptions=True)
    return times


async def gmqtt_round_trips(host: str, port: int, count: int) -> list[float]:
    ping, pong = unique_topic("ping"), unique_topic("pong")
    payload = payload_of(PING_SIZE)
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    def on_pong(client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        replies.put_nowait(payload)
        return 0

    def on_ping(client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        echoer.client.publish(pong, payload, qos=0)
        return 0

    pinger = await connect_gmqtt(host, port, on_pong)
    echoer = await connect_gmqtt(host, port, on_ping)
    times = []
    try:
        await subscribe_gmqtt(echoer, ping, 0)
        await subscribe_gmqtt(pinger, pong, 0)
        for index in range(WARMUP + count):
            start = time.perf_counter()
            pinger.client.publish(ping, payload, qos=0)
            await asyncio.wait_for(replies.get(), TIMEOUT)
            if index >= WARMUP:
                times.append(time.perf_counter() - start)
    finally:
        await pinger.client.disconnect()
        await echoer.client.disconnect()
    return times


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]
