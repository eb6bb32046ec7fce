"""Faults a new user ran into: request bursts, forged stamps, huge values, lost connections, bad settings."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from mnemoq5 import Entry, InvalidArgumentError, MnemoQ, PacketTooLargeError, SqliteStore, Stamp

from .broker import Mosquitto
from .helpers import wait_until

TIMEOUT = 10.0


# -- request bursts -----------------------------------------------------------------


async def test_request_burst_all_answered(make_client: Any, topic_root: str) -> None:
    publisher = await make_client(client_id=f"burst-pub-{topic_root[-6:]}")
    for index in range(60):
        await publisher.publish(f"{topic_root}/{index}/value", str(index), qos=1)
    late = await make_client()

    # 60 requests at once exceed the responder's burst of 20, so the responder must
    # reply to the rest later instead of dropping them.
    snapshots = await asyncio.gather(
        *(late.reload(f"{topic_root}/{index}/#", timeout=TIMEOUT) for index in range(60))
    )

    assert all(snapshot.complete for snapshot in snapshots)
    assert [len(snapshot) for snapshot in snapshots] == [1] * 60
    assert publisher.stats.requests_rate_limited == 0


# -- forged stamps --------------------------------------------------------------------


async def test_future_stamp_dropped(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    receiver = await make_client()
    await receiver.subscribe(f"{topic_root}/#", qos=1)
    forger = await paho_peer()
    topic = f"{topic_root}/poison"

    await forger.publish(
        topic,
        b"forged",
        user_properties=[
            ("mnemoq5:id", "forger"),
            ("mnemoq5:kind", "data"),
            ("mnemoq5:stamp", "18446744073709551615:4294967295"),
        ],
    )
    await wait_until(lambda: receiver.stats.malformed_dropped == 1, "the forged stamp was dropped")

    # The forged stamp did not move this client's clock, so it can still publish.
    entry = await receiver.publish(topic, b"after", qos=1)
    assert entry.stamp.millis < time.time() * 1000 + 60_000
    assert receiver.stats.malformed_dropped == 1


async def test_clock_skew_check_disabled(make_client: Any, paho_peer: Any, topic_root: str) -> None:
    receiver = await make_client(max_clock_skew=None)
    await receiver.subscribe(f"{topic_root}/#", qos=1)
    forger = await paho_peer()
    ahead = int(time.time() * 1000) + 3_600_000

    await forger.publish(
        f"{topic_root}/ahead",
        b"an hour ahead",
        user_properties=[("mnemoq5:id", "forger"), ("mnemoq5:kind", "data"), ("mnemoq5:stamp", f"{ahead}:0")],
    )
    message = await asyncio.wait_for(receiver.messages().__anext__(), TIMEOUT)

    assert message.payload == b"an hour ahead"
    assert receiver.stats.malformed_dropped == 0


# -- huge values ----------------------------------------------------------------------


async def test_payload_over_mqtt_limit_rejected(make_client: Any, topic_root: str) -> None:
    client = await make_client()
    topic = f"{topic_root}/huge"
    await client.publish(topic, b"small", qos=1)

    with pytest.raises(PacketTooLargeError, match="268435460 bytes"):
        await client.publish(topic, bytes(268_435_456), qos=1)

    assert client.store[topic].payload == b"small"


async def test_large_entry_catches_up(make_client: Any, topic_root: str) -> None:
    publisher = await make_client()
    value = bytes(range(256)) * 1200  # 300 KiB, above the 256 KiB chunk size
    await publisher.publish(f"{topic_root}/big", value, qos=1)
    late = await make_client()

    snapshot = await late.reload(f"{topic_root}/#", timeout=TIMEOUT)

    assert snapshot.complete
    assert snapshot[f"{topic_root}/big"].payload == value


async def test_entry_too_large_marks_peer_missing(make_client: Any, topic_root: str) -> None:
    publisher = await make_client()
    await publisher.publish(f"{topic_root}/small", b"fits", qos=1)
    await publisher.publish(f"{topic_root}/big", bytes(4000), qos=1)
    late = await make_client(maximum_packet_size=2048)

    snapshot = await late.reload(f"{topic_root}/#", timeout=TIMEOUT)

    assert not snapshot.complete
    assert publisher.client_id in snapshot.missing
    assert snapshot[f"{topic_root}/small"].payload == b"fits"


# -- lost connections -----------------------------------------------------------------


async def test_reload_ends_when_connection_lost(own_broker: Mosquitto, topic_root: str) -> None:
    settings = {"host": own_broker.host, "port": own_broker.port, "reconnect_min_delay": 0.1}
    publisher = MnemoQ(**settings)
    requester = MnemoQ(**settings)
    await publisher.connect()
    await requester.connect()
    try:
        await publisher.publish(f"{topic_root}/value", b"1", qos=1)
        await wait_until(lambda: publisher.client_id in requester.peers(), "the publisher is a known peer")
        held = asyncio.Event()
        original = publisher._catch_up._send_reply

        async def hold_reply(*args: Any) -> None:
            await held.wait()
            await original(*args)

        publisher._catch_up._send_reply = hold_reply  # type: ignore[method-assign]
        reload = asyncio.create_task(requester.reload(f"{topic_root}/#", timeout=60))
        await wait_until(lambda: bool(requester._catch_up._pending), "the request is pending")

        own_broker.kill()
        snapshot = await asyncio.wait_for(reload, TIMEOUT)

        assert not snapshot.complete
        assert snapshot.missing == {publisher.client_id}
        held.set()
    finally:
        await requester.disconnect()
        await publisher.disconnect()


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("connect_timeout", 0),
        ("connect_timeout", -5),
        ("connect_timeout", math.nan),
        ("reply_jitter", math.inf),
        ("reply_jitter", -1),
        ("reply_jitter", math.nan),
        ("max_clock_skew", 0),
        ("tombstone_retention", math.inf),
        ("compat", "yes"),
        ("store", "file.db"),
        ("keepalive", 1.5),
        ("client_id", "x" * 65_530),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_invalid_setting_rejected(setting: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=setting):
        MnemoQ(**{setting: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, "2"], ids=repr)
async def test_invalid_timeout_rejected(make_client: Any, topic_root: str, timeout: object) -> None:
    client = await make_client()

    with pytest.raises(InvalidArgumentError, match="timeout"):
        await client.reload(f"{topic_root}/#", timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="timeout"):
        await client.subscribe(f"{topic_root}/#", catch_up=True, timeout=timeout)  # type: ignore[arg-type]


async def test_surrogate_payload_rejected(make_client: Any, topic_root: str) -> None:
    client = await make_client()
    topic = f"{topic_root}/text"
    await client.publish(topic, "kept", qos=1)

    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        await client.publish(topic, "bad \ud800", qos=1)

    assert client.store[topic].payload == b"kept"


async def test_stored_future_stamp_ignored(broker: Mosquitto, tmp_path: Any, topic_root: str) -> None:
    path = tmp_path / "poisoned.db"
    with SqliteStore(path) as store:
        store.put(Entry(f"{topic_root}/far", b"x", 1, False, (), Stamp(2**64 - 1, 2**32 - 1, "forger")))
    store = SqliteStore(path)
    client = MnemoQ(host=broker.host, port=broker.port, store=store)
    await client.connect()
    try:
        entry = await client.publish(f"{topic_root}/after", b"ok", qos=1)

        assert entry.stamp.millis < time.time() * 1000 + 60_000
    finally:
        await client.disconnect()
        store.close()
