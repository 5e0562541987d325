VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 1883

.PHONY: run cluster test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/roost serve --host $(HOST) --port $(PORT)

# A local cluster: a Valkey on 6379 and NODES nodes on 6000... (HTTP 8080...); Ctrl-C stops it
NODES ?= 3

cluster: $(VENV)/.installed
	$(VENV)/bin/roost cluster up --nodes $(NODES)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy src

# MQTT.js for the WebSocket tests (tests/security/mqttjs.py installs it too when missing)
JS_DEPS := tests/js/node_modules/.package-lock.json

$(JS_DEPS): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null 2>&1 || (apt-get update && apt-get install -y nodejs npm)
	cd tests/js && npm ci --no-audit --no-fund

test: lint typecheck $(JS_DEPS)
	$(PY) -m pytest -q -n auto

# make bench [BENCH_ARGS="qos0-fanin --rounds 3"] [INSTALL_MOSQUITTO=1]
BENCH_ARGS ?=
INSTALL_MOSQUITTO ?= 0

bench: $(VENV)/.installed
ifeq ($(INSTALL_MOSQUITTO),1)
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
		(apt-get update && apt-get install -y mosquitto)
endif
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
