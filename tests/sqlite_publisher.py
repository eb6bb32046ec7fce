"""Publish a stream of QoS 1 values through a MnemoQ backed by an SqliteStore.

Usage: python sqlite_publisher.py HOST PORT CLIENT_ID DB_PATH TOPIC_ROOT ROUND [COUNT]

Iteration ``seq`` publishes ``r<ROUND>-s<seq>`` on ``TOPIC_ROOT/r<ROUND>/<seq>`` (a new
topic each time) and then on ``TOPIC_ROOT/last`` (one topic rewritten each time). After
each publish returns, the script prints ``ok <topic> <seq>`` and flushes stdout, so a
test that kills the process can tell which publishes returned. It stops after COUNT
iterations (default 100000).
"""

from __future__ import annotations

import asyncio
import sys

from mnemoq5 import MnemoQ
from mnemoq5._sqlite import SqliteStore


async def publish_stream(
    host: str, port: int, client_id: str, db_path: str, topic_root: str, round_number: int, count: int
) -> None:
    store = SqliteStore(db_path)
    try:
        async with MnemoQ(host=host, port=port, client_id=client_id, store=store) as client:
            for seq in range(count):
                payload = f"r{round_number}-s{seq}"
                for topic in (f"{topic_root}/r{round_number}/{seq}", f"{topic_root}/last"):
                    await client.publish(topic, payload, qos=1)
                    print(f"ok {topic} {seq}", flush=True)
    finally:
        store.close()


def main(argv: list[str]) -> int:
    if len(argv) not in (7, 8):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, client_id, db_path, topic_root, round_number = argv[1:7]
    count = int(argv[7]) if len(argv) == 8 else 100_000
    asyncio.run(publish_stream(host, int(port), client_id, db_path, topic_root, int(round_number), count))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
