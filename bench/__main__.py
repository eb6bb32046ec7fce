"""Command line: ``python -m bench [--quick] [--json PATH]`` from the repository root."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import catchup, latency, memory, throughput
from ._common import NotAvailable, Result, Sample, broker_config_text, median, results_dir, start_broker
from .report import format_table

logger = logging.getLogger("bench")

KIB = 1024
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each benchmark does; ``quick`` trades precision for a run well under a minute."""

    repeats: int
    counts: dict[int, int]
    """Throughput messages per run, by payload size in bytes."""
    large_counts: dict[int, int]
    round_trips: int
    store_entries: int
    catchup_topics: tuple[int, ...]
    catchup_peers: tuple[int, ...] = (1, 10)


QUICK = Plan(
    repeats=1,
    counts={100: 10_000, 64 * KIB: 1_000},
    large_counts={MIB: 20, 16 * MIB: 3},
    round_trips=1_000,
    store_entries=20_000,
    catchup_topics=(1_000, 10_000),
)
FULL = Plan(
    repeats=3,
    counts={100: 30_000, 64 * KIB: 3_000},
    large_counts={MIB: 40, 16 * MIB: 4},
    round_trips=3_000,
    store_entries=100_000,
    catchup_topics=(10_000, 100_000),
)


def size_label(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MiB"
    if size >= KIB:
        return f"{size // KIB} KiB"
    return f"{size} B"


class Runner:
    """Runs the benchmarks against one broker and collects their results."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.results: list[Result] = []
        self.broker = start_broker()

    def close(self) -> None:
        self.broker.close()

    def _record_error(self, result: Result, error: BaseException) -> None:
        result.status = "error"
        result.reason = f"{type(error).__name__}: {error}"
        logger.error("%s / %s / %s failed: %s", result.group, result.scenario, result.implementation, result.reason)

    # -- throughput -------------------------------------------------------

    def _transfer_functions(self) -> dict[str, Callable[[int, int, int], Sample]]:
        host, port = self.broker.host, self.broker.port
        return {
            "mnemoq5": lambda size, qos, count: asyncio.run(throughput.mnemoq5_transfer(host, port, size, qos, count)),
            "gmqtt": lambda size, qos, count: asyncio.run(throughput.gmqtt_transfer(host, port, size, qos, count)),
            "paho": lambda size, qos, count: throughput.paho_transfer(host, port, size, qos, count),
            "mosquitto C": lambda size, qos, count: throughput.mosquitto_cli_transfer(host, port, size, qos, count),
        }

    def run_transfers(self, group: str, scenarios: list[tuple[int, int, int]], implementations: list[str]) -> None:
        """Measure every (size, qos, count) scenario for each implementation, interleaved across repeats."""
        functions = self._transfer_functions()
        cells: dict[tuple[str, str], Result] = {}
        for repeat in range(self.plan.repeats):
            for size, qos, count in scenarios:
                scenario = f"{size_label(size)} QoS {qos}"
                for name in implementations:
                    result = cells.setdefault(
                        (scenario, name),
                        Result(group, scenario, name, "msg/s", details={"payload_bytes": size, "qos": qos,
                                                                         "messages": count, "received": []}),
                    )
                    if result.status != "ok":
                        continue
                    logger.info("%s: %s, %s, repeat %d", group, scenario, name, repeat + 1)
                    try:
                        sample = functions[name](size, qos, count)
                    except Exception as error:  # one failing cell must not end the run
                        self._record_error(result, error)
                        continue
                    result.runs.append(sample.rate)
                    result.details["received"].append(sample.received)
        for result in cells.values():
            if result.runs:
                result.value = median(result.runs)
                result.details["mib_per_s"] = result.value * result.details["payload_bytes"] / MIB
            self.results.append(result)

    def throughput(self) -> None:
        scenarios = [(size, qos, count) for size, count in self.plan.counts.items() for qos in (0, 1)]
        self.run_transfers("throughput", scenarios, ["mnemoq5", "gmqtt", "paho", "mosquitto C"])

    def large_payloads(self) -> None:
        scenarios = [(size, 0, count) for size, count in self.plan.large_counts.items()]
        self.run_transfers("large payloads", scenarios, ["mnemoq5", "gmqtt", "mosquitto C"])

    # -- latency ----------------------------------------------------------

    def latency(self) -> None:
        host, port = self.broker.host, self.broker.port
        functions: dict[str, Callable[[], list[float]]] = {
            "mnemoq5": lambda: asyncio.run(latency.mnemoq5_round_trips(host, port, self.plan.round_trips)),
            "gmqtt": lambda: asyncio.run(latency.gmqtt_round_trips(host, port, self.plan.round_trips)),
        }
        samples: dict[str, list[float]] = {name: [] for name in functions}
        failed: dict[str, BaseException] = {}
        for repeat in range(self.plan.repeats):
            for name, function in functions.items():
                if name in failed:
                    continue
                logger.info("latency: %s, repeat %d", name, repeat + 1)
                try:
                    samples[name].extend(function())
                except Exception as error:
                    failed[name] = error
        for name, times in samples.items():
            for label, fraction in (("p50", 0.50), ("p99", 0.99)):
                result = Result("latency", f"{latency.PING_SIZE} B round trip {label}", name, "us",
                                details={"round_trips": len(times)})
                if name in failed:
                    self._record_error(result, failed[name])
                elif times:
                    result.value = latency.percentile(times, fraction) * 1e6
                self.results.append(result)

    # -- memory -----------------------------------------------------------

    def memory(self) -> None:
        result = Result("memory", "MemoryStore bytes per entry above topic + payload", "mnemoq5", "B",
                        details={"target": memory.TARGET_OVERHEAD})
        try:
            measured = memory.measure_store(self.plan.store_entries)
        except Exception as error:
            self._record_error(result, error)
        else:
            result.value = measured.overhead_per_entry
            result.details.update(dataclasses.asdict(measured))
            result.details["within_target"] = measured.overhead_per_entry <= memory.TARGET_OVERHEAD
        self.results.append(result)

    # -- catch-up ---------------------------------------------------------

    def catchup(self) -> None:
        host, port = self.broker.host, self.broker.port
        for topics in self.plan.catchup_topics:
            for peers in self.plan.catchup_peers:
                self._run_catchup_cell(
                    f"{topics} topics, {peers} peer{'s' if peers > 1 else ''}", "mnemoq5 reload",
                    functools.partial(_run_reload, host, port, topics, peers),
                    topics,
                )
            self._run_catchup_cell(
                f"{topics} topics, retained", "gmqtt",
                functools.partial(_run_replay, catchup.gmqtt_retained_replay, host, port, topics),
                topics,
            )
            self._run_catchup_cell(
                f"{topics} topics, retained", "mosquitto_sub",
                functools.partial(_run_replay, catchup.mosquitto_sub_retained_replay, host, port, topics),
                topics,
            )
            self._run_completeness_cell(topics)

    def _run_catchup_cell(self, scenario: str, name: str, function: Callable[[], tuple[Any, ...]],
                          topics: int) -> None:
        result = Result("catch-up", scenario, name, "s", details={"topics": topics, "received": [], "complete": []})
        for repeat in range(self.plan.repeats):
            logger.info("catch-up: %s, %s, repeat %d", scenario, name, repeat + 1)
            try:
                elapsed, received, complete = function()
            except NotAvailable as reason:
                result.status, result.reason = "skipped", str(reason)
                break
            except Exception as error:
                self._record_error(result, error)
                break
            result.runs.append(elapsed)
            result.details["received"].append(received)
            result.details["complete"].append(complete)
        if result.runs:
            result.value = median(result.runs)
        self.results.append(result)

    def _run_completeness_cell(self, topics: int) -> None:
        host, port = self.broker.host, self.broker.port
        for peers in self.plan.catchup_peers:
            result = Result("completeness", f"{topics} topics, {peers} peer{'s' if peers > 1 else ''}, stock config",
                            "mnemoq5 reload", "%", details={"topics": topics, "complete": []})
            for _ in range(self.plan.repeats):
                try:
                    returned, complete = asyncio.run(catchup.completeness(host, port, topics, peers))
                except NotAvailable as reason:
                    result.status, result.reason = "skipped", str(reason)
                    break
                except Exception as error:
                    self._record_error(result, error)
                    break
                result.runs.append(100.0 * returned / topics)
                result.details["complete"].append(complete)
            if result.runs:
                result.value = min(result.runs)
            self.results.append(result)


def _run_reload(host: str, port: int, topics: int, peers: int) -> tuple[float, int, bool | None]:
    return asyncio.run(catchup.mnemoq5_reload(host, port, topics, peers))


def _run_replay(
    replay: Callable[[str, int, int], Coroutine[Any, Any, tuple[float, int]]], host: str, port: int, topics: int
) -> tuple[float, int, None]:
    elapsed, received = asyncio.run(replay(host, port, topics))
    return elapsed, received, None


def machine() -> dict[str, Any]:
    """Describe the machine and the software versions behind the figures."""
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    try:
        mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=10).stdout
        mosquitto_version = mosquitto.splitlines()[0] if mosquitto else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        mosquitto_version = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "unknown"
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / MIB, 1),
        "cpu": platform.processor() or platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "gmqtt": importlib.metadata.version("gmqtt"),
        "paho-mqtt": importlib.metadata.version("paho-mqtt"),
        "mnemoq5": importlib.metadata.version("mnemoq5"),
        "mosquitto": mosquitto_version,
        "commit": commit,
    }


# The benchmark groups in the order a run measures them; each is a Runner method.
STEPS = ("throughput", "latency", "memory", "large_payloads", "catchup")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="one repeat with small message counts; finishes in well under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write the results here (default: bench/results/<date>-<mode>.json)")
    parser.add_argument("--verbose", action="store_true", help="log each measurement as it starts")
    parser.add_argument("--only", choices=STEPS, action="append", metavar="GROUP",
                        help=f"run only this group of benchmarks (repeatable): {', '.join(STEPS)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if arguments.verbose:
        logger.setLevel(logging.INFO)
    plan = QUICK if arguments.quick else FULL
    mode = "quick" if arguments.quick else "full"
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.perf_counter()

    runner = Runner(plan)
    try:
        for name in STEPS:
            if arguments.only is None or name in arguments.only:
                getattr(runner, name)()
    finally:
        runner.close()

    report = {
        "date": started.isoformat(timespec="seconds"),
        "mode": mode,
        "duration_s": round(time.perf_counter() - clock, 1),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "plan": dataclasses.asdict(plan),
        "broker_config": broker_config_text() + "listener <free port> 127.0.0.1\n",
        "results": [dataclasses.asdict(result) for result in runner.results],
    }
    path = arguments.json or results_dir() / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

    print(format_table(report))
    print(f"\nresults written to {path}")
    errors = [result for result in runner.results if result.status == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
