# Distributed Math Wizard — the two commands that matter:
#   make run    start the whole cluster locally (Valkey, 3 nodes, nginx) on PORT
#   make test   install everything needed and run every test
# Both create .venv and install what they need on a fresh machine.

PORT    ?= 8080
NODES   ?= 3
WORKERS ?= 1
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test chaos bench lint up down clean install-local install-dev chromium

# The virtual environment, created once.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Editable installs, so static/ and ops/ are served from this checkout.
# Each stamp file is remade when setup.cfg changes.
$(VENV)/.local-installed: setup.cfg pyproject.toml | $(PY)
	$(PIP) install -e '.[local]'
	touch $@

$(VENV)/.dev-installed: setup.cfg pyproject.toml | $(PY)
	$(PIP) install -e '.[local,dev]'
	touch $@

install-local: $(VENV)/.local-installed
install-dev: $(VENV)/.dev-installed

## run: the whole cluster on http://127.0.0.1:$(PORT) (Ctrl+C stops it all)
run: install-local
	$(PY) -m wizard up --port $(PORT) --nodes $(NODES) --workers $(WORKERS)

## chromium: Debian's Chromium for the browser tests, installed if missing
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	fi

## test: every test (unit, integration, end to end, chaos, browser)
test: install-dev chromium
	$(PY) -m pytest

## chaos: only the fault-injection scenarios on the real local cluster
chaos: install-dev
	$(PY) -m pytest tests/chaos

## bench: throughput and latency against their ceilings (not a test)
bench: install-dev
	$(PY) benchmarks/run.py

## lint: static checks of the Python code
lint: install-dev
	$(PY) -m ruff check wizard tests benchmarks
	$(PY) -m ruff format --check wizard tests benchmarks

## up / down: the docker compose deployment (dev mode on port 80)
up:
	docker compose up --build

down:
	docker compose down

## clean: remove the virtual environment, logs, data and caches
clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
