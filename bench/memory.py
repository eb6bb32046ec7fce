"""Memory per stored topic in MemoryStore, measured with tracemalloc.

Entries are built the way ``MnemoQ.publish`` builds them: a fresh topic str, a fresh
payload bytes object, no user properties and a stamp from the client's hybrid clock.
"""

from __future__ import annotations

import sys
import tracemalloc
from dataclasses import dataclass

from mnemoq5 import Entry, MemoryStore
from mnemoq5._stamp import HybridClock

from ._common import payload_of

PAYLOAD_SIZE = 100
# The project target: at most this many bytes per entry above the topic and payload bytes.
TARGET_OVERHEAD = 200


@dataclass
class StoreMemory:
    entries: int
    raw_bytes_per_entry: float
    """UTF-8 topic bytes plus payload bytes, the data itself."""
    objects_per_entry: float
    """The topic str and payload bytes objects, headers included."""
    store_per_entry: float
    """Everything the store adds: Entry, Stamp, its int, the dict slot."""

    @property
    def overhead_per_entry(self) -> float:
        """Bytes per entry above the raw topic and payload bytes."""
        return self.objects_per_entry + self.store_per_entry - self.raw_bytes_per_entry


def measure_store(entries: int) -> StoreMemory:
    template = payload_of(PAYLOAD_SIZE)
    clock = HybridClock("mq5benchmarkmemory00000")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        topics = [f"bench/memory/sensor/{index:07d}" for index in range(entries)]
        # bytes(bytearray(...)) copies, so every entry owns its payload as a received message does.
        payloads = [bytes(bytearray(template)) for _ in range(entries)]
        after_objects = tracemalloc.get_traced_memory()[0]
        store = MemoryStore()
        for topic, payload in zip(topics, payloads, strict=True):
            store.put(Entry(topic, payload, 0, False, (), clock.next_stamp()))
        after_store = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()

    lists = sys.getsizeof(topics) + sys.getsizeof(payloads)
    raw = sum(len(topic.encode("utf-8")) for topic in topics) + PAYLOAD_SIZE * entries
    if len(store) != entries:
        raise RuntimeError(f"MemoryStore kept {len(store)} of {entries} distinct topics")
    return StoreMemory(
        entries=entries,
        raw_bytes_per_entry=raw / entries,
        objects_per_entry=(after_objects - before - lists) / entries,
        store_per_entry=(after_store - after_objects) / entries,
    )
