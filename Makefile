# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs what it needs (re-installs only when pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
# pytest-xdist workers; each test file runs whole on one worker (--dist loadfile), so a file's
# session fixtures are built once per worker. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile)

.PHONY: demo test test-fast lint typecheck install install-dev bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

# torchattacks pins requests~=2.25.1, an old pin that would downgrade requests: install it without its
# dependencies (it needs only torch, scipy and tqdm, which are there).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps 'torchattacks==3.5.1'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/classwise demo $(DEMO_ARGS)

test: install-dev
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install-dev
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Speed and strength against torchattacks, ART and foolbox (numbers for humans, not a test).
bench: install-dev
	$(PIP) install -q -e '.[dev,bench]'
	$(PY) benchmarks/bench_attacks.py $(BENCH_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks

# mypy on src (configuration in pyproject.toml); py.typed ships, so the annotations are part of the API.
typecheck: install-dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
