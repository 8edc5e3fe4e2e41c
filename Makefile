# Distributed Math Wizard — the two commands that matter:
#   make run    start the whole cluster locally (Valkey, 3 nodes, nginx) on PORT
#   make test   install everything needed and run every test
# and for a class: make lab (make run with the labs' settings, ops/scripts/)
# Both create .venv and install what they need on a fresh machine.

PORT    ?= 8080
NODES   ?= 3
WORKERS ?= 1
# HA=1: a Valkey primary, two replicas and three sentinels (wizard up --ha)
HA      ?=
VAR     ?= var
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
CHROMIUM ?= /usr/bin/chromium
# pytest processes for make test: most tests wait on servers, not the CPU,
# so three share two cores well; each test file stays in one process.
TEST_PROCESSES ?= 3

.PHONY: containers-test-ha run lab test chaos bench bench-gil edge-figures lint up public certs down clean install-local \
        install-dev install-public install-bench chromium podman containers-test iproute2 faketime netlab

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
	touch $@ $(VENV)/.local-installed

$(VENV)/.public-installed: setup.cfg pyproject.toml | $(PY)
	$(PIP) install -e '.[public]'
	touch $@

$(VENV)/.bench-installed: setup.cfg pyproject.toml | $(PY)
	$(PIP) install -e '.[local,dev,bench]'
	touch $@

install-local: $(VENV)/.local-installed
install-dev: $(VENV)/.dev-installed
install-public: $(VENV)/.public-installed
	touch $@

install-bench: $(VENV)/.bench-installed

## run: the whole cluster on http://127.0.0.1:$(PORT) (Ctrl+C, or closing the
## terminal, stops it all); its logs and Valkey's data go under $(VAR)/
run: install-local
	$(PY) -m wizard up --port $(PORT) --nodes $(NODES) --workers $(WORKERS) $(if $(filter 1 yes true,$(HA)),--ha) --var-dir $(VAR)

## lab: make run in lab mode for ops/scripts/ and docs/walkthrough.md: chaos
## operation, an admin token (printed), rate limits on, short leases
lab: install-local
	$(PY) -m wizard up --lab --port $(PORT) --nodes $(NODES) --workers $(WORKERS) --var-dir $(VAR)

## chromium: Debian's Chromium for the browser tests, installed if missing
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	fi

## podman: Debian's podman and what the container tests need, installed if missing
## (catatonit: compose's `init: true`; debootstrap: the base image, no registry here)
PODMAN_PACKAGES := podman runc iptables uidmap slirp4netns netavark aardvark-dns \
                   fuse-overlayfs catatonit debootstrap
podman:
	@if [ "$$(dpkg-query -W -f='$${db:Status-Status}\n' $(PODMAN_PACKAGES) 2>/dev/null \
	      | grep -c '^installed$$')" != "$(words $(PODMAN_PACKAGES))" ]; then \
	  echo "installing Debian's podman for the container tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    $(PODMAN_PACKAGES) >/dev/null; \
	fi

## iproute2: `ip` and `ebtables` for the network lab (namespaces, bridge, partitions), installed if missing
iproute2:
	@if ! command -v ip >/dev/null 2>&1 || ! command -v ebtables >/dev/null 2>&1; then \
	  echo "installing Debian's iproute2 and ebtables for the network lab"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends iproute2 ebtables >/dev/null; \
	fi

## faketime: libfaketime, for the test that runs a Valkey replica on a clock
## 30 s ahead (tests/integration/test_clock_skew.py), installed if missing
faketime:
	@if ! command -v faketime >/dev/null 2>&1; then \
	  echo "installing Debian's faketime for the clock-skew test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends faketime >/dev/null; \
	fi

## netlab: the cluster over network namespaces on http://198.18.42.2/ (root; HA=1, DURABLE_ACK=replica)
netlab: install-local iproute2
	$(if $(DURABLE_ACK),WIZARD_DURABLE_ACK=$(DURABLE_ACK)) $(PY) -m wizard.netlab up $(if $(filter 1 yes true,$(HA)),--ha)

## test: every test (unit, integration, end to end, chaos, network lab, browser)
test: install-dev chromium iproute2 faketime
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile -m "not lab_scripts"

## chaos: only the fault-injection scenarios: the local cluster, and the network lab (root),
## and the network-lab scripts run as a student runs them (tests/ops/test_lab_scripts.py)
chaos: install-dev iproute2
	$(PY) -m pytest tests/chaos tests/netlab tests/ops/test_lab_scripts.py

## containers-test: docker-compose.yml and the Dockerfile for real, under podman,
## on stand-in images built here (README: "The compose file, for real")
containers-test: install-dev podman
	$(PY) -m tests.containers.images
	$(PY) -m pytest tests/containers --ignore=tests/containers/test_ha_profile.py

## containers-test-ha: the compose ha profile under podman (its own stack, 3-5 min: not in CI, README)
containers-test-ha: install-dev podman
	$(PY) -m tests.containers.images
	$(PY) -m pytest tests/containers/test_ha_profile.py

## bench: throughput and latency against their ceilings and the peers
## (Dramatiq, Huey, RQ, Celery: the bench extra); not a test
bench: install-bench
	$(PY) benchmarks/run.py

## edge-figures: measure both layers of the edge; rewrites the figure tables of
## docs/edge.md (the gateway's ~1 min, the node's ~3 min)
edge-figures: install-dev
	$(PY) -m benchmarks.edge_gateway
	$(PY) -m benchmarks.edge_node

## bench-gil: threads against processes on CPU-bound work (writes the README's figures)
bench-gil: install-bench
	$(PY) benchmarks/gil.py

## lint: static checks of the Python code
lint: install-dev
	$(PY) -m ruff check wizard tests benchmarks
	$(PY) -m ruff format --check wizard tests benchmarks

# The nodes' Valkey password (docs/deployment.md): random, made once, never
# in git. `make run` makes the same file itself (mode 0600); compose reads
# it as a secret through your group (mode 0640, WIZARD_SECRETS_GID).
VALKEY_SECRET := var/secrets/valkey-wizard-password
# The passwords of the users the ha profile's replicas and sentinels log in as.
VALKEY_HA_SECRETS := var/secrets/valkey-replication-password var/secrets/valkey-sentinel-password
# The ha profile's sentinels, as the nodes and the servers ask them
# (`make up HA=1` / `make public HA=1`; docker-compose.yml).
COMPOSE_SENTINELS := sentinel-1:26379,sentinel-2:26379,sentinel-3:26379
COMPOSE_HA = $(if $(filter 1 yes true,$(HA)),VALKEY_SENTINELS=$(COMPOSE_SENTINELS) WIZARD_DURABLE_ACK=replica)
# Compose in the foreground; `make up DETACH=1` (or public) runs it detached.
COMPOSE_UP = WIZARD_SECRETS_GID=$$(id -g) $(COMPOSE_HA) docker compose --profile $(1) $(if $(COMPOSE_HA),--profile ha) up --build $(if $(DETACH),-d)

$(VALKEY_SECRET) $(VALKEY_HA_SECRETS):
	mkdir -p -m 700 $(dir $@)
	umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $@

## up: the docker compose deployment, dev profile: http://localhost/ (plain HTTP);
## HA=1 adds the ha profile (two Valkey replicas, three sentinels)
up: $(VALKEY_SECRET) $(VALKEY_HA_SECRETS)
	chmod 640 $(VALKEY_SECRET) $(VALKEY_HA_SECRETS)
	$(call COMPOSE_UP,dev)

## public: the compose public profile: Cloudflare Tunnel -> nginx :443 -> nodes
## checking Cloudflare Access; no port opened on the host (docs/deployment.md)
public: $(VALKEY_SECRET) $(VALKEY_HA_SECRETS)
	@test -s ops/cloudflared/tunnel-token || { echo "make public: save your tunnel token in ops/cloudflared/tunnel-token (docs/deployment.md)" >&2; exit 1; }
	@test -s ops/nginx/certs/origin.pem -a -s ops/nginx/certs/origin.key || { echo "make public: put the Origin CA pair in ops/nginx/certs/ (or 'make certs' for a local stand-in)" >&2; exit 1; }
	@grep -qs '^WIZARD_ACCESS_AUD=.' .env || test -n "$$WIZARD_ACCESS_AUD" || { echo "make public: set WIZARD_ACCESS_TEAM_DOMAIN and WIZARD_ACCESS_AUD in .env (docs/deployment.md)" >&2; exit 1; }
	chmod 640 $(VALKEY_SECRET) $(VALKEY_HA_SECRETS) ops/cloudflared/tunnel-token ops/nginx/certs/origin.key
	$(call COMPOSE_UP,public)

## certs: a local CA and a server certificate in ops/nginx/certs/ (not in
## git), standing in for Cloudflare's Origin CA pair in local runs and tests
certs: install-public
	$(PY) -m wizard.certs --out ops/nginx/certs

down:
	docker compose --profile dev --profile public --profile ha down

## clean: remove the virtual environment, logs, data and caches
clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
