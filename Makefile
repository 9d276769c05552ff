# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Each distribution (core, adapters, simulator) with its own tests, plus bench and flows.
LINT_PATHS := src tests adapters/src adapters/tests simulator/src simulator/tests bench flows
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test lint typecheck unit browser terminal bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml adapters/pyproject.toml simulator/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		-e . -e ./adapters -e ./simulator
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cutbook validate runbooks/customs-reorg-2025.yaml
	$(VENV)/bin/cutbook plan runbooks/customs-reorg-2025.yaml
	$(VENV)/bin/cutbook demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The browser test (tests/test_browser.py) opens the HTML pages in headless Chromium;
# CUTBOOK_REQUIRE_BROWSER makes it fail, not skip, when Chromium is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for tests/test_browser.py"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing and installing it needs root:" \
			"run 'sudo apt-get install chromium', then make test again" >&2; \
		exit 1; \
	fi

# The live view's terminal test (tests/test_live_view_tmux.py) draws a rehearsal in tmux.
terminal:
	@command -v tmux >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing tmux for tests/test_live_view_tmux.py"; \
		apt-get update -qq && apt-get install -y -qq tmux >/dev/null; \
	else \
		echo "tmux is missing and installing it needs root:" \
			"run 'sudo apt-get install tmux', then make test again" >&2; \
		exit 1; \
	fi

unit: $(STAMP) browser terminal
	CUTBOOK_REQUIRE_BROWSER=1 CUTBOOK_REQUIRE_TMUX=1 $(VENV)/bin/pytest -q -n 2

test: lint typecheck unit

# make bench [RUNS=5] [QUICK=1]: every bench/bench_*.py, then docs/performance.md.
bench: $(STAMP)
	$(PY) bench/run.py --runs $(or $(RUNS),3) $(if $(filter-out 0,$(QUICK)),--quick)

# Re-resolve the lock from pyproject (needs the package index); commit the result.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e . -e ./adapters -e './simulator[test]' -e '.[dev]'
	.lockenv/bin/pip freeze --all --exclude-editable | grep -v '^-e' | sort -f > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
