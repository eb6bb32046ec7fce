"""Deletion, expiry, standby peers and durable restarts against a real Mosquitto.

Every test uses a control prefix of its own, so the peers of one test never reply to the
catch-up requests of another on the shared session broker.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mnemoq5 import Entry, MnemoQ, Snapshot, SqliteStore, StoreError
from mnemoq5._envelope import KEY_ID, KEY_KIND, KEY_STAMP

from .broker import Mosquitto
from .conftest import next_message
from .helpers import PahoPeer, messages_until, user_properties_of, wait_until
from .test_sqlite_store import LINE_TIMEOUT, PUBLISHER, run_until_killed

TIMEOUT = 5.0

MakePeer = Callable[..., Awaitable[MnemoQ]]


async def paho_messages_until(peer: PahoPeer, topic: str) -> list[Any]:
    """Return the messages of a paho ``peer`` up to and including the first one on ``topic``."""
    received = []
    while True:
        message = await peer.next_message()
        received.append(message)
        if message.topic == topic:
            return received


# -- deletion -------------------------------------------------------------------


async def test_delete_seen_live(make_peer: MakePeer, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    publisher = await make_peer()
    subscriber = await make_peer()
    observer = await paho_peer()
    await subscriber.subscribe(topic, qos=1)
    await observer.subscribe(topic)

    await publisher.publish(topic, b"v1", qos=1)
    assert (await next_message(subscriber)).payload == b"v1"
    assert (await observer.next_message()).payload == b"v1"

    tombstone = await publisher.delete(topic)
    assert tombstone.deleted
    assert tombstone.payload == b""
    assert publisher.store[topic] == tombstone

    message = await next_message(subscriber)
    assert message.deleted
    assert message.payload == b""
    assert message.sender == publisher.client_id
    assert message.stamp == tombstone.stamp
    assert not message.replayed

    raw = await observer.next_message()
    assert raw.payload == b""
    assert (KEY_KIND, "delete") in user_properties_of(raw)


async def test_delete_clears_retained(make_peer: MakePeer, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    marker = f"{topic_root}/marker"
    publisher = await make_peer()
    await publisher.publish(topic, b"retained v1", qos=1, retain=True)

    # Control: a new subscriber receives the retained value before the marker.
    before = await paho_peer()
    await before.subscribe(topic)
    await before.subscribe(marker)
    await before.publish(marker, b"marker")
    received = await paho_messages_until(before, marker)
    assert [message.payload for message in received] == [b"retained v1", b"marker"]
    assert received[0].retain

    tombstone = await publisher.delete(topic)
    assert tombstone.retain
    # The deletion reached the broker once the earlier subscriber has it.
    deletion = await before.next_message()
    assert deletion.payload == b""

    after = await paho_peer()
    await after.subscribe(topic)
    await after.subscribe(marker)
    await after.publish(marker, b"marker")
    received = await paho_messages_until(after, marker)
    assert [message.topic for message in received] == [marker]


async def test_delete_through_catch_up(make_peer: MakePeer, topic_root: str) -> None:
    gone = f"{topic_root}/gone"
    kept = f"{topic_root}/kept"
    publisher = await make_peer()
    await publisher.publish(gone, b"v1", qos=1)
    await publisher.publish(kept, b"kept", qos=1)
    tombstone = await publisher.delete(gone)

    late = await make_peer()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True)
    marker = f"{topic_root}/marker"
    await publisher.publish(marker, b"marker", qos=1)
    received = {message.topic: message for message in await messages_until(late, marker)}
    assert set(received) == {gone, kept, marker}
    replayed = received[gone]
    assert replayed.replayed
    assert replayed.deleted
    assert replayed.payload == b""
    assert replayed.sender == publisher.client_id
    assert replayed.stamp == tombstone.stamp

    snapshot = await late.reload(f"{topic_root}/#")
    assert snapshot.complete
    assert snapshot.answered == {publisher.client_id}
    assert gone not in snapshot
    assert snapshot[kept].payload == b"kept"


async def hold_old_value(
    make_peer: MakePeer, topic: str, *, publisher_jitter: float = 0.05, standby_jitter: float = 0.05
) -> tuple[MnemoQ, MnemoQ, Entry]:
    """Return a publisher that deleted ``topic``, a standby that still stores the old value, and that value."""
    publisher = await make_peer(reply_jitter=publisher_jitter)
    standby = await make_peer(remember="received", reply_jitter=standby_jitter)
    await standby.subscribe(topic, qos=1)
    old = await publisher.publish(topic, b"v1", qos=1)
    assert (await next_message(standby)).payload == b"v1"

    # Without the subscription the standby misses the deletion and keeps v1.
    await standby.unsubscribe(topic)
    tombstone = await publisher.delete(topic)
    assert tombstone.stamp > old.stamp
    assert standby.store[topic].payload == b"v1"
    return publisher, standby, old


async def test_delete_no_resurrection(make_peer: MakePeer, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    publisher, standby, old = await hold_old_value(make_peer, topic)

    late = await make_peer()
    snapshot = await late.reload(f"{topic_root}/#")
    assert snapshot.complete
    assert snapshot.answered == {publisher.client_id, standby.client_id}
    assert topic not in snapshot
    # The standby took part in the reload with v1 still in its store.
    assert standby.store[topic].stamp == old.stamp

    # A live copy of v1, crafted with the envelope of the original, is older than the tombstone.
    await late.subscribe(f"{topic_root}/#", qos=1)
    stale_before = late.stats.stale_dropped
    forger = await paho_peer()
    envelope = [(KEY_ID, publisher.client_id), (KEY_KIND, "data"), (KEY_STAMP, old.stamp.to_text())]
    await forger.publish(topic, b"v1", user_properties=envelope)
    marker = f"{topic_root}/marker"
    await forger.publish(marker, b"marker")
    received = await messages_until(late, marker)
    assert [message.topic for message in received] == [marker]
    assert late.stats.stale_dropped == stale_before + 1


async def test_delete_replay_order(make_peer: MakePeer, topic_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each peer waits exactly its reply_jitter: the standby replies at once, the publisher 0.3 s later.
    monkeypatch.setattr("mnemoq5._catchup.random.uniform", lambda low, high: high)
    topic = f"{topic_root}/value"
    publisher, _, _ = await hold_old_value(make_peer, topic, publisher_jitter=0.3, standby_jitter=0)

    late = await make_peer()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True)
    marker = f"{topic_root}/marker"
    await publisher.publish(marker, b"marker", qos=1)
    received = await messages_until(late, marker)
    assert [message.payload for message in received if message.topic == topic] == [b""]


async def test_tombstone_pruned(make_peer: MakePeer, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    publisher = await make_peer(tombstone_retention=1)
    await publisher.publish(topic, b"v1", qos=1)
    await publisher.delete(topic)
    assert publisher.store[topic].deleted

    await wait_until(lambda: topic not in publisher.store, "pruning of the tombstone")
    assert topic not in publisher.store


# -- expiry ---------------------------------------------------------------------


async def test_expiry_through_catch_up(make_peer: MakePeer, topic_root: str) -> None:
    brief = f"{topic_root}/brief"
    kept = f"{topic_root}/kept"
    publisher = await make_peer()
    live = await make_peer()
    early = await make_peer()
    await live.subscribe(brief, qos=1)
    await publisher.publish(kept, b"kept", qos=1)

    entry = await publisher.publish(brief, b"short-lived", qos=1, expiry=1)
    assert entry.expires_at is not None
    message = await next_message(live)
    assert message.expiry is not None
    assert message.expiry <= 1

    # The early joiner was connected beforehand, so its catch-up starts within the second.
    await early.subscribe(brief, qos=1, catch_up=True)
    replayed = await next_message(early)
    assert replayed.replayed
    assert replayed.payload == b"short-lived"
    assert replayed.expiry is not None
    assert replayed.expiry <= 1

    await wait_until(lambda: brief not in publisher.store, "expiry in the publisher's store")
    assert brief not in publisher.store

    late = await make_peer()
    snapshot = await late.reload(f"{topic_root}/#")
    assert publisher.client_id in snapshot.answered
    assert brief not in snapshot
    assert snapshot[kept].payload == b"kept"
    # The early joiner received the value, and its own snapshot omits it once it has expired.
    assert brief not in await early.reload(f"{topic_root}/#")


# -- standby peers --------------------------------------------------------------


async def test_standby_outlives_publisher(make_peer: MakePeer, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    publisher = await make_peer()
    standby = await make_peer(remember="received")
    await standby.subscribe(f"{topic_root}/#", qos=1)
    first = await publisher.publish(topic, b"v1", qos=1)
    assert (await next_message(standby)).payload == b"v1"
    await publisher.disconnect()

    late = await make_peer()
    snapshot = await late.reload(f"{topic_root}/#")
    assert snapshot.answered == {standby.client_id}
    assert snapshot[topic].payload == b"v1"
    assert snapshot[topic].sender == publisher.client_id
    assert snapshot[topic].stamp == first.stamp

    # With a new publisher and the standby both holding the newest value, the snapshot has it once.
    successor = await make_peer()
    second = await successor.publish(topic, b"v2", qos=1)
    assert (await next_message(standby)).payload == b"v2"
    other = await make_peer()
    snapshot = await other.reload(f"{topic_root}/#")
    assert snapshot.answered == {standby.client_id, successor.client_id, late.client_id}
    assert list(snapshot) == [topic]
    assert snapshot[topic].stamp == second.stamp
    assert snapshot[topic].payload == b"v2"


# -- durable restart ------------------------------------------------------------

SERVER_SCRIPT = """
import asyncio
import sys

from mnemoq5 import MnemoQ, SqliteStore


async def main():
    port, control_prefix, client_id, path = sys.argv[1:5]
    with SqliteStore(path) as store:
        async with MnemoQ(port=int(port), client_id=client_id, control_prefix=control_prefix, store=store):
            print("serving", flush=True)
            # Reply to catch-up requests until the test kills this process or closes standard input.
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
"""


async def reload_from_restarted(
    broker: Mosquitto, make_peer: MakePeer, control_prefix: str, client_id: str, db_path: Path, topic_root: str
) -> Snapshot:
    """Restart the publisher ``client_id`` on ``db_path``, reload ``topic_root/#`` from it, then kill it."""
    stderr_path = db_path.with_suffix(".server.stderr")
    with stderr_path.open("ab") as stderr:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER_SCRIPT,
            str(broker.port),
            control_prefix,
            client_id,
            str(db_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert server.stdout is not None
        first_line = await asyncio.wait_for(server.stdout.readline(), LINE_TIMEOUT)
        assert first_line == b"serving\n", stderr_path.read_text()

        late = await make_peer()
        await wait_until(lambda: client_id in late.peers(), "presence of the restarted publisher")
        snapshot = await late.reload(f"{topic_root}/#", timeout=TIMEOUT)
        await late.disconnect()
        return snapshot
    finally:
        if server.returncode is None:
            server.kill()
        await asyncio.wait_for(server.wait(), LINE_TIMEOUT)


async def test_durable_restart(
    tmp_path: Path, broker: Mosquitto, make_peer: MakePeer, control_prefix: str, topic_root: str
) -> None:
    db_path = tmp_path / "publisher.db"
    client_id = f"durable-{uuid.uuid4().hex[:8]}"
    confirmed: dict[str, bytes] = {}
    for round_number, lines_before_kill in enumerate((60, 90)):
        publish_command = [
            sys.executable,
            str(PUBLISHER),
            broker.host,
            str(broker.port),
            client_id,
            str(db_path),
            topic_root,
            str(round_number),
        ]
        lines = await run_until_killed(publish_command, lines_before_kill, tmp_path / "publisher.stderr")
        last_seq = -1
        for line in lines:
            _, topic, seq = line.split()
            if topic.endswith("/last"):
                last_seq = int(seq)
            else:
                confirmed[topic] = f"r{round_number}-s{seq}".encode()
        assert last_seq >= 0

        snapshot = await reload_from_restarted(broker, make_peer, control_prefix, client_id, db_path, topic_root)
        assert snapshot.answered == {client_id}
        for topic, payload in confirmed.items():
            assert topic in snapshot, topic
            assert snapshot[topic].payload == payload, topic
            assert snapshot[topic].sender == client_id, topic
        # The last publish may have been stored just before the kill, without its line.
        stored_round, stored_seq = snapshot[f"{topic_root}/last"].payload.decode().removeprefix("r").split("-s")
        assert int(stored_round) == round_number
        assert int(stored_seq) >= last_seq


# -- store failures at the client level ------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user_properties", "not json"),
        ("stamp_key", b"\x00"),
        ("qos", "one"),
    ],
)
def test_store_bad_row_at_start(tmp_path: Path, column: str, value: object) -> None:
    # A row with values of the wrong shape passes SQLite's quick_check, so opening the
    # store succeeds and the client's start-up, which reads every entry, must fail.
    db_path = tmp_path / "store.db"
    with SqliteStore(db_path):
        pass
    connection = sqlite3.connect(db_path)
    connection.execute(
        "INSERT INTO entries VALUES ('a/b', x'', 1, 0, '[]', x'0000018bcfe5680000000000777269746572', 0, NULL)"
    )
    connection.execute(f"UPDATE entries SET {column} = ?", (value,))
    connection.commit()
    connection.close()

    with SqliteStore(db_path) as store:
        with pytest.raises(StoreError) as caught:
            MnemoQ(store=store)
    assert str(db_path) in str(caught.value)


async def test_closed_store_publish(tmp_path: Path, make_peer: MakePeer, paho_peer: Any, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    marker = f"{topic_root}/marker"
    db_path = tmp_path / "store.db"
    store = SqliteStore(db_path)
    client = await make_peer(store=store)
    observer = await paho_peer()
    await observer.subscribe(f"{topic_root}/#")
    store.close()

    with pytest.raises(StoreError) as caught:
        await client.publish(topic, b"unstored", qos=1)
    assert str(db_path) in str(caught.value)

    # Nothing was sent: the observer's first message is the marker published afterwards.
    await observer.publish(marker, b"marker")
    received = await paho_messages_until(observer, marker)
    assert [message.topic for message in received] == [marker]
