"""A last-value store in an SQLite file, which survives a restart of the process.

Layout of format version 1:

- ``meta(key TEXT PRIMARY KEY, value TEXT)`` contains ``format_version``.
- ``entries`` contains one row per topic, with ``topic TEXT PRIMARY KEY`` and the stamp as
  ``stamp_key BLOB``: 8 bytes of big-endian milliseconds, 4 bytes of big-endian counter
  and the writer id in UTF-8. SQLite compares BLOBs with memcmp, which orders these
  keys exactly as :meth:`Stamp.sort_key` orders stamps, so the newer-only rule is one
  SQL statement.

The file is opened in WAL mode with ``locking_mode=EXCLUSIVE``, and a lock file
``<path>.lock`` held with ``flock`` keeps a second SqliteStore, in this process or
another, from opening it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal

from ._errors import InvalidArgumentError, StoreError
from ._stamp import MAX_COUNTER, MAX_MILLIS, Stamp
from ._store import Entry, Store
from ._topics import topic_matches

if sys.platform != "win32":
    import fcntl

__all__ = ["FORMAT_VERSION", "SqliteStore"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""The layout this version of mnemoq5 writes; older files are migrated on open."""

Synchronous = Literal["NORMAL", "FULL"]
IntegrityCheck = Literal["quick", "full", "off"]

Migration = Callable[[sqlite3.Connection], None]

# _MIGRATIONS[n] rewrites a file of format version n into version n + 1. Each step runs
# inside the one transaction that also records the new version, so a failed step
# leaves the file as it was. Version 1 is the first layout, so there is no step yet.
_MIGRATIONS: dict[int, Migration] = {}

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE entries (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        user_properties TEXT NOT NULL,
        stamp_key BLOB NOT NULL,
        deleted INTEGER NOT NULL,
        expires_at REAL
    )""",
)

_COLUMNS = "topic, payload, qos, retain, user_properties, stamp_key, deleted, expires_at"

# The newer-only rule of Store.put as one statement, so the comparison and the write are atomic.
_UPSERT = f"""
    INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (topic) DO UPDATE SET
        payload = excluded.payload,
        qos = excluded.qos,
        retain = excluded.retain,
        user_properties = excluded.user_properties,
        stamp_key = excluded.stamp_key,
        deleted = excluded.deleted,
        expires_at = excluded.expires_at
    WHERE excluded.stamp_key > entries.stamp_key
"""
_SELECT_ONE = f"SELECT {_COLUMNS} FROM entries WHERE topic = ?"
# The range on the primary key index selects the rows that start with a filter's literal
# prefix, and topic_matches, registered as an SQL function, keeps the exact matches, so
# SQLite reads the other columns of matching rows only.
_MATCHES = "mnemoq5_topic_matches(?, topic)"
_SELECT_FROM = f"SELECT {_COLUMNS} FROM entries WHERE topic >= ? AND {_MATCHES} ORDER BY topic"
_SELECT_RANGE = f"SELECT {_COLUMNS} FROM entries WHERE topic >= ? AND topic < ? AND {_MATCHES} ORDER BY topic"

_Row = tuple[object, ...]

_RECOVERY_ADVICE = (
    "Move the file aside and restore it from a backup, or give the store a new path to start empty; "
    "mnemoq5 does not repair or delete it"
)

# Primary result codes of the SQLite C API.
_SQLITE_BUSY = 5
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class SqliteStore(Store):
    """A last-value store in an SQLite file that survives a crash of the process.

    ``put`` returns after the transaction has committed to the write-ahead log. With
    ``synchronous="NORMAL"`` (the default) a committed entry survives a crash or
    SIGKILL of the process, but the last transactions before a power loss or an
    operating system crash can be lost. ``synchronous="FULL"`` calls fsync on the log
    at every commit, so a committed entry also survives a power loss, as far as the
    disk honours the flush, at a higher cost per ``put``.

    ``integrity_check`` selects the check run on open: ``"quick"`` (``PRAGMA
    quick_check``, the default), ``"full"`` (``PRAGMA integrity_check``) or ``"off"``.
    Both checks read the whole file.

    Opening raises :class:`StoreError`, naming the file and what to do, when the file is
    not an SQLite database, fails the check, is not a mnemoq5 store, was written by a
    newer mnemoq5, or is held by another SqliteStore. A file of an older format version
    is migrated in one transaction. The store never deletes or replaces a file it
    cannot read.

    Methods serialise on an internal lock, so the store may be used from any thread,
    but each call does blocking file I/O on the calling thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        integrity_check: IntegrityCheck = "quick",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidArgumentError(f"synchronous {synchronous!r} is invalid: it must be 'NORMAL' or 'FULL'")
        if integrity_check not in ("quick", "full", "off"):
            raise InvalidArgumentError(
                f"integrity_check {integrity_check!r} is invalid: it must be 'quick', 'full' or 'off'"
            )
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise InvalidArgumentError(
                f"SqliteStore path {text!r} must name a file; use MemoryStore for a store in memory"
            )
        self._path = Path(text)
        self._synchronous = synchronous
        self._mutex = threading.Lock()
        lock_existed = _lock_path(self._path).exists()
        self._lock_file = _acquire_lock_file(self._path)
        try:
            self._connection = self._open_database(integrity_check)
        except BaseException:
            if not lock_existed:
                # The store never opened, so the lock file this call created goes too.
                _lock_path(self._path).unlink(missing_ok=True)
            _release_lock_file(self._lock_file)
            raise
        self._closed = False

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"synchronous={self._synchronous}"
        return f"<SqliteStore {str(self._path)!r} {state}>"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening ----------------------------------------------------------

    def _open_database(self, integrity_check: IntegrityCheck) -> sqlite3.Connection:
        try:
            # timeout=0: a lock held elsewhere fails the probe at once instead of waiting.
            connection = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise self._open_error(error) from error
        try:
            self._configure(connection)
            self._check_integrity(connection, integrity_check)
            version = self._prepare_schema(connection)
        except sqlite3.Error as error:
            connection.close()
            raise self._open_error(error) from error
        except BaseException:
            connection.close()
            raise
        logger.info(
            "opened store %s (format version %d, synchronous=%s)", self._path, version, self._synchronous
        )
        return connection

    def _configure(self, connection: sqlite3.Connection) -> None:
        connection.create_function("mnemoq5_topic_matches", 2, topic_matches, deterministic=True)
        connection.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"store file {self._path}: SQLite did not switch to WAL mode (journal mode is {mode!r}); "
                "put the store on a local file system"
            )
        connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        # The probe takes the write lock, which EXCLUSIVE locking mode keeps until close.
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("COMMIT")

    def _check_integrity(self, connection: sqlite3.Connection, integrity_check: IntegrityCheck) -> None:
        if integrity_check == "off":
            return
        pragma = "quick_check" if integrity_check == "quick" else "integrity_check"
        problems = [str(row[0]).replace("\n", " ") for row in connection.execute(f"PRAGMA {pragma}")]
        if problems != ["ok"]:
            raise StoreError(
                f"store file {self._path} is corrupt: the SQLite {pragma} reported {'; '.join(problems[:5])}. "
                f"{_RECOVERY_ADVICE}"
            )

    def _prepare_schema(self, connection: sqlite3.Connection) -> int:
        """Create the tables in an empty file, or check and migrate an existing one; return the version."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute("INSERT INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
                version = FORMAT_VERSION
            else:
                version = self._read_version(connection, tables)
                if version < FORMAT_VERSION:
                    self._migrate(connection, version)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return version

    def _read_version(self, connection: sqlite3.Connection, tables: set[str]) -> int:
        if "meta" not in tables or "entries" not in tables:
            raise StoreError(
                f"file {self._path} is an SQLite database but not a mnemoq5 store "
                f"(tables: {', '.join(sorted(tables))}); give the store another path"
            )
        row = connection.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        text = None if row is None else str(row[0])
        if text is None or not text.isascii() or not text.isdigit():
            raise StoreError(
                f"store file {self._path} has an invalid format version {text!r} in its meta table; "
                "move the file aside and restore it from a backup"
            )
        version = int(text)
        if version > FORMAT_VERSION:
            raise StoreError(
                f"store file {self._path} has format version {version}, written by a newer mnemoq5; "
                f"this mnemoq5 reads versions up to {FORMAT_VERSION}. Upgrade mnemoq5 to open it"
            )
        return version

    def _migrate(self, connection: sqlite3.Connection, version: int) -> None:
        """Run the migration steps from ``version`` up to FORMAT_VERSION inside the open transaction."""
        missing = [step for step in range(version, FORMAT_VERSION) if step not in _MIGRATIONS]
        if missing:
            raise StoreError(
                f"store file {self._path} has format version {version}, and this mnemoq5 has no migration "
                f"from version {missing[0]}; open it with the mnemoq5 release that wrote it"
            )
        for step in range(version, FORMAT_VERSION):
            logger.info("migrating store %s from format version %d to %d", self._path, step, step + 1)
            try:
                _MIGRATIONS[step](connection)
            except Exception as error:
                raise StoreError(
                    f"migrating store file {self._path} from format version {step} to {step + 1} failed: "
                    f"{error}. The file was left at version {version}; report this with a copy of the file"
                ) from error
        connection.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))

    def _open_error(self, error: sqlite3.Error) -> StoreError:
        # Python 3.11 added sqlite_errorcode, so on 3.10 the message text decides.
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        text = str(error)
        if code == _SQLITE_BUSY or "locked" in text:
            return StoreError(
                f"store file {self._path} is locked by another SQLite connection ({text}); "
                "two MnemoQ clients cannot share one store file: stop the other user or give each "
                "client its own path"
            )
        if code == _SQLITE_NOTADB or "not a database" in text:
            return StoreError(f"store file {self._path} is not an SQLite database ({text}). {_RECOVERY_ADVICE}")
        if code == _SQLITE_CORRUPT or "malformed" in text:
            return StoreError(f"store file {self._path} is corrupt ({text}). {_RECOVERY_ADVICE}")
        return StoreError(
            f"cannot open store file {self._path}: {text}; check that its directory exists and is writable"
        )

    # -- the Store interface ----------------------------------------------

    def get(self, topic: str) -> Entry | None:
        with self._mutex:
            row = self._execute(_SELECT_ONE, (topic,)).fetchone()
        return None if row is None else self._decode(row)

    def put(self, entry: Entry) -> bool:
        """Store ``entry`` if its stamp is newer than the stored one; return whether it was stored.

        Returns after the commit, so a stored entry survives a crash of the process.
        Raises StoreError when the write fails, for example on a full disk.
        """
        parameters = (
            entry.topic,
            bytes(entry.payload),
            entry.qos,
            int(entry.retain),
            _encode_user_properties(entry.user_properties),
            encode_stamp_key(entry.stamp),
            int(entry.deleted),
            entry.expires_at,
        )
        with self._mutex:
            cursor = self._execute(_UPSERT, parameters)
        return cursor.rowcount == 1

    def discard(self, topic: str, stamp: Stamp) -> bool:
        """Remove the entry of ``topic`` if its stamp is still ``stamp``; return whether it was removed."""
        with self._mutex:
            cursor = self._execute(
                "DELETE FROM entries WHERE topic = ? AND stamp_key = ?", (topic, encode_stamp_key(stamp))
            )
        return cursor.rowcount == 1

    def topics(self) -> Iterator[str]:
        """Iterate over the stored topics in UTF-8 byte order, from a snapshot taken by this call."""
        with self._mutex:
            rows = self._execute("SELECT topic FROM entries ORDER BY topic").fetchall()
        return iter([str(row[0]) for row in rows])

    def __len__(self) -> int:
        with self._mutex:
            row = self._execute("SELECT count(*) FROM entries").fetchone()
        return int(row[0])

    def newest_stamp(self) -> Stamp | None:
        with self._mutex:
            row = self._execute("SELECT max(stamp_key) FROM entries").fetchone()
        if row[0] is None:
            return None
        return self._decode_stamp(row[0], "max(stamp_key)")

    def matching(self, topic_filter: str) -> Iterator[Entry]:
        """Iterate over the entries whose topic matches ``topic_filter``, in UTF-8 byte order.

        Only the rows whose topic starts with the filter's literal prefix (the text
        before the first wildcard) are scanned, through the primary key index, and
        :func:`topic_matches` selects the exact matches among them. The rows are read
        before the first entry is yielded.
        """
        if "+" not in topic_filter and "#" not in topic_filter:
            entry = self.get(topic_filter)
            return iter(() if entry is None else (entry,))
        prefix = literal_prefix(topic_filter)
        upper = prefix_upper_bound(prefix)
        rows: list[_Row] = []
        with self._mutex:
            if topic_filter == prefix + "#" and len(prefix) > 1:
                # "a/b/#" also matches the parent "a/b" [MQTT-4.7.1-2], which sorts before "a/b/".
                rows.extend(self._execute(_SELECT_ONE, (prefix[:-1],)).fetchall())
            if upper is None:
                rows.extend(self._execute(_SELECT_FROM, (prefix, topic_filter)).fetchall())
            else:
                rows.extend(self._execute(_SELECT_RANGE, (prefix, upper, topic_filter)).fetchall())
        return iter([self._decode(row) for row in rows])

    def close(self) -> None:
        """Close the database and release the lock file; later calls raise StoreError."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._connection.close()
            finally:
                _release_lock_file(self._lock_file)
        logger.info("closed store %s", self._path)

    # -- helpers ----------------------------------------------------------

    def _execute(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if self._closed:
            raise StoreError(f"store {self._path} is closed")
        try:
            return self._connection.execute(sql, parameters)
        except sqlite3.Error as error:
            raise StoreError(f"store file {self._path}: {error}") from error

    def _decode(self, row: _Row) -> Entry:
        topic, payload, qos, retain, user_properties, stamp_key, deleted, expires_at = row
        if (
            not isinstance(topic, str)
            or not isinstance(payload, bytes)
            or not isinstance(qos, int)
            or qos not in (0, 1, 2)
            or not isinstance(user_properties, str)
            or not isinstance(stamp_key, bytes)
            or not isinstance(expires_at, (int, float, type(None)))
        ):
            raise StoreError(f"store file {self._path}: the row of topic {topic!r} has values of the wrong type")
        return Entry(
            topic=topic,
            payload=payload,
            qos=qos,
            retain=bool(retain),
            user_properties=self._decode_user_properties(user_properties, topic),
            stamp=self._decode_stamp(stamp_key, topic),
            deleted=bool(deleted),
            expires_at=None if expires_at is None else float(expires_at),
        )

    def _decode_stamp(self, key: object, topic: str) -> Stamp:
        try:
            return decode_stamp_key(key)
        except ValueError as error:
            raise StoreError(f"store file {self._path}: the stamp of topic {topic!r} is invalid: {error}") from None

    def _decode_user_properties(self, text: str, topic: str) -> tuple[tuple[str, str], ...]:
        if text == "[]":
            return ()
        try:
            pairs = json.loads(text)
        except ValueError:
            pairs = None
        valid = isinstance(pairs, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
            for pair in pairs
        )
        if not valid:
            raise StoreError(
                f"store file {self._path}: the user properties of topic {topic!r} are not a JSON list of "
                f"[key, value] string pairs: {text[:80]!r}"
            )
        return tuple((key, value) for key, value in pairs)


def encode_stamp_key(stamp: Stamp) -> bytes:
    """Encode ``stamp`` as bytes whose memcmp order is the order of :meth:`Stamp.sort_key`."""
    if not 0 <= stamp.millis <= MAX_MILLIS or not 0 <= stamp.counter <= MAX_COUNTER:
        raise InvalidArgumentError(
            f"stamp {stamp!r} is out of range: milliseconds must be 0..{MAX_MILLIS} and counter 0..{MAX_COUNTER}"
        )
    millis, counter, writer = stamp.sort_key()
    return millis.to_bytes(8, "big") + counter.to_bytes(4, "big") + writer


def decode_stamp_key(key: object) -> Stamp:
    """Decode the output of :func:`encode_stamp_key`, or raise ValueError for anything else."""
    if not isinstance(key, bytes) or len(key) < 12:
        raise ValueError(f"a stamp key is at least 12 bytes, not {key!r}")
    writer = key[12:].decode("utf-8")
    return Stamp(int.from_bytes(key[:8], "big"), int.from_bytes(key[8:12], "big"), writer)


def literal_prefix(topic_filter: str) -> str:
    """Return the filter up to its first wildcard, which every matching topic except a parent starts with.

    The exception is ``#``, which also matches the parent level [MQTT-4.7.1-2]: ``a/b/#``
    matches ``a/b``, which does not start with ``a/b/``.
    """
    wildcards = [index for index in (topic_filter.find("+"), topic_filter.find("#")) if index >= 0]
    if not wildcards:
        return topic_filter
    return topic_filter[: min(wildcards)]


def prefix_upper_bound(prefix: str) -> str | None:
    """Return the string U such that a topic starts with ``prefix`` exactly when ``prefix <= topic < U``.

    SQLite compares TEXT in UTF-8 byte order, which is code point order, so the bound is
    the prefix with its last code point incremented. Surrogates cannot be stored, so
    U+D7FF is followed by U+E000. A trailing U+10FFFF is dropped first, and a prefix of
    only U+10FFFF characters, or an empty one, has no bound.
    """
    characters = list(prefix)
    while characters:
        code = ord(characters[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            characters[-1] = chr(code)
            return "".join(characters)
        characters.pop()
    return None


def _encode_user_properties(properties: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([[key, value] for key, value in properties], ensure_ascii=False)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _acquire_lock_file(path: Path) -> IO[str] | None:
    """Hold an exclusive ``flock`` on ``<path>.lock`` for the store's life; raise StoreError if taken.

    flock locks belong to the open file, so a second open in the same process conflicts
    too, and the kernel releases the lock when the holder dies. The file stays in place
    after close, because deleting it would let two processes lock different files.
    """
    if sys.platform == "win32":
        # NOTE: Windows has no flock, so only SQLite's EXCLUSIVE locking mode guards the file there.
        return None
    lock_path = _lock_path(path)
    try:
        lock_file = open(lock_path, "a+", encoding="utf-8")
    except OSError as error:
        raise StoreError(
            f"cannot create the lock file {lock_path} of store file {path}: {error.strerror}; "
            "check that the directory exists and is writable"
        ) from error
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.seek(0)
        holder = lock_file.read().strip()
        lock_file.close()
        raise StoreError(
            f"store file {path} is in use: its lock file {lock_path} is held"
            f"{f' by process {holder}' if holder.isdigit() else ''}. Two MnemoQ clients cannot share "
            "one store file: close the other store or give each client its own path"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def _release_lock_file(lock_file: IO[str] | None) -> None:
    if lock_file is not None:
        # Closing the file releases the flock.
        lock_file.close()
