# The two commands a new user runs:  make demo  (the lab)  and  make test  (every tier).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-16)
LINT_STAMP := $(VENV)/.linters-$(shell sha256sum requirements-lint.lock | cut -c1-16)
PYTEST := $(PY) -m pytest

.PHONY: help setup host-packages venv lint test test-unit test-integration test-lab demo lab-up lab-build lab-down \
	bench-failover bench-converge bench-heal bench-storm bench-day2 clean

help:
	@echo "make demo             the one-machine lab: starts it, builds the cluster (orch.cluster), shows its status"
	@echo "make test             every test tier in one run (runs make setup first); CI runs make lint, then this"
	@echo "make test-unit        the fast tier: states and templates rendered and validated in-process"
	@echo "make test-integration a real salt-master and minions on loopback"
	@echo "make test-lab         the lab tier alone (root; builds and tears down its own lab)"
	@echo "make lint             ruff (Python), yamllint (YAML), salt-lint (SLS), with the repo's configs"
	@echo "make setup            host packages (root, Debian 12) and the Python venv"
	@echo "make lab-up           only start the lab: its bridge and salt-master (lab/lab up)"
	@echo "make lab-build        lab-up, then salt-run build.cluster (orch.cluster, one line per step, then the status)"
	@echo "make lab-down         remove the lab: machines, namespaces, the master"
	@echo "make bench-failover   failover figures in the lab (about 20 min), bench/results/"
	@echo "make bench-converge   orch.cluster times: first run, re-run, 1/3/6 workers (about 40 min)"
	@echo "make bench-heal       time from fault to healthy again, per scenario (about 30 min)"
	@echo "make bench-storm      1,000 events with a real fault inside (about 5 min on a built lab)"
	@echo "make bench-day2       day-2 operations: duration and failed requests through the VIP (snapshot, remove, add, restore, certs, upgrade)"
	@echo "make clean            remove the venv and pytest's cache"

setup: host-packages venv

host-packages:
	@lab/host-setup

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-* && touch $@

# Linters, pinned apart from requirements.lock (which the lab image reads).
$(LINT_STAMP): requirements-lint.lock $(VENV_STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-lint.lock
	@rm -f $(VENV)/.linters-* && touch $@

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/yamllint -s . cloud/*.conf
	$(VENV)/bin/salt-lint $$(find salt orch reactor pillar -name '*.sls' | sort)

test-unit: venv
	$(PYTEST) tests/unit

test-integration: venv
	$(PYTEST) tests/integration

test-lab: venv
	$(PYTEST) tests/lab

# One pytest run over every tier: one summary line, one exit status.
test: setup
	$(PYTEST) tests

# The user's main job in the lab: the bridge and the salt-master, then one command builds
# the cluster (machines through salt-cloud, load balancers, kubeadm), then its status.
demo: lab-build
	@echo "next: lab/lab salt-run cluster.status (exit 0 only when healthy), lab/lab salt-run cluster.history,"
	@echo "      Prometheus at http://198.51.100.5:9090 in the lab's namespace:"
	@echo "      lab/lab prometheus 'haproxy_backend_active_servers{proxy=\"kube_apiserver_nodes\"}', docs/load-balancers.md"

lab-up: setup
	lab/lab up

lab-build: lab-up
	lab/lab salt-run build.cluster

lab-down:
	lab/lab down

# Benchmarks print and store figures; they are not tests.
bench-failover: lab-build
	$(PY) bench/failover.py
	$(PY) bench/vrrp_soak.py

bench-converge: setup
	$(PY) bench/converge.py

bench-heal: lab-build
	$(PY) bench/heal.py

bench-storm: lab-build
	$(PY) bench/storm.py

bench-day2: lab-build
	$(PY) bench/day2.py

clean:
	rm -rf $(VENV) .pytest_cache
