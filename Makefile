# Every target does its own set-up on a fresh Debian machine as root: a venv in .venv,
# the package with its test dependencies, and Mosquitto from apt when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all setup broker test lint demo bench bench-quick compat clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) broker

broker:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		echo "installing mosquitto with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; }
	@command -v mosquitto_sub >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients; }

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check mnemoq5 tests
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

bench-quick: setup
	$(BIN)/python -m bench --quick

demo: setup
	$(BIN)/python -m mnemoq5 demo

compat: setup
	$(BIN)/python compat/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
