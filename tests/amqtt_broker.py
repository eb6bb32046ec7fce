"""A private amqtt broker process, an MQTT 3.1.1-only broker for the compat tests.

amqtt 0.12 speaks only MQTT 3.1.1. It replies to a CONNECT with protocol level 5
with CONNACK return code 0x01 (unacceptable protocol version) and closes the connection.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .broker import LOOPBACK, free_port, wait_for_port

CONFIG_DIR = Path(__file__).parent.parent / "compat" / "brokers"


def find_amqtt() -> str:
    """Return the amqtt broker script installed beside this interpreter."""
    script = Path(sys.executable).parent / "amqtt"
    if not script.exists():
        raise RuntimeError(
            f"amqtt is not installed in {script.parent}: install the test extras with pip install -e '.[test]'"
        )
    return str(script)


class Amqtt:
    """An amqtt process with a config file from compat/brokers, restartable on the same port.

    The interface matches tests.broker.Mosquitto: start, stop, kill, restart, log, close.
    """

    def __init__(self, config: str = "amqtt.yaml", port: int | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self._directory = tempfile.TemporaryDirectory(prefix="mnemoq5-amqtt-")
        self._config_path = Path(self._directory.name) / "amqtt.yaml"
        settings = yaml.safe_load((CONFIG_DIR / config).read_text())
        for listener in settings["listeners"].values():
            listener["bind"] = f"{LOOPBACK}:{self.port}"
        self._config_path.write_text(yaml.safe_dump(settings))
        self._log_path = Path(self._directory.name) / "amqtt.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Amqtt:
        log = open(self._log_path, "ab")
        self._process = subprocess.Popen([find_amqtt(), "-c", str(self._config_path)], stdout=log, stderr=log)
        log.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"amqtt did not start:\n{self.log()}") from None
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

    def __enter__(self) -> Amqtt:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
