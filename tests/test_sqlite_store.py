"""SqliteStore: persistence, the newer-only rule, start-up failures and SIGKILL durability."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnemoq5 import Entry, InvalidArgumentError, MemoryStore, MnemoQ, Stamp, StoreError, _sqlite
from mnemoq5._sqlite import (
    FORMAT_VERSION,
    SqliteStore,
    decode_stamp_key,
    encode_stamp_key,
    literal_prefix,
    prefix_upper_bound,
)

from .broker import Mosquitto

PUBLISHER = Path(__file__).with_name("sqlite_publisher.py")
LINE_TIMEOUT = 10.0


def make_entry(
    topic: str,
    payload: bytes = b"value",
    stamp: Stamp | None = None,
    *,
    qos: int = 1,
    retain: bool = False,
    user_properties: tuple[tuple[str, str], ...] = (),
    deleted: bool = False,
    expires_at: float | None = None,
) -> Entry:
    return Entry(
        topic,
        payload,
        qos,
        retain,
        user_properties,
        stamp or Stamp(1_700_000_000_000, 0, "writer"),
        deleted=deleted,
        expires_at=expires_at,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    instance = SqliteStore(db_path)
    yield instance
    instance.close()


def reopen(store: SqliteStore) -> SqliteStore:
    store.close()
    return SqliteStore(store.path)


# -- persistence and the newer-only rule ------------------------------------


def test_put_get_roundtrip(db_path: Path) -> None:
    entry = make_entry(
        "a/ä/\U0001f600",
        payload=bytes(range(256)),
        qos=2,
        retain=True,
        user_properties=(("k", "v"), ("k", ""), ("ключ", "\u00e9\n")),
        stamp=Stamp(2**64 - 1, 2**32 - 1, "wrïter"),
        expires_at=1_700_000_123.25,
    )
    with SqliteStore(db_path) as store:
        assert store.put(entry)
        assert store.get(entry.topic) == entry
    with SqliteStore(db_path) as store:
        assert store.get(entry.topic) == entry


def test_get_missing(store: SqliteStore) -> None:
    assert store.get("no/such/topic") is None


def test_put_newer_only(store: SqliteStore) -> None:
    topic = "a/b"
    middle = make_entry(topic, b"middle", Stamp(100, 5, "m"))
    assert store.put(middle)

    rejected = [
        make_entry(topic, b"older millis", Stamp(99, 9, "z")),
        make_entry(topic, b"older counter", Stamp(100, 4, "z")),
        make_entry(topic, b"older writer", Stamp(100, 5, "a")),
        make_entry(topic, b"same stamp", Stamp(100, 5, "m")),
    ]
    for entry in rejected:
        assert not store.put(entry), entry.payload
    assert store.get(topic) == middle

    newer = make_entry(topic, b"newer writer", Stamp(100, 5, "n"))
    assert store.put(newer)
    store = reopen(store)
    assert store.get(topic) == newer
    assert not store.put(middle)
    store.close()


def test_put_writer_byte_order(store: SqliteStore) -> None:
    # U+FF61 sorts after U+1F600 in UTF-16 but before it in UTF-8, and sort_key uses UTF-8.
    low = make_entry("t", b"low", Stamp(1, 1, "\uff61"))
    high = make_entry("t", b"high", Stamp(1, 1, "\U0001f600"))
    assert store.put(low)
    assert store.put(high)
    assert not store.put(low)


def test_tombstone_persists(store: SqliteStore) -> None:
    value = make_entry("a/gone", b"value", Stamp(10, 0, "w"))
    tombstone = make_entry("a/gone", b"", Stamp(11, 0, "w"), deleted=True)
    assert store.put(value)
    assert store.put(tombstone)
    store = reopen(store)
    assert store.get("a/gone") == tombstone
    assert not store.put(value)
    assert store.get("a/gone") == tombstone
    store.close()


def test_expires_at_persists(store: SqliteStore) -> None:
    expiring = make_entry("a/expiring", expires_at=1_700_000_000.5)
    past = make_entry("a/past", expires_at=1.0)
    forever = make_entry("a/forever")
    for entry in (expiring, past, forever):
        assert store.put(entry)
    store = reopen(store)
    assert store.get("a/expiring") == expiring
    # The store returns an expired entry unchanged, because callers compare expires_at with the clock.
    assert store.get("a/past") == past
    assert store.get("a/forever") == forever
    store.close()


def test_topics_and_len(store: SqliteStore) -> None:
    topics = ["b", "a/b", "a", "ä", "a/b/"]
    for topic in topics:
        store.put(make_entry(topic))
    store.put(make_entry("a", stamp=Stamp(2_000_000_000_000, 0, "w")))
    assert len(store) == 5
    assert sorted(store.topics()) == sorted(topics)


def test_newest_stamp(store: SqliteStore) -> None:
    assert store.newest_stamp() is None
    stamps = [Stamp(5, 0, "b"), Stamp(2**63 + 1, 0, "a"), Stamp(2**63 + 1, 0, "b"), Stamp(2**63, 9, "z")]
    for index, stamp in enumerate(stamps):
        store.put(make_entry(f"t/{index}", stamp=stamp))
    assert store.newest_stamp() == Stamp(2**63 + 1, 0, "b")
    store = reopen(store)
    assert store.newest_stamp() == Stamp(2**63 + 1, 0, "b")
    store.close()


def test_put_stamp_out_of_range(store: SqliteStore) -> None:
    with pytest.raises(InvalidArgumentError, match="out of range"):
        store.put(make_entry("t", stamp=Stamp(2**64, 0, "w")))
    assert len(store) == 0


@given(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.text()),
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.text()),
)
def test_stamp_key_order(first: tuple[int, int, str], second: tuple[int, int, str]) -> None:
    stamp_a = Stamp(*first)
    stamp_b = Stamp(*second)
    key_a = encode_stamp_key(stamp_a)
    key_b = encode_stamp_key(stamp_b)
    assert (key_a < key_b) == (stamp_a < stamp_b)
    assert (key_a == key_b) == (stamp_a == stamp_b)
    assert decode_stamp_key(key_a) == stamp_a


async def test_client_restarts_from_store(db_path: Path, broker: Mosquitto, topic_root: str) -> None:
    topic = f"{topic_root}/value"
    client_id = f"sqlite-restart-{uuid.uuid4().hex[:8]}"
    store = SqliteStore(db_path)
    async with MnemoQ(host=broker.host, port=broker.port, client_id=client_id, store=store) as client:
        first = await client.publish(topic, b"before restart", qos=1)
    store.close()

    store = SqliteStore(db_path)
    try:
        async with MnemoQ(host=broker.host, port=broker.port, client_id=client_id, store=store) as client:
            assert client.store[topic].payload == b"before restart"
            second = await client.publish(topic, b"after restart", qos=1)
        assert second.stamp > first.stamp
        assert store.get(topic) == second
    finally:
        store.close()


# -- matching ---------------------------------------------------------------

MATCH_TOPICS = [
    "a",
    "a/b",
    "a/b/",
    "a/b/c",
    "a/bc",
    "a/b/c/d",
    "a//b",
    "/a/b",
    "/",
    "ab",
    "b/b",
    "$SYS/x",
    "$SYS",
    "ä/ö",
    "ä/\U0010ffff/x",
    "\U0010ffff",
    "\U0010ffff/a",
    "\ud7ff/x",
    "\ue000/x",
]

MATCH_FILTERS = [
    "#",
    "+",
    "+/+",
    "/#",
    "/+/b",
    "a",
    "a/#",
    "a/+",
    "a/b/#",
    "a/b/+",
    "a/+/c",
    "a//b",
    "+/b",
    "$SYS/#",
    "$SYS",
    "ä/#",
    "ä/\U0010ffff/#",
    "\U0010ffff/#",
    "\ud7ff/+",
    "none/#",
]


@pytest.mark.parametrize("topic_filter", MATCH_FILTERS)
def test_matching_equals_memory(store: SqliteStore, topic_filter: str) -> None:
    memory = MemoryStore()
    for index, topic in enumerate(MATCH_TOPICS):
        entry = make_entry(topic, payload=str(index).encode(), stamp=Stamp(index, 0, "w"))
        memory.put(entry)
        store.put(entry)
    expected = sorted(memory.matching(topic_filter), key=lambda entry: entry.topic)
    actual = sorted(store.matching(topic_filter), key=lambda entry: entry.topic)
    assert actual == expected


def test_matching_uses_index(store: SqliteStore) -> None:
    rows = store._connection.execute(
        "EXPLAIN QUERY PLAN " + _sqlite._SELECT_RANGE, ("a/b", "a/c", "a/b/#")
    ).fetchall()
    plan = " ".join(str(row[-1]) for row in rows)
    assert "USING INDEX" in plan


@pytest.mark.parametrize(
    ("topic_filter", "prefix"),
    [("a/b/#", "a/b/"), ("a/b/+", "a/b/"), ("a/+/c/#", "a/"), ("#", ""), ("+/a", ""), ("/#", "/"), ("a/b", "a/b")],
)
def test_literal_prefix(topic_filter: str, prefix: str) -> None:
    assert literal_prefix(topic_filter) == prefix


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        ("a", "b"),
        ("a/", "a0"),
        ("\ud7ff", "\ue000"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("", None),
    ],
)
def test_prefix_upper_bound(prefix: str, bound: str | None) -> None:
    assert prefix_upper_bound(prefix) == bound


# -- settings and life ------------------------------------------------------


def test_synchronous_full(db_path: Path) -> None:
    with SqliteStore(db_path, synchronous="FULL") as store:
        assert store._connection.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert store.put(make_entry("a"))
        assert store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "settings",
    [{"synchronous": "OFF"}, {"integrity_check": "maybe"}],
)
def test_invalid_settings(db_path: Path, settings: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError):
        SqliteStore(db_path, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["", ":memory:", "file:x.db?mode=memory"])
def test_invalid_path(path: str) -> None:
    with pytest.raises(InvalidArgumentError, match="MemoryStore"):
        SqliteStore(path)


def test_closed_store_raises(store: SqliteStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("a")
    with pytest.raises(StoreError, match="closed"):
        store.put(make_entry("a"))


def test_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "store.db"
    with pytest.raises(StoreError) as caught:
        SqliteStore(path)
    assert str(path) in str(caught.value)


# -- start-up failures --------------------------------------------------------


def test_garbage_file(db_path: Path) -> None:
    garbage = b"this is not an SQLite database\x00\xff" * 200
    db_path.write_bytes(garbage)
    with pytest.raises(StoreError, match="not an SQLite database") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)
    assert db_path.read_bytes() == garbage


def test_corrupt_page(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        for index in range(300):
            store.put(make_entry(f"a/{index:04d}", payload=b"x" * 500))
    with db_path.open("r+b") as file:
        file.seek(4096 * 2)
        file.write(b"\x55" * 4096)
    damaged = db_path.read_bytes()
    with pytest.raises(StoreError, match="corrupt") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)
    assert db_path.read_bytes() == damaged


def test_foreign_database(db_path: Path) -> None:
    connection = sqlite3.connect(db_path)
    connection.execute("CREATE TABLE accounts (id INTEGER)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="not a mnemoq5 store") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)


def set_format_version(path: Path, value: str) -> None:
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (value,))
    connection.commit()
    connection.close()


def read_format_version(path: Path) -> str:
    connection = sqlite3.connect(path)
    value = connection.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
    connection.close()
    return str(value)


def test_newer_version(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        store.put(make_entry("a"))
    set_format_version(db_path, str(FORMAT_VERSION + 1))
    with pytest.raises(StoreError, match="Upgrade mnemoq5") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)
    assert read_format_version(db_path) == str(FORMAT_VERSION + 1)


def test_invalid_version(db_path: Path) -> None:
    SqliteStore(db_path).close()
    set_format_version(db_path, "one")
    with pytest.raises(StoreError, match="invalid format version") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)


def add_note_column(connection: sqlite3.Connection) -> None:
    connection.execute("ALTER TABLE entries ADD COLUMN note TEXT")
    connection.execute("UPDATE entries SET note = 'migrated'")


def test_migration_runs(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_entry("a/b", b"kept")
    with SqliteStore(db_path) as store:
        store.put(entry)
    monkeypatch.setattr(_sqlite, "FORMAT_VERSION", FORMAT_VERSION + 1)
    monkeypatch.setitem(_sqlite._MIGRATIONS, FORMAT_VERSION, add_note_column)

    with SqliteStore(db_path) as store:
        assert store.get("a/b") == entry
        note = store._connection.execute("SELECT note FROM entries").fetchone()[0]
    assert note == "migrated"
    assert read_format_version(db_path) == str(FORMAT_VERSION + 1)


def test_migration_failure_rolls_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_entry("a/b", b"kept")
    with SqliteStore(db_path) as store:
        store.put(entry)

    def fail_halfway(connection: sqlite3.Connection) -> None:
        add_note_column(connection)
        raise RuntimeError("step failed")

    monkeypatch.setattr(_sqlite, "FORMAT_VERSION", FORMAT_VERSION + 1)
    monkeypatch.setitem(_sqlite._MIGRATIONS, FORMAT_VERSION, fail_halfway)
    with pytest.raises(StoreError, match="step failed") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)

    monkeypatch.undo()
    assert read_format_version(db_path) == str(FORMAT_VERSION)
    with SqliteStore(db_path) as store:
        assert store.get("a/b") == entry
        columns = [row[1] for row in store._connection.execute("PRAGMA table_info(entries)")]
    assert "note" not in columns


def test_missing_migration(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(db_path).close()
    monkeypatch.setattr(_sqlite, "FORMAT_VERSION", FORMAT_VERSION + 1)
    with pytest.raises(StoreError, match="no migration") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)


# -- locking ----------------------------------------------------------------


def test_lock_same_process(db_path: Path) -> None:
    first = SqliteStore(db_path)
    with pytest.raises(StoreError, match="in use") as caught:
        SqliteStore(db_path)
    assert str(db_path) in str(caught.value)
    first.close()
    SqliteStore(db_path).close()


HOLDER = textwrap.dedent(
    """
    import sys
    from mnemoq5._sqlite import SqliteStore
    store = SqliteStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()
    store.close()
    """
)


def test_lock_other_process(db_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(StoreError, match=f"by process {holder.pid}") as caught:
            SqliteStore(db_path)
        assert str(db_path) in str(caught.value)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    # The kernel releases the lock of a killed holder, so the stale lock file does not block.
    SqliteStore(db_path).close()


def test_lock_sqlite_connection(db_path: Path) -> None:
    SqliteStore(db_path).close()
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another SQLite connection") as caught:
            SqliteStore(db_path)
        assert str(db_path) in str(caught.value)
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- durability against SIGKILL -------------------------------------------------


async def run_until_killed(command: list[str], lines_before_kill: int, stderr_path: Path) -> list[str]:
    """Start ``command``, read ``lines_before_kill`` lines, SIGKILL it and return every complete line."""
    with stderr_path.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < lines_before_kill:
            line = await asyncio.wait_for(process.stdout.readline(), LINE_TIMEOUT)
            if not line:
                raise AssertionError(f"publisher exited early:\n{stderr_path.read_text()}")
            lines.append(line.decode())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), LINE_TIMEOUT)
    # Lines written before the kill are still in the pipe, and each is a publish that returned.
    rest = await asyncio.wait_for(process.stdout.read(), LINE_TIMEOUT)
    lines.extend(line + "\n" for line in rest.decode().split("\n")[:-1])
    assert process.returncode == -signal.SIGKILL
    return lines


async def test_sigkill_durability(tmp_path: Path, broker: Mosquitto, topic_root: str) -> None:
    db_path = tmp_path / "publisher.db"
    client_id = f"sqlite-publisher-{uuid.uuid4().hex[:8]}"
    confirmed: dict[str, bytes] = {}
    last_seq: dict[int, int] = {}
    for round_number, lines_before_kill in enumerate((150, 401, 777)):
        command = [
            sys.executable,
            str(PUBLISHER),
            broker.host,
            str(broker.port),
            client_id,
            str(db_path),
            topic_root,
            str(round_number),
        ]
        lines = await run_until_killed(command, lines_before_kill, tmp_path / "publisher.stderr")
        assert len(lines) >= lines_before_kill
        for line in lines:
            word, topic, seq = line.split()
            assert word == "ok"
            if topic.endswith("/last"):
                last_seq[round_number] = int(seq)
            else:
                confirmed[topic] = f"r{round_number}-s{seq}".encode()

        with SqliteStore(db_path) as store:
            for topic, payload in confirmed.items():
                entry = store.get(topic)
                assert entry is not None, topic
                assert entry.payload == payload, topic
            last = store.get(f"{topic_root}/last")
        assert last is not None
        stored_round, stored_seq = last.payload.decode().removeprefix("r").split("-s")
        assert int(stored_round) == round_number
        assert int(stored_seq) >= last_seq[round_number]
