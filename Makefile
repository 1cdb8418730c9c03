# Quick start: `make demo`, `make test`. Both create and use .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-runtime generate test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[gen,test]'
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

test: lint typecheck
	$(BIN)/pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# Benchmarks against gRPC aio and a raw asyncio floor; prints the table of ratios.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --runs 5 --write-readme

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
