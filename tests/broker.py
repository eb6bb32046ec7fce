"""Private broker processes for the tests, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypeVar

CONFIG_DIR = Path(__file__).parent / "brokers"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto is not installed: run 'make test', which installs it with apt-get")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Poll until something accepts TCP connections on ``port``, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no broker is listening on {LOOPBACK}:{port} after {timeout} s") from None
            time.sleep(0.02)


BrokerT = TypeVar("BrokerT", bound="BrokerProcess")


class BrokerProcess:
    """A broker process on a loopback port, restartable on the same port, with its files in a temporary directory.

    A subclass writes its config file into ``self._directory`` and returns the command line from ``command()``.
    """

    def __init__(self, name: str, port: int | None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self._name = name
        self._directory = tempfile.TemporaryDirectory(prefix=f"mnemoq5-{name}-")
        self._log_path = Path(self._directory.name) / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self: BrokerT) -> BrokerT:
        log = open(self._log_path, "ab")
        self._process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        log.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self._name} did not start:\n{self.log()}") from None
        return self

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        self._directory.cleanup()

    def __enter__(self: BrokerT) -> BrokerT:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Mosquitto(BrokerProcess):
    """A Mosquitto process with a config file from tests/brokers."""

    def __init__(self, config: str = "mosquitto.conf", port: int | None = None) -> None:
        super().__init__("mosquitto", port)
        self._config_path = Path(self._directory.name) / "mosquitto.conf"
        text = (CONFIG_DIR / config).read_text()
        self._config_path.write_text(text + f"\nlistener {self.port} {LOOPBACK}\n")

    def command(self) -> list[str]:
        return [find_mosquitto(), "-c", str(self._config_path)]
