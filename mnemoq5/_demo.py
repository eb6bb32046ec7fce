"""The catch-up demonstration: late and restarted consumers recover every value.

The demo runs each party as its own OS process. Sensor publishers change a counter per
topic a few times per second. One consumer starts late, is killed with SIGKILL and is
started again, and meanwhile one publisher crashes and restarts with an empty store.
Each consumer start subscribes with ``catch_up=True`` and reports to this process, as
JSON lines on its stdout, when its catch-up finished and every message it received. The
parent prints a timeline and a table, and exits 0 only when every start recovered every
topic and no consumer saw a stale value.

Run it with ``python -m mnemoq5._demo`` or ``mnemoq5 demo``. Without ``--host`` and
``--port`` it starts a private Mosquitto on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]

LOOPBACK = "127.0.0.1"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# 128 + SIGINT, the status a shell reports for a process ended by Ctrl-C.
EXIT_INTERRUPTED = 130

# The broker address when only one of --host and --port is given.
_DEFAULT_HOST = LOOPBACK
_DEFAULT_PORT = 1883

# Seconds to wait for one child to connect and report, and for a catch-up to finish.
_CHILD_READY_TIMEOUT = 15.0
_CATCH_UP_TIMEOUT = 5.0
# The consumer starts that the scenario in _Demo.play makes.
_CONSUMER_STARTS = 2


# -- options ----------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnemoq5._demo",
        add_help=False,
        description="Show late and restarted consumers catching up from live publisher processes.",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-h",
        "--host",
        help="broker host (default 127.0.0.1 with -p); without -h and -p the demo starts a private Mosquitto",
    )
    parser.add_argument("-p", "--port", type=int, help="broker port (default 1883 with -h)")
    parser.add_argument("--sensors", type=int, default=3, help="number of publisher processes (default 3)")
    parser.add_argument("--topics", type=int, default=4, help="topics per publisher (default 4)")
    parser.add_argument("--rate", type=float, default=5.0, help="publishes per topic per second (default 5)")
    # The options below are for the child processes that the demo starts.
    parser.add_argument("--role", choices=("parent", "publisher", "consumer"), default="parent", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--control-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--sensor", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=1, help=argparse.SUPPRESS)
    return parser


@dataclass
class _Settings:
    host: str | None
    port: int
    sensors: int = 3
    topics: int = 4
    rate: float = 5.0


def _settings_from_cli(args: argparse.Namespace) -> _Settings:
    """Read the broker from the ``mnemoq5 demo`` options, where a host and port of None mean a private broker."""
    unsupported = [
        name for name in ("username", "password", "tls", "cafile", "cert", "key", "compat") if getattr(args, name, None)
    ]
    if unsupported:
        raise _UsageError(f"the demo does not support {', '.join(unsupported)}: use a broker with anonymous access")
    return _broker_settings(getattr(args, "host", None), getattr(args, "port", None))


def _broker_settings(host: str | None, port: int | None) -> _Settings:
    """Return the settings for a named broker, or with host None for a private one when neither is given."""
    if host is None and port is None:
        return _Settings(None, _DEFAULT_PORT)
    return _Settings(host or _DEFAULT_HOST, _DEFAULT_PORT if port is None else port)


class _UsageError(Exception):
    pass


# -- the private broker -----------------------------------------------------


def _find_mosquitto() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class _PrivateBroker:
    """A Mosquitto process on a free loopback port with a temporary configuration."""

    def __init__(self, executable: str) -> None:
        self.port = _free_port()
        self._directory = tempfile.TemporaryDirectory(prefix="mnemoq5-demo-")
        directory = Path(self._directory.name)
        self._config = directory / "mosquitto.conf"
        self._config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\npersistence false\n")
        self._log = directory / "mosquitto.log"
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        # NOTE: a demo killed with SIGKILL leaves this broker running. Linux's parent-death
        # signal does not help, because Mosquitto started as root changes its user and the
        # kernel then clears that signal.
        with open(self._log, "ab") as log:
            # A session of its own keeps a terminal's Ctrl-C from stopping the broker
            # before the clients, which close() stops first.
            self._process = subprocess.Popen(
                [self._executable, "-c", str(self._config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with status {self._process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s") from None
                time.sleep(0.02)

    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def close(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        self._directory.cleanup()


# -- child processes --------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    """Write one JSON line to stdout, which the parent reads."""
    print(json.dumps({"event": event, **fields}), flush=True)


def _install_stop_handlers(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM, on SIGINT and when the parent closes our stdin.

    The parent owns the write end of stdin, so EOF means the parent has gone, even
    when it was killed without a chance to stop its children.
    """
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    def watch_stdin() -> None:
        # os.read on the descriptor, because a daemon thread blocked in the buffered
        # sys.stdin holds its lock and makes interpreter shutdown abort.
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="mnemoq5-demo-stdin", daemon=True).start()


def _sensor_topic(root: str, sensor: int, index: int) -> str:
    return f"{root}/sensor{sensor}/value{index}"


async def _run_publisher(options: argparse.Namespace) -> int:
    """Publish ``options.topics`` counters, each ``options.rate`` times per second, until stopped.

    The payload carries the publisher run number and a counter per topic, so the parent
    can tell the order of values within one run.
    """
    from ._client import MnemoQ

    stop = asyncio.Event()
    _install_stop_handlers(stop)
    topics = [_sensor_topic(options.root, options.sensor, index) for index in range(options.topics)]
    counters = dict.fromkeys(topics, 0)
    client = MnemoQ(
        options.host, options.port, options.client_id, control_prefix=options.control_prefix, reply_jitter=0.02
    )
    await client.connect()
    try:
        for topic in topics:
            await client.publish(topic, _payload(options, counters[topic]), qos=1)
        _emit("ready", client_id=client.client_id, topics=len(topics))
        interval = 1.0 / options.rate
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            for topic in topics:
                counters[topic] += 1
                await client.publish(topic, _payload(options, counters[topic]), qos=1)
    finally:
        await client.disconnect()
    return EXIT_OK


def _payload(options: argparse.Namespace, counter: int) -> bytes:
    return json.dumps({"sensor": options.sensor, "run": options.run, "counter": counter}).encode()


async def _run_consumer(options: argparse.Namespace) -> int:
    """Subscribe to the demo's topics with catch-up and report every message until stopped."""
    from ._client import MnemoQ

    stop = asyncio.Event()
    _install_stop_handlers(stop)
    topic_filter = f"{options.root}/#"
    client = MnemoQ(options.host, options.port, options.client_id, control_prefix=options.control_prefix)
    await client.connect()
    seen: set[str] = set()

    async def report_messages() -> None:
        async for message in client.messages():
            seen.add(message.topic)
            _emit("message", **_describe(message))

    reader = asyncio.create_task(report_messages())
    try:
        started = time.monotonic()
        await client.subscribe(topic_filter, qos=1, catch_up=True, timeout=_CATCH_UP_TIMEOUT)
        seconds = time.monotonic() - started
        # The replayed messages are queued before subscribe() returns. The reader takes
        # every queued message in one step once it runs, so yielding to it a few times
        # puts their lines before the caught-up line.
        for _ in range(5):
            await asyncio.sleep(0)
        _emit("caught-up", topics=len(seen), seconds=round(seconds, 3), peers=len(client.peers()))
        await stop.wait()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await client.disconnect()
    return EXIT_OK


def _describe(message: Any) -> dict[str, Any]:
    try:
        body = json.loads(message.payload)
    except ValueError:
        body = {}
    stamp = message.stamp
    return {
        "topic": message.topic,
        "sensor": body.get("sensor"),
        "run": body.get("run"),
        "counter": body.get("counter"),
        "replayed": message.replayed,
        "sender": message.sender,
        "stamp": None if stamp is None else [stamp.millis, stamp.counter, stamp.writer],
    }


def _run_child(options: argparse.Namespace) -> int:
    from ._errors import MnemoqError

    runner = _run_publisher if options.role == "publisher" else _run_consumer
    try:
        return asyncio.run(runner(options))
    except MnemoqError as error:
        print(f"mnemoq5 demo {options.role} {options.client_id}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# -- the parent ---------------------------------------------------------------


@dataclass
class _ConsumerRun:
    """Results that the parent collected from one consumer start."""

    number: int
    expected: set[str]
    seen_before_catch_up: set[str] = field(default_factory=set)
    caught_up: bool = False
    catch_up_seconds: float | None = None
    peers: int | None = None
    messages: int = 0
    replayed: int = 0
    stale: int = 0
    duplicates: int = 0
    newest: dict[str, tuple[tuple[int, int, str], tuple[int, int]]] = field(default_factory=dict)

    @property
    def recovered(self) -> int:
        return len(self.seen_before_catch_up & self.expected)

    def record(self, line: dict[str, Any], current_run: int | None = None) -> list[str]:
        """Check one message against the newest seen on its topic and return the problems found.

        A value is stale when its stamp is older than one already seen on its topic in
        this consumer run, or when its (publisher run, counter) pair is lower. The second
        check does not depend on the stamp that the library itself orders by. A value
        recovered by the catch-up is also stale when it comes from a publisher run
        before ``current_run``, the run that was live when this consumer started.
        """
        self.messages += 1
        self.replayed += bool(line["replayed"])
        if not self.caught_up:
            self.seen_before_catch_up.add(line["topic"])
        if line["stamp"] is None or line["run"] is None or line["counter"] is None:
            self.stale += 1
            return [f"message on {line['topic']} has no stamp or counter"]
        stamp = (int(line["stamp"][0]), int(line["stamp"][1]), str(line["stamp"][2]))
        version = (int(line["run"]), int(line["counter"]))
        if not self.caught_up and current_run is not None and version[0] < current_run:
            self.stale += 1
            return [f"catch-up recovered {line['topic']} from ended publisher run {version[0]}"]
        previous = self.newest.get(line["topic"])
        if previous is not None:
            previous_stamp, previous_version = previous
            if stamp == previous_stamp:
                self.duplicates += 1
                return [f"duplicate on {line['topic']}: stamp {stamp[0]}:{stamp[1]}"]
            if stamp < previous_stamp or version < previous_version:
                self.stale += 1
                return [
                    f"stale value on {line['topic']}: run {version[0]} counter {version[1]} "
                    f"after run {previous_version[0]} counter {previous_version[1]}"
                ]
        self.newest[line["topic"]] = (stamp, version)
        return []


class _Child:
    """One child process whose stdout lines go to ``on_line`` as parsed JSON."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, on_line: Callable[[dict[str, Any]], None]):
        self.name = name
        self.process = process
        self._on_line = on_line
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            raw = await stream.readline()
            if not raw:
                return
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                continue
            try:
                line = json.loads(text)
            except ValueError:
                continue
            self._on_line(line)

    def send_signal(self, signal_number: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal_number)

    async def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 3.0) -> None:
        self.send_signal(signal_number)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            self.send_signal(signal.SIGKILL)
            await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)
        stdin = self.process.stdin
        if stdin is not None:
            stdin.close()


class _Demo:
    """The parent: starts children, keeps the timeline and checks the consumer reports."""

    def __init__(self, settings: _Settings, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        token = uuid.uuid4().hex[:8]
        self.root = f"mnemoq5-demo/{token}"
        # A control prefix of its own keeps other mnemoq5 peers on a shared broker out of the demo.
        self.control_prefix = f"mnemoq5-demo-{token}"
        self.consumer_id = f"demo-consumer-{token}"
        self.publisher_ids = [f"demo-sensor{sensor}-{token}" for sensor in range(1, settings.sensors + 1)]
        self.expected = {
            _sensor_topic(self.root, sensor, index)
            for sensor in range(1, settings.sensors + 1)
            for index in range(settings.topics)
        }
        self.children: list[_Child] = []
        # Sensor number to the run number of its live publisher process.
        self.publisher_runs: dict[int, int] = {}
        self.runs: list[_ConsumerRun] = []
        self.problems: list[str] = []
        self._started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self._started:6.2f}s] {text}", flush=True)

    async def spawn(self, name: str, arguments: list[str], on_line: Callable[[dict[str, Any]], None]) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mnemoq5._demo",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--root",
            self.root,
            "--control-prefix",
            self.control_prefix,
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = _Child(name, process, on_line)
        self.children.append(child)
        return child

    async def start_publisher(self, sensor: int, run: int) -> _Child:
        ready = asyncio.Event()

        def on_line(line: dict[str, Any]) -> None:
            if line.get("event") == "ready":
                ready.set()

        child = await self.spawn(
            f"sensor{sensor}",
            [
                "--role",
                "publisher",
                "--client-id",
                self.publisher_ids[sensor - 1],
                "--sensor",
                str(sensor),
                "--run",
                str(run),
                "--topics",
                str(self.settings.topics),
                "--rate",
                str(self.settings.rate),
            ],
            on_line,
        )
        await self._wait(ready, child, f"sensor{sensor} did not publish its first values")
        self.publisher_runs[sensor] = run
        self.say(
            f"sensor{sensor} run {run} is up (pid {child.process.pid}) and published {self.settings.topics} topics"
        )
        return child

    async def start_consumer(self) -> _Child:
        run = _ConsumerRun(len(self.runs) + 1, self.expected)
        self.runs.append(run)
        runs_at_start = dict(self.publisher_runs)
        caught_up = asyncio.Event()

        def on_line(line: dict[str, Any]) -> None:
            event = line.get("event")
            if event == "message":
                sensor = line.get("sensor")
                current_run = runs_at_start.get(sensor) if isinstance(sensor, int) else None
                for problem in run.record(line, current_run):
                    self.problems.append(f"consumer start {run.number}: {problem}")
                    self.say(f"PROBLEM: {problem}")
            elif event == "caught-up":
                run.caught_up = True
                run.catch_up_seconds = float(line["seconds"])
                run.peers = int(line["peers"])
                caught_up.set()
                self.say(
                    f"consumer start {run.number} caught up in {run.catch_up_seconds * 1000:.0f} ms "
                    f"from {run.peers} peers: {run.recovered}/{len(self.expected)} topics, "
                    f"{run.replayed} replayed values"
                )

        self.say(f"consumer start {run.number}: subscribing to {self.root}/# with catch-up")
        child = await self.spawn(
            f"consumer{run.number}", ["--role", "consumer", "--client-id", self.consumer_id], on_line
        )
        await self._wait(caught_up, child, f"consumer start {run.number} did not finish its catch-up")
        return child

    async def _wait(self, event: asyncio.Event, child: _Child, failure: str) -> None:
        waiter = asyncio.create_task(event.wait())
        exited = asyncio.create_task(child.process.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, exited}, timeout=_CHILD_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            exited.cancel()
        if waiter not in done:
            reason = "exited" if exited in done else f"timed out after {_CHILD_READY_TIMEOUT} s"
            raise RuntimeError(f"{failure}: {reason}")

    async def pause(self, seconds: float, activity: str) -> None:
        self.say(f"{activity} for {seconds:.1f} s")
        await asyncio.sleep(seconds)

    async def play(self) -> None:
        settings = self.settings
        self.say(
            f"starting {settings.sensors} sensor processes with {settings.topics} topics each, "
            f"publishing {settings.rate:g} times per second"
        )
        publishers = await asyncio.gather(
            *(self.start_publisher(sensor, 1) for sensor in range(1, settings.sensors + 1))
        )
        await self.pause(1.5, "sensors publish with no consumer")

        consumer = await self.start_consumer()
        await self.pause(1.5, "consumer receives live values")

        restarted = settings.sensors
        self.say(f"killing sensor{restarted} with SIGKILL; it restarts with an empty store")
        await publishers[restarted - 1].stop(signal.SIGKILL)
        publishers[restarted - 1] = await self.start_publisher(restarted, 2)
        await self.pause(1.5, "consumer receives the restarted sensor's values")

        self.say(f"killing consumer start 1 with SIGKILL (pid {consumer.process.pid})")
        await consumer.stop(signal.SIGKILL)
        await self.pause(1.0, "sensors publish while the consumer is down")

        consumer = await self.start_consumer()
        await self.pause(1.5, "consumer receives live values")

        self.say("stopping the consumer and the sensors")
        await asyncio.gather(*(child.stop() for child in [consumer, *publishers]))

    async def stop_all(self) -> None:
        await asyncio.gather(*(child.stop(signal.SIGKILL, timeout=5) for child in self.children))

    def table(self) -> bool:
        """Print the result per consumer start and return whether every check passed."""
        print()
        columns = [("start", 5), ("expected", 8), ("recovered", 9), ("catch-up ms", 11)]
        columns += [("messages", 8), ("replayed", 8), ("stale", 5)]
        header = "  ".join(f"{name:>{width}}" for name, width in columns)
        print(header)
        print("-" * len(header))
        passed = len(self.runs) == _CONSUMER_STARTS and not self.problems
        for run in self.runs:
            catch_up = "-" if run.catch_up_seconds is None else f"{run.catch_up_seconds * 1000:.0f}"
            print(
                f"{run.number:>5}  {len(run.expected):>8}  {run.recovered:>9}  {catch_up:>11}  "
                f"{run.messages:>8}  {run.replayed:>8}  {run.stale:>5}"
            )
            passed = passed and run.caught_up and run.recovered == len(run.expected) and run.stale == 0
        stale = sum(run.stale for run in self.runs)
        all_recovered = all(run.recovered == len(run.expected) for run in self.runs)
        print()
        print(f"stale values seen: {stale}")
        print(f"all topics recovered at every start: {'yes' if all_recovered and self.runs else 'no'}")
        duplicates = sum(run.duplicates for run in self.runs)
        if duplicates:
            print(f"duplicate values seen: {duplicates}")
        if len(self.runs) < _CONSUMER_STARTS:
            print(f"consumer starts: {len(self.runs)} of {_CONSUMER_STARTS}")
        for problem in self.problems[:10]:
            print(f"problem: {problem}")
        print("RESULT: PASS" if passed else "RESULT: FAIL")
        return passed


async def _run_parent(settings: _Settings) -> int:
    broker: _PrivateBroker | None = None
    demo: _Demo | None = None
    try:
        if settings.host is None:
            executable = _find_mosquitto()
            if executable is None:
                print("mosquitto is not installed: apt-get install mosquitto", file=sys.stderr, flush=True)
                return EXIT_USAGE
            broker = _PrivateBroker(executable)
            broker.start()
            host, port = LOOPBACK, broker.port
        else:
            host, port = settings.host, settings.port
        demo = _Demo(settings, host, port)
        where = f"a private Mosquitto on {host}:{port}" if broker else f"the broker at {host}:{port}"
        demo.say(f"using {where}, topics under {demo.root}/")
        try:
            await demo.play()
        except RuntimeError as error:
            demo.say(f"FAILED: {error}")
            demo.problems.append(str(error))
        return EXIT_OK if demo.table() else EXIT_FAILED
    finally:
        if demo is not None:
            await demo.stop_all()
        if broker is not None:
            broker.close()


def _check_settings(settings: _Settings) -> None:
    if not 1 <= settings.sensors <= 20:
        raise _UsageError(f"--sensors {settings.sensors} is invalid: it must be 1..20")
    if not 1 <= settings.topics <= 100:
        raise _UsageError(f"--topics {settings.topics} is invalid: it must be 1..100")
    if not 0.1 <= settings.rate <= 50:
        raise _UsageError(f"--rate {settings.rate} is invalid: it must be 0.1..50 per second")


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the demo and return the exit status: 0 passed, 1 failed, 2 usage error, 130 on Ctrl-C.

    ``args`` is the namespace of ``mnemoq5 demo``, or an argument list for
    ``python -m mnemoq5._demo`` (default ``sys.argv[1:]``).
    """
    try:
        if isinstance(args, argparse.Namespace):
            settings = _settings_from_cli(args)
        else:
            options = _build_parser().parse_args(args)
            if options.role != "parent":
                return _run_child(options)
            settings = _broker_settings(options.host, options.port)
            settings.sensors = options.sensors
            settings.topics = options.topics
            settings.rate = options.rate
        _check_settings(settings)
    except _UsageError as error:
        print(f"mnemoq5 demo: error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        return asyncio.run(_run_parent(settings))
    except KeyboardInterrupt:
        print("interrupted: stopped every demo process", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
