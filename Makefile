# Every target does its own set-up on a fresh Debian machine as root: python3-venv
# from apt when venv is missing, a venv in .venv with the package and its test
# dependencies, and Mosquitto, its clients and openssl from apt when missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all setup broker test lint demo bench bench-quick compat clean

all: test

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "installing python3 and python3-venv with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip; }
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
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients; }
	@command -v openssl >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

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
