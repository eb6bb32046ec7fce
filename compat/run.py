"""Run the broker compatibility matrix and write its results table into compat/README.md.

Each target of tests/test_compat_client.py (a broker and a protocol mode) runs in a
pytest process of its own with a JUnit XML report, and tests/test_mixed_fleet.py runs
once more. The script renders the reports as Markdown tables between the result markers
of compat/README.md, with the broker versions and the date, and exits with status 1
when a test failed.

Usage, from the repository root: ``python compat/run.py`` (``make compat`` does this).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "compat" / "README.md"
SUITE = "tests/test_compat_client.py"
MIXED_SUITE = "tests/test_mixed_fleet.py"
START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"

# Pytest keyword for the parametrised target, and the column heading.
TARGETS = [
    ("mosquitto_v5", "Mosquitto, v5"),
    ("mosquitto_compat", "Mosquitto, compat"),
    ("amqtt_compat", "amqtt, compat"),
    ("rabbitmq_compat", "RabbitMQ, compat"),
]
MIXED_COLUMN = "Mosquitto, v5 + compat; amqtt"


@dataclass(frozen=True)
class Outcome:
    """The result of one test case: pass, FAIL, error, skip or xfail, with the reason."""

    status: str
    reason: str = ""


def run_pytest(files: list[str], keyword: str | None, report: Path) -> int:
    """Run pytest on ``files`` with a JUnit XML report; return its exit status."""
    command = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    if keyword is not None:
        command += ["-k", keyword]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def read_report(report: Path) -> dict[str, Outcome]:
    """Map each test case name, with its parameters, to its outcome."""
    outcomes: dict[str, Outcome] = {}
    if not report.exists():
        return outcomes
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcomes[name] = Outcome("FAIL", _first_line(failure.get("message", "")))
        elif error is not None:
            outcomes[name] = Outcome("error", _first_line(error.get("message", "")))
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            outcomes[name] = Outcome("xfail", skipped.get("message", ""))
        elif skipped is not None:
            outcomes[name] = Outcome("skip", _skip_reason(skipped.get("message", "")))
        else:
            outcomes[name] = Outcome("pass")
    return outcomes


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _skip_reason(message: str) -> str:
    # Pytest reports a skip raised in a fixture as "Skipped: <reason>"; keep the first line.
    return _first_line(message.removeprefix("Skipped: "))


def split_name(name: str) -> tuple[str, str]:
    """Split ``test_x[param]`` into the test function and its parameter id."""
    match = re.fullmatch(r"(?P<test>[^\[]+)(\[(?P<param>.*)\])?", name)
    assert match is not None
    return match["test"], match["param"] or ""


class Notes:
    """Numbered footnotes for skip, xfail and failure reasons, each reason listed once."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def cell(self, outcome: Outcome | None) -> str:
        if outcome is None:
            return "not run"
        if not outcome.reason:
            return outcome.status
        if outcome.reason not in self.reasons:
            self.reasons.append(outcome.reason)
        return f"{outcome.status} [{self.reasons.index(outcome.reason) + 1}]"

    def render(self) -> list[str]:
        return [f"{number}. {_escape(reason)}" for number, reason in enumerate(self.reasons, start=1)]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_tables(matrix: dict[str, dict[str, Outcome]], mixed: dict[str, Outcome], versions: list[str]) -> str:
    notes = Notes()
    lines = [
        f"Last run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, by `make compat`.",
        "",
        *[f"- {version}" for version in versions],
        "",
        "### Conformance suite (`tests/test_compat_client.py`)",
        "",
        "| test | " + " | ".join(heading for _, heading in TARGETS) + " |",
        "| --- |" + " --- |" * len(TARGETS),
    ]
    for test in sorted(matrix):
        cells = [notes.cell(matrix[test].get(keyword)) for keyword, _ in TARGETS]
        lines.append(f"| `{test}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Mixed fleet (`tests/test_mixed_fleet.py`)",
        "",
        f"| test | {MIXED_COLUMN} |",
        "| --- | --- |",
    ]
    for name in sorted(mixed):
        lines.append(f"| `{name}` | {notes.cell(mixed[name])} |")
    if notes.reasons:
        lines += ["", "Reasons:", "", *notes.render()]
    return "\n".join(lines)


def broker_versions() -> list[str]:
    versions = [
        f"Python {platform.python_version()}, gmqtt {_package_version('gmqtt')}, "
        f"paho-mqtt {_package_version('paho-mqtt')}",
        f"Mosquitto {_mosquitto_version()}",
        f"amqtt {_package_version('amqtt')}",
        f"RabbitMQ {_rabbitmq_version()}",
    ]
    return versions


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _mosquitto_version() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        result = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    match = re.search(r"mosquitto version (\S+)", result.stdout + result.stderr)
    return match[1] if match else "unknown version"


def _rabbitmq_version() -> str:
    if shutil.which("rabbitmq-server") is None and not Path("/usr/sbin/rabbitmq-server").exists():
        return "not installed"
    if shutil.which("dpkg-query") is not None:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode == 0 and result.stdout:
            return f"{result.stdout} (Debian package), MQTT plugin rabbitmq_mqtt"
    return "unknown version"


def write_readme(tables: str) -> None:
    text = README.read_text()
    start = text.index(START_MARKER) + len(START_MARKER)
    end = text.index(END_MARKER)
    README.write_text(text[:start] + "\n" + tables + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-write", action="store_true", help="print the tables instead of writing them into compat/README.md"
    )
    arguments = parser.parse_args()

    matrix: dict[str, dict[str, Outcome]] = {}
    statuses = []
    with tempfile.TemporaryDirectory(prefix="mnemoq5-compat-") as directory:
        for keyword, _ in TARGETS:
            report = Path(directory) / f"{keyword}.xml"
            statuses.append(run_pytest([SUITE], keyword, report))
            for name, outcome in read_report(report).items():
                test, param = split_name(name)
                matrix.setdefault(test, {})[param] = outcome
        report = Path(directory) / "mixed.xml"
        statuses.append(run_pytest([MIXED_SUITE], None, report))
        mixed = read_report(report)

    tables = render_tables(matrix, mixed, broker_versions())
    if arguments.no_write:
        print(tables)
    else:
        write_readme(tables)
        print(f"wrote the results into {README.relative_to(ROOT)}")
    failed = any(status not in (0,) for status in statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
