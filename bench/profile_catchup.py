"""Profile one mnemoq5 catch-up (``reload``) with pyinstrument.

Run ``python -m bench.profile_catchup [--topics N] [--peers P] [--html PATH]`` from the
repository root. The peers and the late client run in this process, as in the
catch-up benchmark. Only the reload is profiled, not the filling of the peers.
pyinstrument is not a dependency of the project: install it into the venv first with
``.venv/bin/python -m pip install pyinstrument``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from mnemoq5 import MnemoQ

from ._common import start_broker, unique_topic
from ._profile import add_html_option, new_profiler, print_report
from .catchup import RELOAD_TIMEOUT, _fill_peers


async def _profiled_reload(host: str, port: int, topics: int, peers: int, profiler: Any) -> tuple[float, int]:
    root = unique_topic("catchup")
    clients = await _fill_peers(host, port, root, topics, peers)
    try:
        async with MnemoQ(host, port) as late:
            profiler.start()
            start = time.perf_counter()
            snapshot = await late.reload(f"{root}/#", timeout=RELOAD_TIMEOUT)
            elapsed = time.perf_counter() - start
            profiler.stop()
    finally:
        for client in clients:
            await client.disconnect()
    return elapsed, len(snapshot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_catchup", description=__doc__)
    parser.add_argument("--topics", type=int, default=10_000, help="topics held by the peers (default 10000)")
    parser.add_argument("--peers", type=int, default=1, help="live peers that hold them (default 1)")
    add_html_option(parser)
    arguments = parser.parse_args(argv)
    profiler = new_profiler()
    if profiler is None:
        return 2

    broker = start_broker()
    try:
        elapsed, returned = asyncio.run(
            _profiled_reload(broker.host, broker.port, arguments.topics, arguments.peers, profiler)
        )
    finally:
        broker.close()
    print(f"reload returned {returned} of {arguments.topics} topics in {elapsed:.3f} s under the profiler")
    print_report(profiler, arguments.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
