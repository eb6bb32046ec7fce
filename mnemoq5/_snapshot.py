"""The result of a catch-up: the newest value of every topic matching a filter."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ._message import Message

__all__ = ["Snapshot"]


class Snapshot(Mapping[str, Message]):
    """Read-only mapping of topic to the newest known :class:`Message` under a filter.

    ``complete`` is True when every peer that was live when the request went out sent
    its whole reply. ``missing`` contains the ids of the peers that had not finished by the
    timeout, or whose reply was malformed. ``answered`` contains those that finished.
    """

    __slots__ = ("_messages", "answered", "complete", "missing", "topic_filter")

    def __init__(
        self,
        topic_filter: str,
        messages: dict[str, Message],
        answered: frozenset[str],
        missing: frozenset[str],
    ) -> None:
        self.topic_filter = topic_filter
        self._messages = messages
        self.answered = answered
        self.missing = missing
        self.complete = not missing

    def __getitem__(self, topic: str) -> Message:
        return self._messages[topic]

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        return (
            f"<Snapshot {self.topic_filter!r}: {len(self)} topics, "
            f"{len(self.answered)} peers answered, missing {sorted(self.missing)}>"
        )
