"""A private amqtt broker process, an MQTT 3.1.1-only broker for the compat tests.

amqtt 0.12 speaks only MQTT 3.1.1. It replies to a CONNECT with protocol level 5
with CONNACK return code 0x01 (unacceptable protocol version) and closes the connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .broker import LOOPBACK, BrokerProcess

CONFIG_DIR = Path(__file__).parent.parent / "compat" / "brokers"


def find_amqtt() -> str:
    """Return the amqtt broker script installed beside this interpreter."""
    script = Path(sys.executable).parent / "amqtt"
    if not script.exists():
        raise RuntimeError(
            f"amqtt is not installed in {script.parent}: install the test extras with pip install -e '.[test]'"
        )
    return str(script)


class Amqtt(BrokerProcess):
    """An amqtt process with a config file from compat/brokers, restartable on the same port."""

    def __init__(self, config: str = "amqtt.yaml", port: int | None = None) -> None:
        super().__init__("amqtt", port)
        self._config_path = Path(self._directory.name) / "amqtt.yaml"
        settings = yaml.safe_load((CONFIG_DIR / config).read_text())
        for listener in settings["listeners"].values():
            listener["bind"] = f"{LOOPBACK}:{self.port}"
        self._config_path.write_text(yaml.safe_dump(settings))

    def command(self) -> list[str]:
        return [find_amqtt(), "-c", str(self._config_path)]
