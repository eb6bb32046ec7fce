from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from mnemoq5 import Message, MnemoQ

from .broker import Mosquitto
from .helpers import PahoPeer


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """One private Mosquitto for the whole test session, shared by tests that do not stop it."""
    with Mosquitto() as instance:
        yield instance


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A private Mosquitto for one test, which the test may kill and restart."""
    with Mosquitto() as instance:
        yield instance


_counter = itertools.count()


@pytest.fixture
def topic_root(request: pytest.FixtureRequest) -> str:
    """A topic prefix that no other test uses."""
    name = request.node.originalname[:40]
    return f"t/{name}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def make_client(broker: Mosquitto) -> AsyncIterator:
    """Factory of connected clients on the session broker, disconnected at teardown."""
    clients: list[MnemoQ] = []

    async def make(**settings: object) -> MnemoQ:
        settings.setdefault("host", broker.host)
        settings.setdefault("port", broker.port)
        client = MnemoQ(**settings)  # type: ignore[arg-type]
        await client.connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.disconnect()


@pytest.fixture
async def paho_peer(broker: Mosquitto) -> AsyncIterator[Callable[..., Awaitable[PahoPeer]]]:
    """Factory of connected MQTT v5 PahoPeer clients, on the session broker by default, stopped at teardown."""
    peers: list[PahoPeer] = []

    async def make(target: Mosquitto = broker) -> PahoPeer:
        peer = PahoPeer(target.host, target.port)
        peers.append(peer)
        return await peer.start()

    yield make
    for peer in peers:
        peer.stop()


@pytest.fixture
def control_prefix() -> str:
    """A control prefix of its own, so the peers of one test never reply to the catch-up requests of another."""
    return f"mq5c-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_peer(make_client: Callable[..., Awaitable[MnemoQ]], control_prefix: str) -> Callable[..., Awaitable[MnemoQ]]:
    """Factory of connected clients on the session broker that share this test's control prefix."""

    async def make(**settings: Any) -> MnemoQ:
        settings.setdefault("control_prefix", control_prefix)
        return await make_client(**settings)

    return make


@pytest.fixture
async def open_client() -> AsyncIterator[Callable[..., Awaitable[MnemoQ]]]:
    """Factory of connected clients on a broker the test chooses, disconnected at teardown."""
    clients: list[MnemoQ] = []

    async def make(broker: Mosquitto, **settings: Any) -> MnemoQ:
        client = MnemoQ(host=broker.host, port=broker.port, **settings)
        await client.connect()
        clients.append(client)
        return client

    yield make
    await asyncio.gather(*(client.disconnect() for client in clients))


async def next_message(client: MnemoQ, timeout: float = 5.0) -> Message:
    """Return the next message from ``client.messages()``, or fail after ``timeout`` seconds."""
    iterator = client.messages().__aiter__()
    return await asyncio.wait_for(iterator.__anext__(), timeout)


@pytest.fixture(scope="session")
def session_amqtt() -> Iterator[object]:
    """One private amqtt broker (MQTT 3.1.1 only) for the whole test session."""
    from .amqtt_broker import Amqtt

    with Amqtt() as instance:
        yield instance
