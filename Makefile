# Two commands on a fresh machine: `make run` and `make test`. Both create .venv on demand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: run demo keys test lint bench bench-growth soak profile clean venv prometheus-bin chromium-bin screenshots

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

# The keys CLI without activating the venv: make keys ARGS='create --alias team-a --budget 5'
keys: $(VENV)/.installed
	$(BIN)/llm-cache-proxy keys $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench
	$(BIN)/mypy --strict proxy
	$(BIN)/lint-imports --no-cache

# The tests run a real Prometheus (dashboards) and promtool (alert rules); Debian's `prometheus`
# package has both. PROXY_TEST_PROMETHEUS / PROXY_TEST_PROMTOOL point the tests at other binaries.
PROMETHEUS_INSTALL := apt-get install -y -qq --no-install-recommends prometheus
prometheus-bin:
	@prom="$${PROXY_TEST_PROMETHEUS:-$$(command -v prometheus)}"; \
	tool="$${PROXY_TEST_PROMTOOL:-$$(command -v promtool)}"; \
	if [ -x "$$prom" ] && [ -x "$$tool" ]; then exit 0; fi; \
	if [ -n "$${PROXY_TEST_PROMETHEUS}$${PROXY_TEST_PROMTOOL}" ]; then \
		echo "PROXY_TEST_PROMETHEUS='$$prom' / PROXY_TEST_PROMTOOL='$$tool': not executable files" >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make test needs prometheus and promtool, and installing them needs root. Run:" >&2; \
		echo "    sudo apt-get update && sudo $(PROMETHEUS_INSTALL)" >&2; \
		echo "or name binaries you have: PROXY_TEST_PROMETHEUS=/path/prometheus PROXY_TEST_PROMTOOL=/path/promtool make test" >&2; \
		exit 1; \
	fi; \
	echo "installing Debian's prometheus (for prometheus and promtool)"; \
	apt-get update -qq && $(PROMETHEUS_INSTALL)

# The console's browser tests drive Debian's chromium with playwright (the test extra);
# `playwright install` downloads browsers and cannot here. PROXY_TEST_CHROMIUM names another binary.
CHROMIUM_INSTALL := apt-get install -y -qq --no-install-recommends chromium
chromium-bin:
	@browser="$${PROXY_TEST_CHROMIUM:-$$(command -v chromium)}"; \
	if [ -x "$$browser" ]; then exit 0; fi; \
	if [ -n "$${PROXY_TEST_CHROMIUM}" ]; then \
		echo "PROXY_TEST_CHROMIUM='$$browser': not an executable file" >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make test needs chromium for the console's browser tests, and installing it needs root. Run:" >&2; \
		echo "    sudo apt-get update && sudo $(CHROMIUM_INSTALL)" >&2; \
		echo "or name a binary you have: PROXY_TEST_CHROMIUM=/path/chromium make test" >&2; \
		exit 1; \
	fi; \
	echo "installing Debian's chromium (the console's browser tests)"; \
	apt-get update -qq && $(CHROMIUM_INSTALL)

test: lint prometheus-bin chromium-bin
	$(BIN)/python -m pytest -q -p no:cacheprovider

# docs/console-images.png (the README's picture of the console), taken by the browser test.
screenshots: $(STAMP) chromium-bin
	PROXY_SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_console_browser.py -k images_view

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
