"""An index of expiry times: a heap of the entries that expire. Pure code."""

from __future__ import annotations

import heapq

from ._stamp import Stamp
from ._store import Entry

__all__ = ["ExpiryIndex"]


class ExpiryIndex:
    """The entries that expire, so the client finds the expired ones without scanning the store."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, Stamp]] = []

    def track(self, entry: Entry) -> None:
        if entry.expires_at is not None:
            heapq.heappush(self._heap, (entry.expires_at, entry.topic, entry.stamp))

    def pop_expired(self, now: float) -> list[tuple[str, Stamp]]:
        """Remove and return (topic, stamp) of every tracked entry that expired at ``now``."""
        expired = []
        while self._heap and self._heap[0][0] <= now:
            _, topic, stamp = heapq.heappop(self._heap)
            expired.append((topic, stamp))
        return expired

    def seconds_until_next(self, now: float) -> float | None:
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - now)
