"""Hybrid logical clock stamps that order the versions of one topic.

A stamp is (wall-clock milliseconds, counter, writer id). Stamps compare by
milliseconds, then counter, then the writer id's UTF-8 bytes, so any two versions of
a topic written by different writers, or by one writer across restarts, have a total
order. Pure code: the wall clock is passed in by the caller.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import EnvelopeError

__all__ = ["Stamp", "HybridClock", "MAX_COUNTER", "MAX_MILLIS"]

# The text form carries both numbers in decimal; these bounds keep them within the
# unsigned 64-bit and 32-bit ranges that other implementations can store.
MAX_MILLIS = 2**64 - 1
MAX_COUNTER = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Stamp:
    """Version stamp of one value: wall-clock milliseconds, a counter and the writer id."""

    millis: int
    counter: int
    writer: str

    def sort_key(self) -> tuple[int, int, bytes]:
        return (self.millis, self.counter, self.writer.encode("utf-8", "surrogatepass"))

    def _compare(self, other: Stamp) -> int:
        """Return -1, 0 or 1 as sort_key() would order the two stamps.

        The writer is encoded only when milliseconds and counter are equal, which is
        rare, so most comparisons cost two integer comparisons.
        """
        if self.millis != other.millis:
            return -1 if self.millis < other.millis else 1
        if self.counter != other.counter:
            return -1 if self.counter < other.counter else 1
        if self.writer == other.writer:
            return 0
        mine = self.writer.encode("utf-8", "surrogatepass")
        theirs = other.writer.encode("utf-8", "surrogatepass")
        return -1 if mine < theirs else 1

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Stamp):
            return NotImplemented
        return self._compare(other) < 0

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Stamp):
            return NotImplemented
        return self._compare(other) <= 0

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Stamp):
            return NotImplemented
        return self._compare(other) > 0

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Stamp):
            return NotImplemented
        return self._compare(other) >= 0

    def to_text(self) -> str:
        """Format the clock part as ``<millis>:<counter>``, the user property value."""
        return f"{self.millis}:{self.counter}"

    @classmethod
    def from_text(cls, text: str, writer: str) -> Stamp:
        """Parse ``<millis>:<counter>`` (decimal, no sign, no leading zeros); raise EnvelopeError."""
        match = _STAMP_TEXT.fullmatch(text)
        if match is not None:
            millis = int(match[1])
            counter = int(match[2])
            if millis <= MAX_MILLIS and counter <= MAX_COUNTER:
                return cls(millis, counter, writer)
        # The slow path names what is wrong with the text.
        millis_text, separator, counter_text = text.partition(":")
        if not separator:
            raise EnvelopeError(f"stamp {text!r} is not of the form <millis>:<counter>")
        millis = _parse_decimal(millis_text, MAX_MILLIS, "milliseconds", text)
        counter = _parse_decimal(counter_text, MAX_COUNTER, "counter", text)
        return cls(millis, counter, writer)


# Two ASCII decimal numbers without leading zeros; the bounds are checked after int().
_STAMP_TEXT = re.compile(r"(0|[1-9][0-9]*):(0|[1-9][0-9]*)", re.ASCII)


def _parse_decimal(text: str, maximum: int, what: str, whole: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise EnvelopeError(f"stamp {whole!r}: {what} must be a decimal number without leading zeros")
    value = int(text)
    if value > maximum:
        raise EnvelopeError(f"stamp {whole!r}: {what} exceeds {maximum}")
    return value


def wall_clock_millis() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Issues stamps for one writer that are newer than every stamp it has issued or seen.

    ``now`` returns wall-clock milliseconds. A stamp from another writer passed to
    :meth:`observe` pulls the clock forward, so the next local write orders after it
    even when this machine's clock is behind.
    """

    def __init__(self, writer: str, now: Callable[[], int] = wall_clock_millis) -> None:
        self._writer = writer
        self._now = now
        self._millis = 0
        self._counter = 0

    def observe(self, stamp: Stamp) -> None:
        """Advance the clock so the next issued stamp is newer than ``stamp``."""
        if (stamp.millis, stamp.counter) > (self._millis, self._counter):
            self._millis, self._counter = stamp.millis, stamp.counter

    def next_stamp(self) -> Stamp:
        """Issue a new stamp for a local write.

        Raises OverflowError when the clock is at MAX_MILLIS and MAX_COUNTER, which
        only an observed stamp from a broken or hostile peer can cause: a stamp beyond
        the maximum would be rejected by every receiver.
        """
        now = min(self._now(), MAX_MILLIS)
        if now > self._millis:
            self._millis, self._counter = now, 0
        elif self._counter < MAX_COUNTER:
            self._counter += 1
        elif self._millis < MAX_MILLIS:
            # The counter is exhausted within one millisecond: borrow the next one.
            self._millis, self._counter = self._millis + 1, 0
        else:
            raise OverflowError(f"the hybrid clock of {self._writer!r} has reached {MAX_MILLIS}:{MAX_COUNTER}")
        return Stamp(self._millis, self._counter, self._writer)
