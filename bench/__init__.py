"""Benchmarks of mnemoq5 against raw gmqtt, paho-mqtt and the Mosquitto command-line clients.

Run ``python -m bench [--quick] [--json PATH]`` from the repository root. Every figure
is a ratio against references measured in the same run on a private Mosquitto, so
results from different machines are compared by their ratios, not their rates.
"""
