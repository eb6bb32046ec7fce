"""The last-value store: one entry per topic, each with the stamp of its version."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._envelope import UserProperties
from ._stamp import Stamp
from ._topics import filter_base, filter_matcher

__all__ = ["Entry", "Store", "MemoryStore", "StoreView"]


@dataclass(frozen=True, slots=True)
class Entry:
    """The newest known version of one topic."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: UserProperties
    stamp: Stamp
    deleted: bool = False
    """True for a tombstone: the topic was deleted at ``stamp``; ``payload`` is empty."""
    expires_at: float | None = None
    """Wall-clock time (seconds since the epoch) after which the entry is gone, or None."""


class Store(abc.ABC):
    """Interface of a last-value store.

    A store keeps at most one entry per topic. :meth:`put` keeps the entry only when
    its stamp is newer than the stored one, so callers never move a topic back to an
    older version. Methods are called from the event loop thread and must not block
    for long.
    """

    @abc.abstractmethod
    def get(self, topic: str) -> Entry | None:
        """Return the entry for ``topic``, or None."""

    @abc.abstractmethod
    def put(self, entry: Entry) -> bool:
        """Store ``entry`` if it is newer than the stored entry of its topic; return whether it was stored."""

    @abc.abstractmethod
    def discard(self, topic: str, stamp: Stamp) -> bool:
        """Remove the entry of ``topic`` if its stamp is still ``stamp``; return whether it was removed.

        The client calls it to drop expired entries and pruned tombstones. The stamp
        check keeps a newer entry that arrived in the meantime.
        """

    @abc.abstractmethod
    def topics(self) -> Iterator[str]:
        """Iterate over the stored topics."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def newest_stamp(self) -> Stamp | None:
        """Return the newest stamp in the store, which seeds the clock after a restart."""
        newest: Stamp | None = None
        for topic in self.topics():
            entry = self.get(topic)
            if entry is not None and (newest is None or entry.stamp > newest):
                newest = entry.stamp
        return newest

    def matching(self, topic_filter: str) -> Iterator[Entry]:
        """Iterate over the entries whose topic matches ``topic_filter``."""
        matches = filter_matcher(topic_filter)
        for topic in list(self.topics()):
            if matches(topic):
                entry = self.get(topic)
                if entry is not None:
                    yield entry

    def close(self) -> None:  # noqa: B027 - a no-op default that stores may override
        """Release the store's resources. The default does nothing."""


class MemoryStore(Store):
    """A store in a dict, lost when the process exits."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def get(self, topic: str) -> Entry | None:
        return self._entries.get(topic)

    def put(self, entry: Entry) -> bool:
        current = self._entries.get(entry.topic)
        if current is not None and not entry.stamp > current.stamp:
            return False
        self._entries[entry.topic] = entry
        return True

    def discard(self, topic: str, stamp: Stamp) -> bool:
        current = self._entries.get(topic)
        if current is None or current.stamp != stamp:
            return False
        del self._entries[topic]
        return True

    def topics(self) -> Iterator[str]:
        return iter(self._entries)

    def matching(self, topic_filter: str) -> Iterator[Entry]:
        # The entries are collected at once, which is what the default does with the
        # topics, without a get() per topic. A subclass that overrides get() or
        # topics() gets the default, which calls them.
        if type(self).get is not MemoryStore.get or type(self).topics is not MemoryStore.topics:
            return super().matching(topic_filter)
        base = filter_base(topic_filter)
        if base is not None:
            head = base + "/"
            return iter([entry for topic, entry in self._entries.items() if topic.startswith(head) or topic == base])
        matches = filter_matcher(topic_filter)
        return iter([entry for topic, entry in self._entries.items() if matches(topic)])

    def __len__(self) -> int:
        return len(self._entries)


class StoreView(Mapping[str, Entry]):
    """Read-only mapping of topic to Entry over a store."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, topic: str) -> Entry:
        entry = self._store.get(topic)
        if entry is None:
            raise KeyError(topic)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store.topics()))

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"<StoreView of {len(self)} topics>"
