# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
COVERAGE_MIN ?= 95

.PHONY: demo test lint typecheck bench chaos diagrams notebooks install dev system browser clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python system
	$(BIN)/pip install -q -e .

dev: $(BIN)/python system browser
	$(BIN)/pip install -q -e '.[dev]'

# graphviz's `dot` renders diagrams; install it when missing (apt-get as root).
system:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; \
	  else echo "graphviz's dot is missing: install it (e.g. sudo apt-get install graphviz)"; fi; }

# The console's browser tests drive Debian's Chromium through Playwright (never a browser
# that `playwright install` downloads); install it when missing (apt-get as root).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "Chromium is missing: install it (e.g. sudo apt-get install chromium)"; fi; }

demo: install
	$(BIN)/statesaga demo
	$(BIN)/statesaga demo --fail-at charge_payment

lint: dev
	$(BIN)/ruff check .
	$(BIN)/mypy statesaga

test: lint
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -q $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine -q 2>/dev/null || true
	$(BIN)/python -m coverage report --fail-under=$(COVERAGE_MIN)

bench: dev
	$(BIN)/python -m benchmarks

# Worker processes killed, stalled past their lease, cut off from PostgreSQL, one clock
# ahead, hostile values: 1,000 sagas on SQLite and on PostgreSQL, invariants checked
# (tests/chaos/). About 10 minutes; `make test` runs a short round (tests/test_chaos.py).
chaos: dev
	PYTHONPATH=tests:. $(BIN)/python -m chaos $(CHAOS_ARGS)

diagrams: dev
	$(BIN)/python -m statesaga.diagrams diagrams

# The notebooks are stored executed (readers see the drawings); run them again and store.
notebooks: dev
	$(BIN)/python tests/test_notebooks.py

clean:
	rm -rf $(VENV) build *.egg-info .coverage .pytest_cache .mypy_cache .ruff_cache
