"""Catch-up against a real Mosquitto: reload(), catch_up subscriptions, presence and races.

Every test uses a control prefix of its own, so the peers of one test never reply to the
requests of another on the shared session broker.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from typing import Any

import pytest

from mnemoq5 import ConnectionState, Entry, MemoryStore, Message, MnemoQ, Stamp
from mnemoq5._stamp import wall_clock_millis

from .broker import Mosquitto
from .conftest import next_message
from .helpers import messages_until, wait_until


async def collect(client: MnemoQ, count: int, timeout: float = 10.0) -> list[Message]:
    """Return the next ``count`` messages of ``client``, or raise TimeoutError after ``timeout`` seconds."""

    async def read() -> list[Message]:
        received: list[Message] = []
        async for message in client.messages():
            received.append(message)
            if len(received) == count:
                break
        return received

    return await asyncio.wait_for(read(), timeout)


# -- reload ---------------------------------------------------------------


async def test_reload_wildcard_several_peers(make_peer, topic_root):
    publishers = [await make_peer() for _ in range(3)]
    expected = {}
    for index, publisher in enumerate(publishers):
        for level in ("a", "b/c", "d/e/f"):
            topic = f"{topic_root}/p{index}/{level}"
            await publisher.publish(topic, f"{index}:{level}", qos=1)
            expected[topic] = (f"{index}:{level}".encode(), publisher.client_id)

    late = await make_peer()
    snapshot = await late.reload(f"{topic_root}/#", timeout=5)

    assert snapshot.complete
    assert snapshot.missing == frozenset()
    assert snapshot.answered == {publisher.client_id for publisher in publishers}
    assert set(snapshot) == set(expected)
    for topic, (payload, sender) in expected.items():
        assert snapshot[topic].payload == payload
        assert snapshot[topic].sender == sender


async def test_reload_no_peer_returns_at_once(make_peer, topic_root):
    alone = await make_peer()
    assert alone.peers() == {}

    # The reload timeout is 30 s, so returning within 1 s shows it did not wait for it.
    snapshot = await asyncio.wait_for(alone.reload(f"{topic_root}/#", timeout=30), 1.0)

    assert snapshot.complete
    assert snapshot.answered == frozenset()
    assert len(snapshot) == 0


async def test_reload_never_asks_itself(make_peer, topic_root):
    client = await make_peer()
    await client.publish(f"{topic_root}/own/1", b"one", qos=1)
    await client.publish(f"{topic_root}/own/2", b"two", qos=1)

    snapshot = await client.reload(f"{topic_root}/#", timeout=5)

    assert snapshot.complete
    assert snapshot.answered == frozenset()
    assert set(snapshot) == {f"{topic_root}/own/1", f"{topic_root}/own/2"}
    assert client.client_id not in client.peers()

    other = await make_peer()
    await wait_until(lambda: other.client_id in client.peers(), "client sees the other peer")
    snapshot = await client.reload(f"{topic_root}/#", timeout=5)

    assert snapshot.answered == {other.client_id}
    assert client.client_id not in client.peers()
    assert client.client_id in other.peers()


# -- section 4.7 filter rules through catch-up ---------------------------


async def test_filter_multilevel_parent(make_peer, topic_root):
    publisher = await make_peer()
    for topic in ("sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennisball"):
        await publisher.publish(f"{topic_root}/{topic}", topic, qos=1)
    late = await make_peer()

    snapshot = await late.reload(f"{topic_root}/sport/tennis/#", timeout=5)

    # '#' matches the parent level as well as its children (MQTT v5 section 4.7.1.2).
    assert snapshot.complete
    assert set(snapshot) == {
        f"{topic_root}/sport/tennis",
        f"{topic_root}/sport/tennis/player1",
        f"{topic_root}/sport/tennis/player1/ranking",
    }
    assert f"{topic_root}/sport/tennisball" not in snapshot


async def test_filter_slashes_distinct(make_peer, topic_root):
    publisher = await make_peer()
    topics = {
        f"{topic_root}/a/b": b"plain",
        f"{topic_root}/a/b/": b"trailing",
        f"{topic_root}//a/b": b"leading",
        f"{topic_root}/a//b": b"double",
    }
    for topic, payload in topics.items():
        await publisher.publish(topic, payload, qos=1)
    late = await make_peer()

    snapshot = await late.reload(f"{topic_root}/#", timeout=5)

    assert snapshot.complete
    assert len(snapshot) == 4
    for topic, payload in topics.items():
        assert snapshot[topic].payload == payload


@pytest.mark.parametrize(
    ("relative_filter", "expected"),
    [
        ("+/x", {"/x", "a/x"}),
        ("a/+/y", {"a//y", "a/b/y"}),
        ("a/+", {"a/", "a/x"}),
        ("+/+/y", {"a//y", "a/b/y"}),
    ],
    # topic_root embeds the test id, so the ids must not contain wildcards.
    ids=["first-level", "middle-level", "last-level", "two-levels"],
)
async def test_filter_plus_empty_level(make_peer, topic_root, relative_filter, expected):
    publisher = await make_peer()
    for topic in ("/x", "a/x", "a//y", "a/b/y", "a/", "a/b/z"):
        await publisher.publish(f"{topic_root}/{topic}", topic, qos=1)
    late = await make_peer()

    snapshot = await late.reload(f"{topic_root}/{relative_filter}", timeout=5)

    assert snapshot.complete
    assert set(snapshot) == {f"{topic_root}/{topic}" for topic in expected}


async def test_filter_dollar_topic_hidden(make_peer, topic_root):
    publisher = await make_peer()
    dollar_topic = f"$mq5{uuid.uuid4().hex[:8]}/y"
    # Mosquitto may drop a PUBLISH to a '$' topic, but mnemoq5 stores the value before sending.
    await publisher.publish(dollar_topic, b"dollar", qos=1)
    await publisher.publish(f"{topic_root}/y", b"plain", qos=1)
    assert dollar_topic in publisher.store
    late = await make_peer()

    # A filter that starts with a wildcard does not match a '$' topic [MQTT-4.7.2-1].
    everything = await late.reload("#", timeout=5)
    one_level = await late.reload("+/y", timeout=5)
    explicit = await late.reload(dollar_topic.split("/")[0] + "/#", timeout=5)

    assert everything.complete
    assert dollar_topic not in everything
    assert f"{topic_root}/y" in everything
    assert one_level.complete
    assert dollar_topic not in one_level
    assert explicit.complete
    assert explicit[dollar_topic].payload == b"dollar"


# -- catch_up subscriptions -----------------------------------------------


async def test_subscribe_catch_up_replayed_then_live(make_peer, topic_root):
    publisher = await make_peer()
    stored = {f"{topic_root}/s/{index}": f"stored {index}".encode() for index in range(3)}
    for topic, payload in stored.items():
        await publisher.publish(topic, payload, qos=1)
    late = await make_peer()

    await late.subscribe(f"{topic_root}/s/#", qos=1, catch_up=True)
    replayed = await collect(late, 3)

    assert {message.topic: message.payload for message in replayed} == stored
    for message in replayed:
        assert message.replayed
        assert message.sender == publisher.client_id

    await publisher.publish(f"{topic_root}/s/0", b"live", qos=1)
    live = await next_message(late)

    assert live.topic == f"{topic_root}/s/0"
    assert live.payload == b"live"
    assert not live.replayed
    assert live.sender == publisher.client_id


async def test_subscribe_catch_up_later_peer(make_peer, topic_root):
    subscriber = await make_peer()
    await subscriber.subscribe(f"{topic_root}/#", qos=1, catch_up=True)

    # A peer that already stores a value announces itself when it connects, and the
    # subscriber sends it a request for the filter, so the value arrives as a replay.
    writer_id = f"w{uuid.uuid4().hex[:12]}"
    store = MemoryStore()
    stamp = Stamp(wall_clock_millis(), 0, writer_id)
    store.put(Entry(f"{topic_root}/later", b"value", 1, False, (), stamp))
    writer = await make_peer(client_id=writer_id, store=store)
    message = await next_message(subscriber)

    assert message.topic == f"{topic_root}/later"
    assert message.payload == b"value"
    assert message.replayed
    assert message.sender == writer.client_id
    assert message.stamp == stamp


async def test_reply_from_unannounced_peer(broker, make_peer, control_prefix, topic_root):
    requester = await make_peer()
    known = await make_peer()
    await wait_until(lambda: known.client_id in requester.peers(), "requester sees the known peer")

    # The newcomer subscribes to requests before it announces its presence. Holding the
    # announcement keeps it out of the requester's peer table while it already replies.
    newcomer = MnemoQ(port=broker.port, control_prefix=control_prefix)
    announcing = asyncio.Event()
    release = asyncio.Event()
    replied = asyncio.Event()
    original_announce = newcomer._announce
    original_send_reply = newcomer._catch_up._send_reply

    async def held_announce(payload: bytes, *, qos: int) -> None:
        if payload:
            announcing.set()
            await release.wait()
        await original_announce(payload, qos=qos)

    async def observed_send_reply(*args: Any) -> None:
        await original_send_reply(*args)
        replied.set()

    newcomer._announce = held_announce
    newcomer._catch_up._send_reply = observed_send_reply
    connecting = asyncio.create_task(newcomer.connect())
    try:
        await asyncio.wait_for(announcing.wait(), 5)
        snapshot = await requester.reload(f"{topic_root}/#", timeout=5)
        release.set()
        await asyncio.wait_for(connecting, 5)
        # The presence follows the reply on the newcomer's connection, so once the
        # newcomer is in the requester's peer table, the requester has handled the reply.
        await wait_until(lambda: newcomer.client_id in requester.peers(), "requester sees the newcomer")

        assert snapshot.complete
        assert snapshot.answered == {known.client_id}
        assert requester.stats.malformed_dropped == 0
        # The request named its peers, so the newcomer did not reply at all.
        assert not replied.is_set()
    finally:
        release.set()
        await asyncio.gather(connecting, return_exceptions=True)
        await newcomer.disconnect()


# -- ordering of replayed and live values --------------------------------


async def test_stale_reply_loses_to_live(make_peer, topic_root):
    topic = f"{topic_root}/race"
    marker = f"{topic_root}/marker"
    responder = await make_peer()
    await responder.publish(topic, b"v1", qos=1)
    requester = await make_peer()
    await requester.subscribe(f"{topic_root}/#", qos=1)

    # The responder builds its reply (carrying v1) before it sends the first chunk, so
    # holding the first send keeps v1 in the reply while v2 goes out live.
    engine = responder._catch_up
    original_send_chunk = engine._send_chunk
    reply_built = asyncio.Event()
    release = asyncio.Event()

    async def held_send_chunk(*args: Any) -> None:
        reply_built.set()
        await release.wait()
        await original_send_chunk(*args)

    engine._send_chunk = held_send_chunk
    reload = asyncio.create_task(requester.reload(f"{topic_root}/#", timeout=10))
    await asyncio.wait_for(reply_built.wait(), 5)

    await responder.publish(topic, b"v2", qos=1)
    live = await next_message(requester)
    assert live.payload == b"v2"
    assert not live.replayed

    stale_before = requester.stats.stale_dropped
    release.set()
    snapshot = await reload

    assert snapshot.complete
    assert snapshot[topic].payload == b"v2"
    assert requester.stats.stale_dropped == stale_before + 1
    await responder.publish(marker, b"end", qos=1)
    after = await messages_until(requester, marker)
    assert [message.topic for message in after] == [marker]


async def test_two_writers_newest_wins(make_peer, topic_root):
    topic = f"{topic_root}/shared"
    marker = f"{topic_root}/marker"
    first = await make_peer()
    second = await make_peer()
    await second.subscribe(topic, qos=1)
    older = await first.publish(topic, b"first", qos=1)
    # The second writer receives the first value, so its clock orders its write after it.
    await next_message(second)
    newer = await second.publish(topic, b"second", qos=1)
    assert newer.stamp > older.stamp

    late = await make_peer()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True)
    snapshot = await late.reload(f"{topic_root}/#", timeout=5)
    await first.publish(marker, b"end", qos=1)
    received = await messages_until(late, marker)

    assert snapshot.complete
    assert snapshot[topic].payload == b"second"
    assert snapshot[topic].stamp == newer.stamp
    on_topic = [message for message in received if message.topic == topic]
    assert on_topic[-1].payload == b"second"
    assert on_topic[-1].stamp == newer.stamp
    stamps = [message.stamp for message in on_topic]
    assert stamps == sorted(stamps)


async def test_two_writers_concurrent(make_peer, topic_root):
    topic = f"{topic_root}/shared"
    first = await make_peer()
    second = await make_peer()
    # Neither writer has seen the other's value, so the stamps alone decide.
    entries = [await first.publish(topic, b"first", qos=1), await second.publish(topic, b"second", qos=1)]
    newest = max(entries, key=lambda entry: entry.stamp)

    late = await make_peer()
    snapshot = await late.reload(topic, timeout=5)

    assert snapshot.complete
    assert snapshot.answered == {first.client_id, second.client_id}
    assert snapshot[topic].payload == newest.payload
    assert snapshot[topic].stamp == newest.stamp


# -- packet sizes and volume ----------------------------------------------


async def test_reload_small_packet_broker(open_client, topic_root):
    with Mosquitto("mosquitto-small-packets.conf") as small:
        publisher = await open_client(small)
        assert publisher.broker_limits.maximum_packet_size == 4096
        for index in range(50):
            await publisher.publish(f"{topic_root}/e/{index:02d}", bytes([index]) * 100, qos=1)
        late = await open_client(small)

        snapshot = await late.reload(f"{topic_root}/#", timeout=10)

        assert snapshot.complete
        assert len(snapshot) == 50
        for index in range(50):
            assert snapshot[f"{topic_root}/e/{index:02d}"].payload == bytes([index]) * 100


async def test_reload_requester_packet_limit(make_peer, topic_root):
    publisher = await make_peer()
    for index in range(50):
        await publisher.publish(f"{topic_root}/e/{index:02d}", bytes([index]) * 100, qos=1)
    # The broker drops packets larger than the client's Maximum Packet Size, so the
    # responder must size its chunks for the requester.
    late = await make_peer(maximum_packet_size=1024)

    snapshot = await late.reload(f"{topic_root}/#", timeout=10)

    assert snapshot.complete
    assert len(snapshot) == 50
    assert snapshot[f"{topic_root}/e/49"].payload == bytes([49]) * 100


@pytest.mark.slow
async def test_reload_ten_thousand_topics(open_client, own_broker, topic_root):
    publisher = await open_client(own_broker)
    for index in range(10_000):
        await publisher.publish(f"{topic_root}/n/{index}", str(index), qos=1)
    late = await open_client(own_broker)

    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True, timeout=30)
    replayed = await collect(late, 10_000, timeout=30)
    snapshot = await late.reload(f"{topic_root}/#", timeout=30)

    assert snapshot.complete
    assert len(snapshot) == 10_000
    assert snapshot[f"{topic_root}/n/9999"].payload == b"9999"
    assert len({message.topic for message in replayed}) == 10_000
    assert all(message.replayed for message in replayed)


# -- reconnects -------------------------------------------------------------


async def test_catch_up_three_broker_restarts(open_client, own_broker, topic_root):
    settings = {"reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5}
    subscriber = await open_client(own_broker, **settings)
    publisher = await open_client(own_broker, **settings)
    topic = f"{topic_root}/value"
    await subscriber.subscribe(f"{topic_root}/#", qos=1, catch_up=True)

    for round_number in range(3):
        own_broker.kill()
        await wait_until(lambda: publisher.state is ConnectionState.RECONNECTING, "publisher RECONNECTING", timeout=10)
        payload = f"round {round_number}".encode()
        await publisher.publish(topic, payload, qos=1)
        assert publisher.store[topic].payload == payload

        own_broker.start()
        received = await messages_until(subscriber, topic, timeout=15)

        assert received[-1].payload == payload
        assert received[-1].sender == publisher.client_id
    # Messages flow as soon as the new connection is up, a little before the client
    # counts the reconnect as finished.
    await wait_until(lambda: subscriber.stats.reconnects == 3, "subscriber reconnected three times", timeout=10)
    assert subscriber.state is ConnectionState.CONNECTED


# -- presence ---------------------------------------------------------------


async def test_presence_clean_disconnect(make_peer):
    observer = await make_peer()
    peer = await make_peer()
    await wait_until(lambda: peer.client_id in observer.peers(), "observer sees the peer arrive")

    await peer.disconnect()

    await wait_until(lambda: peer.client_id not in observer.peers(), "observer sees the peer leave")
    assert peer.client_id not in observer.peers()


_PEER_SCRIPT = """
import asyncio, sys
from mnemoq5 import MnemoQ

async def main():
    client = MnemoQ(port=int(sys.argv[1]), control_prefix=sys.argv[2])
    await client.connect()
    print(client.client_id, flush=True)
    # Stay connected until the test kills this process or closes standard input.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


async def test_presence_process_killed(broker, make_peer, control_prefix):
    observer = await make_peer()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PEER_SCRIPT,
        str(broker.port),
        control_prefix,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        peer_id = line.decode().strip()
        if not peer_id:
            errors = await asyncio.wait_for(process.stderr.read(), 10)
            pytest.fail(f"the peer process exited before connecting:\n{errors.decode(errors='replace')}")
        await wait_until(lambda: peer_id in observer.peers(), "observer sees the peer arrive")

        # SIGKILL skips DISCONNECT, so only the will clears the retained presence.
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)

        await wait_until(lambda: peer_id not in observer.peers(), "observer sees the peer leave")
        assert peer_id not in observer.peers()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_presence_connection_dropped(make_peer):
    observer = await make_peer()
    peer = await make_peer(reconnect_min_delay=5.0, reconnect_max_delay=10.0)
    await wait_until(lambda: peer.client_id in observer.peers(), "observer sees the peer arrive")

    # Closing the socket without DISCONNECT makes the broker publish the will.
    peer._connection._client._connection._transport.abort()

    await wait_until(lambda: peer.client_id not in observer.peers(), "observer sees the peer leave")
    assert peer.client_id not in observer.peers()
