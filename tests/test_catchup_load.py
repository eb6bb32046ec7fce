"""Catch-up under load: many peers reply to many late clients at once through one Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mnemoq5 import MnemoQ

PUBLISHERS = 20
TOPICS_PER_PUBLISHER = 500
LATE_CLIENTS = 20


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_storm_late_clients(open_client, own_broker, topic_root):
    prefix = f"mq5c-{uuid.uuid4().hex[:10]}"
    publishers = await asyncio.gather(*(open_client(own_broker, control_prefix=prefix) for _ in range(PUBLISHERS)))
    for number, publisher in enumerate(publishers):
        for index in range(TOPICS_PER_PUBLISHER):
            await publisher.publish(f"{topic_root}/p{number}/{index}", f"{number}:{index}", qos=1)
    publisher_ids = {publisher.client_id for publisher in publishers}
    total = PUBLISHERS * TOPICS_PER_PUBLISHER

    async def start_and_reload() -> tuple[MnemoQ, Any]:
        client = await open_client(own_broker, control_prefix=prefix)
        return client, await client.reload(f"{topic_root}/#", timeout=20)

    # All late clients connect and reload at the same time, so every publisher gets
    # up to LATE_CLIENTS requests at once and the broker carries all replies together.
    results = await asyncio.wait_for(asyncio.gather(*(start_and_reload() for _ in range(LATE_CLIENTS))), 30)

    for client, snapshot in results:
        assert snapshot.complete, f"{client.client_id}: {snapshot!r}"
        assert publisher_ids <= snapshot.answered
        assert len(snapshot) == total
        assert snapshot[f"{topic_root}/p{PUBLISHERS - 1}/{TOPICS_PER_PUBLISHER - 1}"].payload == (
            f"{PUBLISHERS - 1}:{TOPICS_PER_PUBLISHER - 1}".encode()
        )
    for publisher in publishers:
        assert publisher.stats.requests_rate_limited == 0
