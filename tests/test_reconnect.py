"""Reconnecting after broker crashes, and disconnect() while the client waits to reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mnemoq5 import ConnectionState, Message, MnemoQ

from .broker import Mosquitto
from .helpers import wait_until

TIMEOUT = 5.0
# Short backoff so a restart is noticed within a fraction of a second.
FAST_RECONNECT = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


async def holds_for(condition: Callable[[], bool], description: str, duration: float) -> None:
    """Poll ``condition`` every 20 ms for ``duration`` seconds; fail as soon as it stops holding."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert condition(), f"{description} stopped holding"
        await asyncio.sleep(0.02)


async def receive(iterator: AsyncIterator[Message]) -> Message:
    return await asyncio.wait_for(iterator.__anext__(), TIMEOUT)


def reconnect_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("mnemoq5-reconnect-")]


@pytest.mark.slow
async def test_reconnect_after_kills(own_broker: Mosquitto, topic_root: str) -> None:
    first = MnemoQ(host=own_broker.host, port=own_broker.port, **FAST_RECONNECT)
    second = MnemoQ(host=own_broker.host, port=own_broker.port, **FAST_RECONNECT)
    await first.connect()
    await second.connect()
    try:
        to_first, to_second = f"{topic_root}/to-first", f"{topic_root}/to-second"
        await first.subscribe(to_first, qos=1)
        await second.subscribe(to_second, qos=1)
        # One iterator per client for the whole test: messages() must keep yielding across reconnects.
        first_messages = first.messages().__aiter__()
        second_messages = second.messages().__aiter__()

        for restart in (1, 2, 3):
            own_broker.kill()
            await wait_until(lambda: first.state is ConnectionState.RECONNECTING, "first client RECONNECTING")
            await wait_until(lambda: second.state is ConnectionState.RECONNECTING, "second client RECONNECTING")

            own_broker.start()
            await wait_until(lambda: first.state is ConnectionState.CONNECTED, "first client CONNECTED")
            await wait_until(lambda: second.state is ConnectionState.CONNECTED, "second client CONNECTED")
            assert first.stats.reconnects == restart
            assert second.stats.reconnects == restart

            # The subscriptions were sent again, so QoS 1 values flow both ways.
            await first.publish(to_second, f"from first {restart}".encode(), qos=1)
            await second.publish(to_first, f"from second {restart}".encode(), qos=1)
            at_second = await receive(second_messages)
            at_first = await receive(first_messages)
            assert at_second.payload == f"from first {restart}".encode()
            assert at_second.sender == first.client_id
            assert at_second.qos == 1
            assert at_first.payload == f"from second {restart}".encode()
            assert at_first.sender == second.client_id
            assert at_first.qos == 1
    finally:
        await first.disconnect()
        await second.disconnect()

    # disconnect() ends the iterators that were waiting across the restarts.
    with pytest.raises(StopAsyncIteration):
        await receive(first_messages)


@pytest.mark.slow
async def test_disconnect_while_reconnecting(own_broker: Mosquitto, topic_root: str) -> None:
    topic = f"{topic_root}/unsent"
    client = MnemoQ(host=own_broker.host, port=own_broker.port, **FAST_RECONNECT)
    await client.connect()
    own_broker.kill()
    await wait_until(lambda: client.state is ConnectionState.RECONNECTING, "client RECONNECTING")

    # A stored value that the next connection would publish, retained so a late subscriber receives it.
    await client.publish(topic, b"unsent", qos=1, retain=True)
    await client.disconnect()
    assert client.state is ConnectionState.CLOSED
    assert reconnect_tasks() == []

    own_broker.start()
    watcher = MnemoQ(host=own_broker.host, port=own_broker.port)
    marker = MnemoQ(host=own_broker.host, port=own_broker.port)
    await watcher.connect()
    await marker.connect()
    try:
        await watcher.subscribe(topic, qos=1)
        # Watch for ten times the maximum backoff: any reconnect would publish the value and presence.
        await holds_for(lambda: client.state is ConnectionState.CLOSED, "client CLOSED", duration=2.0)
        assert client.client_id not in watcher.peers()

        # The first value the watcher gets is the marker, so the closed client sent nothing before it.
        await marker.publish(topic, b"marker", qos=1)
        message = await receive(watcher.messages().__aiter__())
        assert message.payload == b"marker"
        assert message.sender == marker.client_id
        assert client.state is ConnectionState.CLOSED
    finally:
        await watcher.disconnect()
        await marker.disconnect()
