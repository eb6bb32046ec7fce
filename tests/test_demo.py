"""Tests of the catch-up demo: the whole scenario as a subprocess, and its staleness check."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mnemoq5 import _demo

PROJECT = Path(__file__).resolve().parent.parent
# One row of the result table: start, expected, recovered, catch-up ms, messages, replayed, stale.
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+|-)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def run_demo(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def table_rows(output: str) -> list[tuple[int, ...]]:
    rows = []
    for line in output.splitlines():
        match = ROW.match(line)
        if match:
            rows.append(tuple(-1 if group == "-" else int(group) for group in match.groups()))
    return rows


def check_report(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale values seen: 0" in result.stdout
    assert "all topics recovered at every start: yes" in result.stdout
    assert "RESULT: PASS" in result.stdout
    rows = table_rows(result.stdout)
    assert len(rows) == 2, result.stdout
    for _start, expected, recovered, _ms, _messages, _replayed, stale in rows:
        assert expected == 12
        assert recovered == expected
        assert stale == 0


@pytest.mark.slow
def test_demo_module_passes() -> None:
    check_report(run_demo("mnemoq5._demo"))


@pytest.mark.slow
def test_demo_command_passes() -> None:
    check_report(run_demo("mnemoq5", "demo"))


def test_demo_without_mosquitto(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_demo, "_find_mosquitto", lambda: None)

    status = _demo.main([])

    assert status == 2
    assert "mosquitto is not installed: apt-get install mosquitto" in capsys.readouterr().err


def test_demo_invalid_sensors(capsys: pytest.CaptureFixture[str]) -> None:
    status = _demo.main(["--sensors", "0"])

    assert status == 2
    assert "--sensors 0 is invalid" in capsys.readouterr().err


def test_cli_settings_private_broker() -> None:
    settings = _demo._settings_from_cli(argparse.Namespace(host=None, port=None))

    assert settings.host is None


def test_cli_settings_named_broker() -> None:
    settings = _demo._settings_from_cli(argparse.Namespace(host="127.0.0.1", port=1883))

    assert settings.host == "127.0.0.1"
    assert settings.port == 1883


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", None, ("127.0.0.1", 1883)),
        (None, 1884, ("127.0.0.1", 1884)),
        ("localhost", 1885, ("localhost", 1885)),
    ],
)
def test_broker_settings_defaults(host: str | None, port: int | None, expected: tuple[str, int]) -> None:
    settings = _demo._broker_settings(host, port)

    assert (settings.host, settings.port) == expected


def test_cli_settings_username() -> None:
    args = argparse.Namespace(host=None, port=None, username="user")

    with pytest.raises(_demo._UsageError, match="does not support username"):
        _demo._settings_from_cli(args)


def message_line(topic: str, run: int, counter: int, stamp: tuple[int, int, str]) -> dict[str, object]:
    return {
        "event": "message",
        "topic": topic,
        "run": run,
        "counter": counter,
        "replayed": False,
        "sender": stamp[2],
        "stamp": list(stamp),
    }


def test_record_newer_values() -> None:
    run = _demo._ConsumerRun(1, {"a"})

    problems = run.record(message_line("a", 1, 5, (100, 0, "p")))
    problems += run.record(message_line("a", 1, 6, (101, 0, "p")))

    assert problems == []
    assert run.stale == 0


def test_record_older_stamp() -> None:
    run = _demo._ConsumerRun(1, {"a"})
    run.record(message_line("a", 1, 6, (101, 0, "p")))

    problems = run.record(message_line("a", 1, 7, (100, 3, "p")))

    assert run.stale == 1
    assert "stale value on a" in problems[0]


def test_record_lower_counter() -> None:
    run = _demo._ConsumerRun(1, {"a"})
    run.record(message_line("a", 1, 6, (101, 0, "p")))

    run.record(message_line("a", 1, 5, (102, 0, "p")))

    assert run.stale == 1


def test_record_restarted_publisher() -> None:
    run = _demo._ConsumerRun(1, {"a"})
    run.record(message_line("a", 1, 40, (101, 0, "p")))

    problems = run.record(message_line("a", 2, 0, (205, 0, "p")))

    assert problems == []
    assert run.stale == 0


def test_record_ended_run_in_catch_up() -> None:
    run = _demo._ConsumerRun(1, {"a"})

    problems = run.record(message_line("a", 1, 40, (101, 0, "p")), current_run=2)

    assert run.stale == 1
    assert "ended publisher run 1" in problems[0]


def test_record_duplicate() -> None:
    run = _demo._ConsumerRun(1, {"a"})
    run.record(message_line("a", 1, 6, (101, 0, "p")))

    run.record(message_line("a", 1, 6, (101, 0, "p")))

    assert run.duplicates == 1
    assert run.stale == 0


def test_record_counts_topics_before_catch_up() -> None:
    run = _demo._ConsumerRun(1, {"a", "b"})
    run.record(message_line("a", 1, 1, (100, 0, "p")))
    run.caught_up = True

    run.record(message_line("b", 1, 1, (100, 1, "p")))

    assert run.recovered == 1
