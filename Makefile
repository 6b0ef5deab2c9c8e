# Two commands on a fresh machine: `make run` and `make test`. Both create .venv on demand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: run demo test lint bench bench-growth soak profile clean venv prometheus-bin

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

venv: $(STAMP)

run: $(VENV)/.installed
	$(BIN)/llm-cache-proxy serve

demo: $(VENV)/.installed
	$(BIN)/llm-cache-proxy demo

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench
	$(BIN)/mypy --strict proxy

# The live dashboard test runs a real Prometheus server; install it when missing (Debian/Ubuntu).
prometheus-bin:
	command -v prometheus >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)

test: lint prometheus-bin
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The matrix with its in-run ratios (< 10 min). The other modes each write their own section of
# bench/RESULTS.md: cost growth (~10 min), a 10-minute soak, py-spy profiles of hit and miss.
bench: $(STAMP)
	$(BIN)/python -m bench

bench-growth: $(STAMP)
	$(BIN)/python -m bench growth

soak: $(STAMP)
	$(BIN)/python -m bench soak --minutes 10

$(VENV)/.installed-bench: pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

profile: $(VENV)/.installed-bench
	$(BIN)/python -m bench profile

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
