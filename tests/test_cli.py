"""Tests of the mnemoq5 command line, run as subprocesses against private Mosquitto brokers."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoq5 import _cli
from mnemoq5._message import Message
from mnemoq5._stamp import Stamp

from .broker import Mosquitto, free_port

PROJECT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0
STAMP_TEXT = re.compile(r"^\d+:\d+$")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnemoq5", *args]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command(*args), input=stdin, capture_output=True, cwd=PROJECT, timeout=TIMEOUT, check=False
    )


def on(broker: Mosquitto) -> list[str]:
    return ["-h", broker.host, "-p", str(broker.port)]


def unique_id(role: str) -> str:
    return f"cli{role}{uuid.uuid4().hex[:12]}"


def error_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


class Running:
    """A command started in the background, whose stderr can be read line by line."""

    def __init__(self, args: list[str], stdin: bytes | None = None) -> None:
        self.process = subprocess.Popen(
            command(*args),
            cwd=PROJECT,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Unbuffered pipes, so wait_for_stderr() leaves nothing in a Python buffer
            # that communicate() would not see.
            bufsize=0,
        )
        self.stderr_lines: list[str] = []
        if stdin is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(stdin)
            self.process.stdin.close()

    def wait_for_stderr(self, text: str, timeout: float = 15.0) -> None:
        """Read stderr lines until one contains ``text``; fail after ``timeout`` seconds."""
        stream = self.process.stderr
        assert stream is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {text!r} on stderr within {timeout} s; stderr so far: {self.stderr_lines}")
            ready, _, _ = select.select([stream], [], [], remaining)
            if not ready:
                continue
            line = stream.readline().decode()
            if line == "":
                pytest.fail(f"the command exited before printing {text!r}; stderr: {self.stderr_lines}")
            self.stderr_lines.append(line)
            if text in line:
                return

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """Wait for the exit; return the status, stdout and all of stderr."""
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stdout.decode(), "".join(self.stderr_lines) + stderr.decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=TIMEOUT)


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Factory of background commands, killed at teardown if still running."""
    running: list[Running] = []

    def make(*args: str, stdin: bytes | None = None) -> Running:
        instance = Running(list(args), stdin)
        running.append(instance)
        return instance

    yield make
    for instance in running:
        instance.stop()


@pytest.fixture
def control_prefix() -> str:
    """A control prefix of its own, so only this test's processes see each other as peers."""
    return f"mq5cli{uuid.uuid4().hex[:10]}"


def start_sub(start: Callable[..., Running], *args: str) -> Running:
    subscriber = start("sub", *args)
    subscriber.wait_for_stderr("subscribed to")
    return subscriber


def start_server(start: Callable[..., Running], *args: str) -> Running:
    server = start("pub", "--serve", *args)
    server.wait_for_stderr("serving catch-up")
    return server


def start_peer(start: Callable[..., Running], *args: str) -> Running:
    peer = start("peer", *args)
    peer.wait_for_stderr("standby for")
    return peer


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- publish and subscribe ---------------------------------------------------


def test_pub_sub_round_trip(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/greeting"
    publisher_id = unique_id("pub")
    subscriber = start_sub(start, *on(broker), "-t", f"{topic_root}/#", "-C", "1")

    published = run("pub", *on(broker), "-t", topic, "-m", "hello world", "-i", publisher_id)
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    assert stdout == f"{topic}\thello world\t{publisher_id}\tlive\n"


def test_sub_json_binary(broker: Mosquitto, topic_root: str, start: Callable[..., Running], tmp_path: Path) -> None:
    topic = f"{topic_root}/blob"
    payload = bytes([0xFF, 0x00, 0xC3, 0x28, 0x0A])
    message_file = tmp_path / "payload.bin"
    message_file.write_bytes(payload)
    publisher_id = unique_id("pub")
    subscriber = start_sub(start, *on(broker), "-t", topic, "-q", "1", "-C", "1", "--json")

    published = run(
        "pub", *on(broker), "-t", topic, "-f", str(message_file), "-q", "1",
        "-i", publisher_id, "-D", "unit", "bytes", "-D", "unit", "raw",
    )
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    [record] = json_lines(stdout)
    assert record["topic"] == topic
    assert record["payload_encoding"] == "base64"
    assert base64.b64decode(record["payload"]) == payload
    assert record["qos"] == 1
    assert record["retain"] is False
    assert record["sender"] == publisher_id
    assert record["replayed"] is False
    assert record["user_properties"] == [["unit", "bytes"], ["unit", "raw"]]
    assert STAMP_TEXT.match(record["stamp"])


def test_sub_json_text(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/text"
    subscriber = start_sub(start, *on(broker), "-t", topic, "-C", "1", "--json")

    published = run("pub", *on(broker), "-t", topic, "-m", "grüße\tand tab")
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    [record] = json_lines(stdout)
    assert record["payload"] == "grüße\tand tab"
    assert "payload_encoding" not in record


def test_sub_text_control_characters(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/lines"
    subscriber = start_sub(start, *on(broker), "-t", topic, "-C", "1")

    published = run("pub", *on(broker), "-t", topic, "-s", stdin=b"two\nlines")
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    fields = stdout.rstrip("\n").split("\t")
    assert fields[1] == "base64:" + base64.b64encode(b"two\nlines").decode()


def test_pub_stdin_lines(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/lines"
    subscriber = start_sub(start, *on(broker), "-t", topic, "-q", "1", "-C", "3", "--json")

    published = run("pub", *on(broker), "-t", topic, "-q", "1", "-l", stdin=b"one\ntwo\r\n\nthree")
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    assert [record["payload"] for record in json_lines(stdout)] == ["one", "two", "three"]


def test_pub_retain(broker: Mosquitto, topic_root: str) -> None:
    topic = f"{topic_root}/kept"

    published = run("pub", *on(broker), "-t", topic, "-m", "kept", "-r")
    received = run("sub", *on(broker), "-t", topic, "-C", "1", "-W", "10", "--json")

    assert published.returncode == 0, published.stderr
    assert received.returncode == 0, received.stderr
    [record] = json_lines(received.stdout.decode())
    assert record["payload"] == "kept"
    assert record["retain"] is True


def test_sub_timeout_without_messages(broker: Mosquitto, topic_root: str) -> None:
    result = run("sub", *on(broker), "-t", f"{topic_root}/silent", "-W", "0.2")

    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


def test_sub_timeout_before_count(broker: Mosquitto, topic_root: str) -> None:
    result = run("sub", *on(broker), "-t", f"{topic_root}/silent", "-C", "2", "-W", "0.2")

    assert result.returncode == 1
    assert error_lines(result)[-1] == "mnemoq5: error: timed out after 0.2 s with 0 of 2 messages received"


# -- catch-up, reload and peers ---------------------------------------------


def test_sub_catch_up_replays(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]
) -> None:
    topic = f"{topic_root}/value"
    server_id = unique_id("srv")
    prefix = ["--control-prefix", control_prefix]
    server = start_server(start, *on(broker), *prefix, "-t", topic, "-m", "21.5", "-i", server_id)

    received = run("sub", *on(broker), *prefix, "-t", f"{topic_root}/#", "--catch-up", "-C", "1", "-W", "10", "--json")

    assert received.returncode == 0, received.stderr
    [record] = json_lines(received.stdout.decode())
    assert record["topic"] == topic
    assert record["payload"] == "21.5"
    assert record["sender"] == server_id
    assert record["replayed"] is True
    server.process.send_signal(signal.SIGTERM)
    status, _, stderr = server.finish()
    assert status == 0, stderr


def test_reload_table(broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/value"
    server_id = unique_id("srv")
    prefix = ["--control-prefix", control_prefix]
    start_server(start, *on(broker), *prefix, "-t", topic, "-m", "21.5", "-i", server_id)

    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["TOPIC", "VALUE", "SENDER", "AGE"]
    assert lines[1].split()[:3] == [topic, "21.5", server_id]
    assert lines[2] == "1 of 1 peers answered"
    assert len(lines) == 3


def test_reload_json(broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/value"
    server_id = unique_id("srv")
    prefix = ["--control-prefix", control_prefix]
    start_server(start, *on(broker), *prefix, "-t", topic, "-m", "21.5", "-i", server_id)

    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["filter"] == f"{topic_root}/#"
    assert report["complete"] is True
    assert report["peers_answered"] == 1
    assert report["peers_asked"] == 1
    assert report["missing"] == []
    [value] = report["values"]
    assert value["topic"] == topic
    assert value["payload"] == "21.5"
    assert value["sender"] == server_id
    assert value["age_ms"] >= 0


def test_reload_no_values(broker: Mosquitto, topic_root: str, control_prefix: str) -> None:
    result = run("reload", *on(broker), "--control-prefix", control_prefix, "-t", f"{topic_root}/#")

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [f"no values match {topic_root}/#", "0 of 0 peers answered"]


def test_peers_lists_server(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]
) -> None:
    server_id = unique_id("srv")
    prefix = ["--control-prefix", control_prefix]
    start_server(start, *on(broker), *prefix, "-t", f"{topic_root}/value", "-m", "1", "-i", server_id)

    result = run("peers", *on(broker), *prefix, "--json")

    assert result.returncode == 0, result.stderr
    [peer] = json.loads(result.stdout)
    assert peer["id"] == server_id
    assert isinstance(peer["started_ms"], int)


def test_pub_store_survives_exit(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    store = str(tmp_path / "values.sqlite")
    prefix = ["--control-prefix", control_prefix]

    first = run("pub", *on(broker), *prefix, "--store", store, "-t", f"{topic_root}/first", "-m", "1")
    start_server(start, *on(broker), *prefix, "--store", store, "-t", f"{topic_root}/second", "-m", "2")
    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")

    assert first.returncode == 0, first.stderr
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)["values"]
    assert [(value["topic"], value["payload"]) for value in values] == [
        (f"{topic_root}/first", "1"),
        (f"{topic_root}/second", "2"),
    ]


# -- standby peer, expiry and deletion ---------------------------------------


def test_peer_serves_after_publisher_exit(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]
) -> None:
    topic = f"{topic_root}/value"
    publisher_id = unique_id("pub")
    prefix = ["--control-prefix", control_prefix]
    peer = start_peer(start, *on(broker), *prefix, "-t", f"{topic_root}/#")

    published = run("pub", *on(broker), *prefix, "-t", topic, "-m", "42", "-q", "1", "-i", publisher_id)
    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")

    expected_ready = f"mnemoq5: standby for {topic_root}/# on {broker.host}:{broker.port}, 0 values stored\n"
    assert peer.stderr_lines[-1] == expected_ready
    assert published.returncode == 0, published.stderr
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["peers_answered"] == 1
    [value] = report["values"]
    assert value["topic"] == topic
    assert value["payload"] == "42"
    assert value["sender"] == publisher_id
    assert value["deleted"] is False


def test_peer_store_survives_restart(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    topic = f"{topic_root}/value"
    publisher_id = unique_id("pub")
    peer_args = [*on(broker), "--control-prefix", control_prefix, "--store", str(tmp_path / "standby.sqlite")]
    reload_args = [*on(broker), "--control-prefix", control_prefix, "-t", f"{topic_root}/#", "--json"]
    first = start_peer(start, *peer_args, "-t", f"{topic_root}/#")
    published = run("pub", *on(broker), "--control-prefix", control_prefix, "-t", topic, "-m", "kept",
                    "-q", "1", "-i", publisher_id)
    # The first peer serves the value, so it has stored it before it stops.
    before = run("reload", *reload_args)
    first.process.send_signal(signal.SIGTERM)
    first_status, _, first_stderr = first.finish()

    second = start_peer(start, *peer_args, "-t", f"{topic_root}/#")
    after = run("reload", *reload_args)

    assert published.returncode == 0, published.stderr
    assert [value["payload"] for value in json.loads(before.stdout)["values"]] == ["kept"]
    assert first_status == 0, first_stderr
    assert second.stderr_lines[-1].endswith(", 1 value stored\n")
    assert after.returncode == 0, after.stderr
    [value] = json.loads(after.stdout)["values"]
    assert value["payload"] == "kept"
    assert value["sender"] == publisher_id


def test_peer_sigint_exits_0(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    peer = start_peer(start, *on(broker), "-t", f"{topic_root}/#")

    peer.process.send_signal(signal.SIGINT)
    status, _, stderr = peer.finish()

    assert status == 0, stderr
    assert "Traceback" not in stderr


def test_pub_expiry(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/short"
    subscriber = start_sub(start, *on(broker), "-t", topic, "-q", "1", "-C", "1", "--json")

    published = run("pub", *on(broker), "-t", topic, "-m", "soon gone", "-q", "1", "-e", "60")
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    [record] = json_lines(stdout)
    assert record["payload"] == "soon gone"
    # The broker forwards the lifetime left, which may have lost a second in transit.
    assert record["expiry"] <= 60
    assert record["expiry"] >= 50


def test_reload_json_expiry(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]
) -> None:
    prefix = ["--control-prefix", control_prefix]
    start_server(start, *on(broker), *prefix, "-t", f"{topic_root}/short", "-m", "1", "--expiry", "600")

    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")

    assert result.returncode == 0, result.stderr
    [value] = json.loads(result.stdout)["values"]
    assert value["expiry"] <= 600
    assert value["expiry"] >= 590


def test_delete_seen_by_sub(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/gone"
    deleter_id = unique_id("del")
    subscriber = start_sub(start, *on(broker), "-t", topic, "-q", "1", "-C", "1")

    deleted = run("delete", *on(broker), "-t", topic, "-i", deleter_id)
    status, stdout, stderr = subscriber.finish()

    assert deleted.returncode == 0, deleted.stderr
    assert status == 0, stderr
    assert stdout == f"{topic}\t\t{deleter_id}\tlive\tdeleted\n"


def test_delete_seen_by_sub_json(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    topic = f"{topic_root}/gone"
    subscriber = start_sub(start, *on(broker), "-t", topic, "-q", "1", "-C", "1", "--json")

    deleted = run("delete", *on(broker), "-t", topic)
    status, stdout, stderr = subscriber.finish()

    assert deleted.returncode == 0, deleted.stderr
    assert status == 0, stderr
    [record] = json_lines(stdout)
    assert record["deleted"] is True
    assert record["payload"] == ""
    assert record["expiry"] is None


def test_delete_serve_hides_old_value(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running]
) -> None:
    topic = f"{topic_root}/gone"
    deleter_id = unique_id("del")
    prefix = ["--control-prefix", control_prefix]
    start_server(start, *on(broker), *prefix, "-t", topic, "-m", "old")
    deleter = start("delete", "--serve", *on(broker), *prefix, "-t", topic, "-i", deleter_id)
    deleter.wait_for_stderr("serving catch-up")

    report = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")
    table = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#")
    replayed = run("sub", *on(broker), *prefix, "-t", f"{topic_root}/#", "--catch-up", "-C", "1", "-W", "10")

    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["peers_answered"] == 2
    [value] = json.loads(report.stdout)["values"]
    assert value["topic"] == topic
    assert value["deleted"] is True
    assert value["sender"] == deleter_id
    assert table.stdout.decode().splitlines()[1].split()[:3] == [topic, "(deleted)", deleter_id]
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.decode() == f"{topic}\t\t{deleter_id}\treplayed\tdeleted\n"


def test_delete_store_keeps_tombstone(
    broker: Mosquitto, topic_root: str, control_prefix: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    topic = f"{topic_root}/gone"
    deleter_id = unique_id("del")
    store = str(tmp_path / "tombstones.sqlite")
    prefix = ["--control-prefix", control_prefix]

    deleted = run("delete", *on(broker), *prefix, "--store", store, "-t", topic, "-i", deleter_id)
    peer = start_peer(start, *on(broker), *prefix, "--store", store, "-t", f"{topic_root}/#")
    result = run("reload", *on(broker), *prefix, "-t", f"{topic_root}/#", "--json")

    assert deleted.returncode == 0, deleted.stderr
    assert peer.stderr_lines[-1].endswith(", 0 values stored\n")
    assert result.returncode == 0, result.stderr
    [value] = json.loads(result.stdout)["values"]
    assert value["deleted"] is True
    assert value["sender"] == deleter_id


def test_peer_store_locked(
    broker: Mosquitto, topic_root: str, start: Callable[..., Running], tmp_path: Path
) -> None:
    store = str(tmp_path / "standby.sqlite")
    start_peer(start, *on(broker), "--store", store, "-t", f"{topic_root}/#")

    result = run("peer", *on(broker), "--store", store, "-t", f"{topic_root}/#")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("mnemoq5: error: ")
    assert store in lines[0]


# -- signals ----------------------------------------------------------------


def test_sub_sigint_exits_130(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    subscriber = start_sub(start, *on(broker), "-t", f"{topic_root}/#")

    subscriber.process.send_signal(signal.SIGINT)
    status, stdout, stderr = subscriber.finish()

    assert status == 130
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "error" not in stderr


def test_sub_sigterm_exits_143(broker: Mosquitto, topic_root: str, start: Callable[..., Running]) -> None:
    subscriber = start_sub(start, *on(broker), "-t", f"{topic_root}/#")

    subscriber.process.send_signal(signal.SIGTERM)
    status, _, stderr = subscriber.finish()

    assert status == 143
    assert "Traceback" not in stderr


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_on_signal(
    broker: Mosquitto, topic_root: str, start: Callable[..., Running], number: signal.Signals
) -> None:
    server = start_server(start, *on(broker), "-t", f"{topic_root}/value", "-m", "1")

    server.process.send_signal(number)
    status, _, stderr = server.finish()

    assert status == 0, stderr
    assert "Traceback" not in stderr


# -- help and errors --------------------------------------------------------


@pytest.mark.parametrize("name", ["", "pub", "sub", "reload", "peers", "peer", "delete", "demo"])
def test_help_exits_zero(name: str) -> None:
    result = run(*([name] if name else []), "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"usage: mnemoq5")


def test_pub_help_durability() -> None:
    result = run("pub", "--help")

    text = " ".join(result.stdout.decode().split())
    assert "the value leaves with the process unless a durable store is given with --store FILE" in text


def test_delete_help_durability() -> None:
    result = run("delete", "--help")

    text = " ".join(result.stdout.decode().split())
    assert "the tombstone leaves with the process unless a durable store is given with --store FILE" in text


def test_peer_help_store() -> None:
    result = run("peer", "--help")

    text = " ".join(result.stdout.decode().split())
    assert "With --store FILE they are kept in an SQLite file and survive a restart" in text


@pytest.mark.parametrize("broker_args", [["-h", "127.0.0.1"], []])
def test_demo_named_broker(broker_args: list[str]) -> None:
    port = free_port()

    result = run("demo", *broker_args, "-p", str(port))

    assert result.returncode == 1
    stdout = result.stdout.decode()
    assert f"using the broker at 127.0.0.1:{port}" in stdout
    assert "private Mosquitto" not in stdout
    assert "RESULT: FAIL" in stdout


@pytest.mark.parametrize(
    "args",
    [
        ["pub", "-t", "a", "-m", "x"],
        ["sub", "-t", "a"],
        ["reload", "-t", "a/#"],
        ["peers"],
        ["peer", "-t", "a/#"],
        ["delete", "-t", "a"],
    ],
)
def test_unreachable_broker(args: list[str]) -> None:
    port = free_port()

    result = run(*args, "-h", "127.0.0.1", "-p", str(port), "--connect-timeout", "5")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("mnemoq5: error: ")
    assert f"127.0.0.1:{port}" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["pub", "-t", "a/+/b", "-m", "x"],
        ["pub", "-t", "", "-m", "x"],
        ["sub", "-t", "a/#/b"],
        ["sub", "-t", "a/b+"],
        ["reload", "-t", "a/#/b"],
        ["peer", "-t", "a/#/b"],
        ["delete", "-t", "a/+"],
    ],
)
def test_invalid_topic(broker: Mosquitto, args: list[str]) -> None:
    result = run(*args, *on(broker))

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("mnemoq5: error: invalid topic ")


@pytest.mark.parametrize(
    "args",
    [
        ["pub", "-t", "a", "-m", "x", "--no-such-option"],
        ["pub", "-t", "a", "-m", "x", "-q", "3"],
        ["pub", "-t", "a"],
        ["pub", "-t", "a", "-m", "x", "-n"],
        ["pub", "-t", "a", "-m", "x", "-p", "70000"],
        ["sub"],
        ["sub", "-t", "a", "-C", "0"],
        ["sub", "-t", "a", "-W", "soon"],
        ["reload", "-t", "a/#", "--timeout", "-1"],
        ["pub", "-t", "a", "-m", "x", "-e", "0"],
        ["pub", "-t", "a", "-m", "x", "--expiry", "4294967296"],
        ["peer"],
        ["peer", "-t", "a/#", "-q", "3"],
        ["delete"],
        ["delete", "-t", "a", "-q", "3"],
        ["unknown-command"],
        [],
    ],
)
def test_bad_option_exits_2(args: list[str]) -> None:
    result = run(*args)

    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert error_lines(result)[-1].startswith("mnemoq5")


def test_reserved_user_property(broker: Mosquitto) -> None:
    result = run("pub", *on(broker), "-t", "a", "-m", "x", "-D", "mnemoq5:id", "forged")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert "reserved prefix" in lines[0]


def test_message_file_missing(broker: Mosquitto, tmp_path: Path) -> None:
    missing = tmp_path / "absent.bin"

    result = run("pub", *on(broker), "-t", "a", "-f", str(missing))

    assert result.returncode == 1
    expected = f"mnemoq5: error: cannot read message file {str(missing)!r}: No such file or directory"
    assert error_lines(result) == [expected]


# -- TLS --------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, int, Path]]:
    """A Mosquitto with a plain listener and a TLS listener; yields it, the TLS port and the CA file.

    The server certificate names only DNS:localhost, so a client that connects to
    127.0.0.1 and checks the host name rejects it.
    """
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    directory = tmp_path_factory.mktemp("tls")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=mnemoq5 test CA", cwd=directory)
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)
    tls_port = free_port()
    config = directory / "mosquitto-tls.conf"
    # Mosquitto 2.0 started as root switches to the user "mosquitto" unless the
    # configuration names another user, and that user cannot read this private directory.
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        (PROJECT / "tests" / "brokers" / "mosquitto.conf").read_text()
        + user
        + f"listener {tls_port} 127.0.0.1\n"
        + f"cafile {directory / 'ca.crt'}\ncertfile {directory / 'server.crt'}\nkeyfile {directory / 'server.key'}\n"
    )
    # Mosquitto joins the name to tests/brokers, and an absolute path replaces that folder.
    # It appends its own plain listener after the TLS one and waits for that port.
    with Mosquitto(config=str(config)) as instance:
        yield instance, tls_port, directory / "ca.crt"


def test_tls_host_name_mismatch(tls_broker: tuple[Mosquitto, int, Path]) -> None:
    _, tls_port, ca_file = tls_broker

    result = run("pub", "-p", str(tls_port), "--cafile", str(ca_file), "-t", "a", "-m", "x")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{tls_port}" in lines[0]
    assert "CERTIFICATE_VERIFY_FAILED" in lines[0]


def test_tls_untrusted_ca(tls_broker: tuple[Mosquitto, int, Path]) -> None:
    _, tls_port, _ = tls_broker

    result = run("pub", "-p", str(tls_port), "--tls", "--insecure", "-t", "a", "-m", "x")

    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr.decode()


def test_tls_insecure_round_trip(
    tls_broker: tuple[Mosquitto, int, Path], topic_root: str, start: Callable[..., Running]
) -> None:
    _, tls_port, ca_file = tls_broker
    tls = ["-p", str(tls_port), "--cafile", str(ca_file), "--insecure"]
    topic = f"{topic_root}/secret"
    subscriber = start_sub(start, *tls, "-t", topic, "-C", "1")

    published = run("pub", *tls, "-t", topic, "-m", "over tls", "-i", "clitlspub")
    status, stdout, stderr = subscriber.finish()

    assert published.returncode == 0, published.stderr
    assert status == 0, stderr
    assert stdout == f"{topic}\tover tls\tclitlspub\tlive\n"


def test_tls_cafile_missing(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"

    result = run("pub", "-p", str(free_port()), "--cafile", str(missing), "-t", "a", "-m", "x")

    assert result.returncode == 1
    assert error_lines(result) == [f"mnemoq5: error: --cafile file {str(missing)!r} not found"]


def test_tls_key_without_cert(tmp_path: Path) -> None:
    result = run("pub", "--key", str(tmp_path / "client.key"), "-t", "a", "-m", "x")

    assert result.returncode == 2
    assert "--key needs --cert" in result.stderr.decode()


# -- output formats ---------------------------------------------------------


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (999, "999 ms"),
        (1_000, "1.0 s"),
        (12_345, "12.3 s"),
        (60_000, "1 min 0 s"),
        (245_000, "4 min 5 s"),
        (3_600_000, "1 h 0 min"),
        (7_380_000, "2 h 3 min"),
        (90_000_000, "1 d 1 h"),
    ],
)
def test_format_age(millis: int | None, text: str) -> None:
    assert _cli._format_age(millis) == text


def test_message_record_plain_mqtt() -> None:
    record = _cli.message_record(Message(topic="a/b", payload=b"v"))

    assert record == {
        "topic": "a/b",
        "payload": "v",
        "qos": 0,
        "retain": False,
        "sender": None,
        "replayed": False,
        "deleted": False,
        "expiry": None,
        "user_properties": [],
        "stamp": None,
    }


def test_message_record_stamp() -> None:
    message = Message(topic="a", payload=b"", sender="peer", stamp=Stamp(1_700_000_000_000, 7, "peer"))

    assert _cli.message_record(message)["stamp"] == "1700000000000:7"
