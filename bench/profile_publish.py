"""Profile mnemoq5's QoS 0 100-byte publish-to-receive path with pyinstrument.

Run ``python -m bench.profile_publish [--messages N] [--html PATH]`` from the
repository root. pyinstrument is not a dependency of the project: install it into
the venv first with ``.venv/bin/python -m pip install pyinstrument``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ._common import start_broker
from .throughput import mnemoq5_transfer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_publish", description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000, help="messages to publish (default 50000)")
    parser.add_argument("--html", type=Path, metavar="PATH", help="also write pyinstrument's HTML report here")
    arguments = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed: run '.venv/bin/python -m pip install pyinstrument'", file=sys.stderr)
        return 2

    broker = start_broker()
    try:
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        with profiler:
            sample = asyncio.run(mnemoq5_transfer(broker.host, broker.port, 100, 0, arguments.messages))
    finally:
        broker.close()
    print(f"{sample.received} of {sample.sent} messages received, {sample.rate:,.0f} msg/s under the profiler")
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if arguments.html is not None:
        arguments.html.write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
