# The two commands a new user runs:  make demo  (the lab)  and  make test  (every tier).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-16)
LINT_STAMP := $(VENV)/.linters-$(shell sha256sum requirements-lint.lock | cut -c1-16)
PYTEST := $(PY) -m pytest

.PHONY: help setup host-packages venv lint unit integration lab test demo bench-failover bench-converge bench-heal bench-storm lab-up lab-down clean

help:
	@echo "make setup        install host packages (root, Debian 12) and the Python venv"
	@echo "make test         every test tier (runs make setup first)"
	@echo "make lint         ruff (Python), yamllint (YAML), salt-lint (SLS), with the repo's configs"
	@echo "make unit         the fast tier: render and validate states in-process"
	@echo "make integration  a real salt-master and minions"
	@echo "make demo         the whole cluster in the one-machine lab (see README)"
	@echo "make bench-failover  failover figures in the lab (about 20 min), bench/results/"
	@echo "make bench-converge  orch.cluster times: first run, re-run, 1/3/6 workers (about 40 min)"
	@echo "make bench-heal      time from fault to healthy again, per scenario (about 20 min)"
	@echo "make bench-storm     1,000 events in 60 s with a real fault inside (about 10 min)"

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

unit: venv
	$(PYTEST) tests/unit

integration: venv
	$(PYTEST) tests/integration

lab: venv
	$(PYTEST) tests/lab

# One pytest run over every tier: one summary line, one exit status.
test: setup
	$(PYTEST) tests

# The user's main job in the lab: the bridge and the salt-master, then one command builds
# the cluster (machines through salt-cloud, load balancers, kubeadm), then its status.
demo: lab-up
	lab/lab salt-run cluster.status format=table

lab-up: setup
	lab/lab up
	lab/lab salt-run state.orch orch.cluster --state-output=terse

lab-down:
	lab/lab down

# Benchmarks print and store figures; they are not tests.
bench-failover: lab-up
	$(PY) bench/failover.py
	$(PY) bench/vrrp_soak.py

bench-converge: setup
	$(PY) bench/converge.py

bench-heal: lab-up
	$(PY) bench/heal.py

bench-storm: lab-up
	$(PY) bench/storm.py

clean:
	rm -rf $(VENV) .pytest_cache
