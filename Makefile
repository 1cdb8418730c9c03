# Quick start: `make demo`, `make test`. Both create and use .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Developer tools come from PEP 735 dependency groups in pyproject.toml (`pip install
# --group`, pip >= 25.1: each venv upgrades its pip first), not from published extras.
INSTALL = python -m pip install --quiet --upgrade pip && \
	$(1)/python -m pip install --quiet -e '.[gen]' --group test

.PHONY: demo demo-runtime generate test test-py312 test-py313 system-deps lint typecheck docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(call INSTALL,$(BIN))
	touch $(STAMP)

# Generate typed code from idl/, serve it, call every method with both generated clients.
demo: generate
	$(BIN)/python -m mprpcgen.demo

# The original usage page's service, called with the untyped RPC and AsyncRPC clients.
demo-runtime: $(STAMP)
	$(BIN)/python -m pymprpc.demo

generate: $(STAMP)
	$(BIN)/mprpcgen idl/*.idl -o generated_examples

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict runtime/ mprpcgen/ generated_examples/

# The API reference (docs/ + docstrings) into site/; strict: a broken reference fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# The suite on 3.11 (.venv), then on 3.12 and 3.13 in their own venvs, concurrently,
# when those interpreters exist; a missing one is skipped with a note. Two xdist workers
# each: the suite mostly waits on sockets and subprocesses, so they overlap well.
test: lint typecheck system-deps
	$(BIN)/pytest -n 2
	$(MAKE) --no-print-directory -j2 --output-sync=target test-py312 test-py313

# System programs the suite runs for real (tests/system: HAProxy running the health check
# that `python -m pymprpc.healthcheck` prints). Installed with apt-get when missing and
# this runs as root; otherwise those tests skip, saying why (and fail when CI is set).
system-deps:
	@command -v haproxy >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "== installing HAProxy (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && \
			  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy >/dev/null; } || \
			echo "NOTE: HAProxy could not be installed: tests/system will skip"; \
		else \
			echo "NOTE: HAProxy is not installed (not root, or no apt-get): tests/system will skip"; \
		fi; \
	}

# An interpreter that runs: a pyenv shim may exist for a version that is not active.
find_python = $(firstword $(foreach p,$(1),$(shell $(p) -c 'import sys; print(sys.executable)' 2>/dev/null)))
PY312 ?= $(call find_python,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python))
PY313 ?= $(call find_python,python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python))

test-py312: VER := 3.12
test-py312: PY := $(PY312)
test-py312: VENVX := .venv312
test-py313: VER := 3.13
test-py313: PY := $(PY313)
test-py313: VENVX := .venv313
test-py312 test-py313:
	@if [ -z "$(PY)" ]; then \
		echo "NOTE: Python $(VER) not found: the suite was NOT run on $(VER)"; \
	else \
		set -e; \
		if [ ! -f $(VENVX)/.installed ] || [ pyproject.toml -nt $(VENVX)/.installed ]; then \
			test -x $(VENVX)/bin/python || $(PY) -m venv $(VENVX); \
			$(VENVX)/bin/$(call INSTALL,$(VENVX)/bin); \
			touch $(VENVX)/.installed; \
		fi; \
		echo "== pytest on Python $(VER) ($(PY))"; \
		$(VENVX)/bin/pytest -q -n 2; \
	fi

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[gen]' --group test --group bench
	touch $(BENCH_STAMP)

# Benchmarks against gRPC aio and a raw asyncio floor; prints the table of ratios.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --runs 8 --write-readme

clean:
	rm -rf $(VENV) .venv312 .venv313 site .mypy_cache .ruff_cache .pytest_cache .hypothesis
