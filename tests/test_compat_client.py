"""One conformance suite run against several brokers and both protocol modes.

Each test takes the ``fleet`` fixture, parametrised over these targets:

- ``mosquitto_v5``: Mosquitto 2 with MQTT v5 clients (the envelope in user properties);
- ``mosquitto_compat``: Mosquitto 2 with compat clients (MQTT 3.1.1, payload prefix);
- ``amqtt_compat``: amqtt, which speaks only MQTT 3.1.1, with compat clients;
- ``rabbitmq_compat``: a private RabbitMQ node with its MQTT plugin, with compat
  clients, skipped when ``rabbitmq-server`` is not installed or the node cannot start.

compat/run.py runs each target on its own and writes the results table in
compat/README.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from mnemoq5 import MnemoQ
from mnemoq5._compat import MAGIC, decode_compat
from mnemoq5._envelope import KEY_ID, KEY_KIND

from .broker import LOOPBACK, free_port, wait_for_port
from .conftest import next_message
from .helpers import PahoPeer, messages_until, wait_until

TIMEOUT = 5.0
COMPAT_DIR = Path(__file__).parent.parent / "compat" / "brokers"

# -- a private RabbitMQ node ------------------------------------------------

RABBITMQ_START_TIMEOUT = 90.0


def find_rabbitmq_server() -> Path | None:
    """Return the rabbitmq-server script that runs the node as the calling user, or None.

    Debian installs /usr/sbin/rabbitmq-server as a link to a wrapper that switches to
    the ``rabbitmq`` user, changes to /var/lib/rabbitmq and logs to /var/log/rabbitmq:
    the system node's files. The real script sits next to the wrapper.
    """
    found = shutil.which("rabbitmq-server")
    if found is None and os.path.exists("/usr/sbin/rabbitmq-server"):
        found = "/usr/sbin/rabbitmq-server"
    if found is None:
        return None
    script = Path(os.path.realpath(found)).parent / "rabbitmq-server"
    return script if script.exists() else None


class RabbitMQ:
    """A RabbitMQ node of its own: own node name, ports, epmd, data, logs, plugins and HOME.

    Nothing is shared with a system node: the environment starts empty except for PATH,
    so no RABBITMQ_* variable and no /etc/rabbitmq file applies, and the node registers
    with a private epmd on a free port.
    """

    def __init__(self, script: Path) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self._script = script
        self._directory = tempfile.TemporaryDirectory(prefix="mnemoq5-rabbitmq-")
        root = Path(self._directory.name)
        self._log_path = root / "console.log"
        self._epmd_port = free_port()

        config = (COMPAT_DIR / "rabbitmq.conf").read_text()
        config = config.replace("{amqp_port}", str(free_port())).replace("{mqtt_port}", str(self.port))
        (root / "rabbitmq.conf").write_text(config)
        shutil.copy(COMPAT_DIR / "rabbitmq_enabled_plugins", root / "enabled_plugins")
        (root / "rabbitmq-env.conf").write_text("")
        for name in ("home", "mnesia", "log"):
            (root / name).mkdir()

        self._environment = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LC_ALL": "C.UTF-8",
            # The Erlang cookie is created in HOME, so the node gets its own.
            "HOME": str(root / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": f"mnemoq5-{uuid.uuid4().hex[:8]}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RabbitMQ:
        """Start the node and wait until the MQTT listener accepts connections; raise RuntimeError."""
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self._script)],
                env=self._environment,
                cwd=self._directory.name,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + RABBITMQ_START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with status {self._process.returncode}:\n{self.log()}")
            try:
                wait_for_port(self.port, timeout=1.0)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"RabbitMQ did not open its MQTT listener within {RABBITMQ_START_TIMEOUT:g} s:\n{self.log()}"
                    ) from None

    def stop(self) -> None:
        """Stop the node with SIGTERM (the script forwards it to the VM), then its private epmd."""
        process = self._process
        self._process = None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                # The node and the script run in a process group of their own.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        epmd = shutil.which("epmd")
        if epmd is not None:
            subprocess.run(
                [epmd, "-port", str(self._epmd_port), "-kill"],
                env=self._environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )

    def log(self) -> str:
        """Return the console output and the node's log files."""
        parts = [self._log_path.read_text(errors="replace") if self._log_path.exists() else ""]
        for path in sorted((Path(self._directory.name) / "log").glob("*.log")):
            parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)[-4000:]

    def close(self) -> None:
        self.stop()
        self._directory.cleanup()


@pytest.fixture(scope="session")
def session_rabbitmq() -> Iterator[RabbitMQ]:
    """One private RabbitMQ node with the MQTT plugin for the session, or a skip with the reason."""
    script = find_rabbitmq_server()
    if script is None:
        pytest.skip("rabbitmq-server is not installed")
    node = RabbitMQ(script)
    try:
        node.start()
    except RuntimeError as error:
        node.close()
        pytest.skip(f"the private RabbitMQ node did not start: {error}")
    try:
        yield node
    finally:
        node.close()


# -- targets ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A broker and the protocol mode of the clients under test."""

    broker: str
    compat: bool

    @property
    def name(self) -> str:
        return f"{self.broker}_{'compat' if self.compat else 'v5'}"


MOSQUITTO_V5 = Target("mosquitto", compat=False)
MOSQUITTO_COMPAT = Target("mosquitto", compat=True)
AMQTT_COMPAT = Target("amqtt", compat=True)
RABBITMQ_COMPAT = Target("rabbitmq", compat=True)

_BROKER_FIXTURES = {"mosquitto": "broker", "amqtt": "session_amqtt", "rabbitmq": "session_rabbitmq"}

# RabbitMQ 3.10 delivers a retained message only to a subscription whose filter is the
# topic itself, never to a wildcard filter. Presence is retained and read with
# "<prefix>/presence/+", so a client that connects later learns of the peers that were
# already live only when they introduce themselves, after connect() has returned. A
# reload() right after connect() may then miss them; catch_up subscriptions ask each
# peer when its introduction arrives. Not strict: the outcome depends on that race.
_NO_WILDCARD_RETAINED = pytest.mark.xfail(
    reason="RabbitMQ 3.10 sends no retained message to a wildcard subscription; peers are learned from "
    "introductions that may arrive after connect() returns",
    strict=False,
)

_TARGETS = (MOSQUITTO_V5, MOSQUITTO_COMPAT, AMQTT_COMPAT, RABBITMQ_COMPAT)
ALL_TARGETS = [pytest.param(target, id=target.name) for target in _TARGETS]
# For tests where a client must see the peers that were live before it connected.
LATE_JOINER_TARGETS = [
    pytest.param(target, id=target.name, marks=[_NO_WILDCARD_RETAINED] if target is RABBITMQ_COMPAT else [])
    for target in _TARGETS
]


# -- helpers ------------------------------------------------------------------


def envelope_sender_and_kind(message: paho.MQTTMessage) -> tuple[str | None, str | None]:
    """Read the mnemoq5 sender and kind of a raw message in either envelope form."""
    properties = getattr(message.properties, "UserProperty", None) or []
    values = dict(properties)
    if KEY_ID in values:
        return values[KEY_ID], values.get(KEY_KIND)
    decoded = decode_compat(message.payload)
    if decoded is None:
        return None, None
    header, _ = decoded
    return header.sender, header.kind.value


@dataclass
class Fleet:
    """Connected MnemoQ clients and plain paho clients on one target, closed at teardown."""

    target: Target
    host: str
    port: int
    control_prefix: str
    clients: list[MnemoQ] = field(default_factory=list)
    plain_clients: list[PahoPeer] = field(default_factory=list)

    async def peer(self, **settings: Any) -> MnemoQ:
        """Return a connected MnemoQ in the target's mode that shares this test's control prefix."""
        settings.setdefault("control_prefix", self.control_prefix)
        settings.setdefault("compat", self.target.compat)
        client = MnemoQ(host=self.host, port=self.port, **settings)
        await client.connect()
        self.clients.append(client)
        return client

    async def plain(self, *, v5: bool = False) -> PahoPeer:
        """Return a connected paho client; an MQTT 3.1.1 one unless ``v5``."""
        client = await PahoPeer(self.host, self.port, v5=v5).start()
        self.plain_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.disconnect()
        for plain in self.plain_clients:
            plain.stop()


@pytest.fixture
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """A Fleet on the target given by indirect parametrisation; each test has its own control prefix."""
    target: Target = request.param
    broker = request.getfixturevalue(_BROKER_FIXTURES[target.broker])
    instance = Fleet(target, broker.host, broker.port, f"mq5x-{uuid.uuid4().hex[:10]}")
    try:
        yield instance
    finally:
        await instance.close()


# -- publish and subscribe ----------------------------------------------------


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_publish_sender_properties_payload(fleet: Fleet, topic_root: str) -> None:
    subscriber = await fleet.peer()
    publisher = await fleet.peer()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)
    payload = bytes(range(256)) + b"\x00"
    properties = [("k", "1"), ("k", "1"), ("a", ""), ("k", "3"), ("ünï", "cödé")]

    entry = await publisher.publish(f"{topic_root}/a", payload, qos=1, user_properties=properties)
    message = await next_message(subscriber)

    assert message.topic == f"{topic_root}/a"
    assert message.payload == payload
    assert message.sender == publisher.client_id
    assert message.user_properties == properties
    assert message.stamp == entry.stamp
    assert message.replayed is False


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_publish_empty_payload(fleet: Fleet, topic_root: str) -> None:
    subscriber = await fleet.peer()
    publisher = await fleet.peer()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)

    await publisher.publish(f"{topic_root}/empty", b"", qos=1)
    message = await next_message(subscriber)

    assert message.payload == b""
    assert message.sender == publisher.client_id


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_payload_starting_with_magic(fleet: Fleet, topic_root: str) -> None:
    subscriber = await fleet.peer()
    publisher = await fleet.peer()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)
    # The magic alone, and the magic followed by the bytes of a plausible compat prefix.
    payloads = [MAGIC, MAGIC + b"\x01\x00\x00\x00\x02\xa0\x00tail"]

    received = []
    for index, payload in enumerate(payloads):
        await publisher.publish(f"{topic_root}/{index}", payload, qos=1)
        received.append(await next_message(subscriber))

    for payload, message in zip(payloads, received, strict=True):
        assert message.payload == payload
        assert message.sender == publisher.client_id


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_plain_publisher_sender_none(fleet: Fleet, topic_root: str) -> None:
    subscriber = await fleet.peer()
    await subscriber.subscribe(f"{topic_root}/#", qos=1)
    plain = await fleet.plain()

    await plain.publish(f"{topic_root}/plain", b"\x00plain bytes")
    message = await next_message(subscriber)

    assert message.payload == b"\x00plain bytes"
    assert message.sender is None
    assert message.stamp is None
    assert message.user_properties == []


# -- self-filtering -------------------------------------------------------------


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_own_publish_not_delivered(fleet: Fleet, topic_root: str) -> None:
    client = await fleet.peer()
    other = await fleet.peer()
    await client.subscribe(f"{topic_root}/#", qos=1)
    own_dropped = client.stats.own_dropped

    await client.publish(f"{topic_root}/own", b"mine", qos=1)
    if fleet.target.compat:
        # An MQTT 3.1.1 broker sends the publication back, because 3.1.1 has no
        # NoLocal, and the client drops it by sender. amqtt may deliver it after
        # later publications of other clients, so the test waits for the drop.
        await wait_until(lambda: client.stats.own_dropped > own_dropped, "the client drops its own publication")
    await other.publish(f"{topic_root}/marker", b"theirs", qos=1)
    received = await messages_until(client, f"{topic_root}/marker")

    assert [message.topic for message in received] == [f"{topic_root}/marker"]
    assert received[0].sender == other.client_id
    # With NoLocal set, a v5 broker does not send the publication back.
    expected_dropped = 1 if fleet.target.compat else 0
    assert client.stats.own_dropped - own_dropped == expected_dropped


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_own_reload_not_answered(fleet: Fleet, topic_root: str) -> None:
    requester = await fleet.peer(reply_jitter=0)
    responder = await fleet.peer()
    await requester.publish(f"{topic_root}/requester", b"r", qos=1)
    await responder.publish(f"{topic_root}/responder", b"p", qos=1)
    await wait_until(lambda: responder.client_id in requester.peers(), "requester sees the responder")
    reply_topic = f"{fleet.control_prefix}/reply/{requester.client_id}"
    spy = await fleet.plain(v5=not fleet.target.compat)
    await spy.subscribe(reply_topic)

    snapshot = await requester.reload(f"{topic_root}/#", timeout=TIMEOUT)
    # The marker comes back to the spy after every message sent earlier to the reply topic.
    # NOTE: amqtt does not keep that order across publishers, so there a late self-reply
    # could go unseen; Mosquitto and RabbitMQ keep it.
    await spy.publish(reply_topic, b"marker")
    replies = []
    for _ in range(100):
        message = await spy.next_message()
        if message.payload == b"marker":
            break
        replies.append(envelope_sender_and_kind(message))

    assert snapshot.complete
    assert snapshot.answered == {responder.client_id}
    assert {sender for sender, kind in replies if kind == "reply"} == {responder.client_id}


# -- catch-up -------------------------------------------------------------------


@pytest.mark.parametrize("fleet", LATE_JOINER_TARGETS, indirect=True)
async def test_reload_several_peers(fleet: Fleet, topic_root: str) -> None:
    publishers = [await fleet.peer() for _ in range(3)]
    expected = {}
    for index, publisher in enumerate(publishers):
        for level in ("a", "b/c"):
            topic = f"{topic_root}/p{index}/{level}"
            await publisher.publish(topic, f"{index}:{level}", qos=1)
            expected[topic] = (f"{index}:{level}".encode(), publisher.client_id)

    late = await fleet.peer()
    snapshot = await late.reload(f"{topic_root}/#", timeout=TIMEOUT)

    assert snapshot.complete
    assert snapshot.answered == {publisher.client_id for publisher in publishers}
    assert set(snapshot) == set(expected)
    for topic, (payload, sender) in expected.items():
        assert snapshot[topic].payload == payload
        assert snapshot[topic].sender == sender
        assert snapshot[topic].replayed is True


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_reload_peers_joined_later(fleet: Fleet, topic_root: str) -> None:
    # The requester is live first and learns of the others from their live presence,
    # which needs no retained message.
    requester = await fleet.peer()
    publishers = [await fleet.peer() for _ in range(2)]
    for publisher in publishers:
        await publisher.publish(f"{topic_root}/{publisher.client_id}", publisher.client_id, qos=1)
    ids = {publisher.client_id for publisher in publishers}
    await wait_until(lambda: ids <= set(requester.peers()), "requester sees both publishers")

    snapshot = await requester.reload(f"{topic_root}/#", timeout=TIMEOUT)

    assert snapshot.complete
    assert snapshot.answered == ids
    for publisher in publishers:
        assert snapshot[f"{topic_root}/{publisher.client_id}"].sender == publisher.client_id


@pytest.mark.parametrize("fleet", LATE_JOINER_TARGETS, indirect=True)
async def test_catch_up_subscribe_replayed(fleet: Fleet, topic_root: str) -> None:
    publisher = await fleet.peer()
    await publisher.publish(f"{topic_root}/a", b"A", qos=1, user_properties=[("unit", "m")])
    await publisher.publish(f"{topic_root}/b", b"B", qos=1)

    late = await fleet.peer()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True, timeout=TIMEOUT)
    received = [await next_message(late), await next_message(late)]

    by_topic = {message.topic: message for message in received}
    assert set(by_topic) == {f"{topic_root}/a", f"{topic_root}/b"}
    assert by_topic[f"{topic_root}/a"].payload == b"A"
    assert by_topic[f"{topic_root}/a"].user_properties == [("unit", "m")]
    assert by_topic[f"{topic_root}/b"].payload == b"B"
    for message in received:
        assert message.replayed is True
        assert message.sender == publisher.client_id


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_never_stale_newest_wins(fleet: Fleet, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    reader = await fleet.peer()
    await reader.subscribe(f"{topic_root}/#", qos=1)
    old_writer = await fleet.peer()
    new_writer = await fleet.peer()
    await new_writer.subscribe(topic, qos=1)

    # new_writer receives the old value first, so its clock moves past the old stamp.
    old = await old_writer.publish(topic, b"old", qos=1)
    assert (await next_message(new_writer)).payload == b"old"
    new = await new_writer.publish(topic, b"new", qos=1)
    live = await messages_until(reader, topic)
    live += await messages_until(reader, topic)
    await wait_until(
        lambda: {old_writer.client_id, new_writer.client_id} <= set(reader.peers()), "reader sees both writers"
    )
    stale_before = reader.stats.stale_dropped

    # Both writers reply. old_writer still stores the old value under the older stamp.
    snapshot = await reader.reload(f"{topic_root}/#", timeout=TIMEOUT)
    await old_writer.publish(f"{topic_root}/marker", b"marker", qos=1)
    after = await messages_until(reader, f"{topic_root}/marker")

    assert old.stamp < new.stamp
    assert [message.payload for message in live] == [b"old", b"new"]
    assert snapshot.complete
    assert snapshot[topic].payload == b"new"
    assert snapshot[topic].sender == new_writer.client_id
    assert reader.stats.stale_dropped - stale_before == 1
    # Nothing older than what the reader already delivered comes out of messages().
    assert [message.topic for message in after] == [f"{topic_root}/marker"]


@pytest.mark.parametrize("fleet", LATE_JOINER_TARGETS, indirect=True)
async def test_never_stale_late_reader(fleet: Fleet, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    old_writer = await fleet.peer()
    new_writer = await fleet.peer()
    await new_writer.subscribe(topic, qos=1)
    await old_writer.publish(topic, b"old", qos=1)
    assert (await next_message(new_writer)).payload == b"old"
    await new_writer.publish(topic, b"new", qos=1)

    late = await fleet.peer()
    await late.subscribe(f"{topic_root}/#", qos=1, catch_up=True, timeout=TIMEOUT)
    await new_writer.publish(f"{topic_root}/marker", b"marker", qos=1)
    received = await messages_until(late, f"{topic_root}/marker")

    # The replies arrive in either order: "old" may come out before "new", never after it.
    payloads = [message.payload for message in received if message.topic == topic]
    assert payloads[-1] == b"new"
    assert payloads in ([b"new"], [b"old", b"new"])


# -- presence -------------------------------------------------------------------


@pytest.mark.parametrize("fleet", ALL_TARGETS, indirect=True)
async def test_presence_appears_disappears(fleet: Fleet) -> None:
    watcher = await fleet.peer()
    peer = await fleet.peer()

    await wait_until(lambda: peer.client_id in watcher.peers(), "watcher sees the peer arrive")
    await peer.disconnect()
    await wait_until(lambda: peer.client_id not in watcher.peers(), "watcher sees the peer leave")

    assert watcher.client_id not in watcher.peers()


@pytest.mark.parametrize("fleet", LATE_JOINER_TARGETS, indirect=True)
async def test_presence_seen_by_late_joiner(fleet: Fleet) -> None:
    early = await fleet.peer()

    late = await fleet.peer()

    # connect() returns after the broker has sent every retained presence message.
    assert early.client_id in late.peers()
