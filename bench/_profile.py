"""Set-up shared by the pyinstrument profiling scripts: the --html option, the profiler and its report.

pyinstrument is not a dependency of the project, so it is imported only when a
profiling script runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Seconds between pyinstrument samples.
SAMPLE_INTERVAL = 0.0005


def add_html_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", type=Path, metavar="PATH", help="also write pyinstrument's HTML report here")


def new_profiler() -> Any | None:
    """Return a pyinstrument Profiler, or print how to install pyinstrument and return None."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed: run '.venv/bin/python -m pip install pyinstrument'", file=sys.stderr)
        return None
    return Profiler(interval=SAMPLE_INTERVAL, async_mode="disabled")


def print_report(profiler: Any, html: Path | None) -> None:
    """Print the profile as text and, when ``html`` is given, write the HTML report there."""
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if html is not None:
        html.write_text(profiler.output_html())
