"""Profile mnemoq5's QoS 0 100-byte publish-to-receive path with pyinstrument.

Run ``python -m bench.profile_publish [--messages N] [--html PATH]`` from the
repository root. pyinstrument is not a dependency of the project: install it into
the venv first with ``.venv/bin/python -m pip install pyinstrument``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ._common import start_broker
from ._profile import add_html_option, new_profiler, print_report
from .throughput import mnemoq5_transfer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_publish", description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000, help="messages to publish (default 50000)")
    add_html_option(parser)
    arguments = parser.parse_args(argv)
    profiler = new_profiler()
    if profiler is None:
        return 2

    broker = start_broker()
    try:
        with profiler:
            sample = asyncio.run(mnemoq5_transfer(broker.host, broker.port, 100, 0, arguments.messages))
    finally:
        broker.close()
    print(f"{sample.received} of {sample.sent} messages received, {sample.rate:,.0f} msg/s under the profiler")
    print_report(profiler, arguments.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
