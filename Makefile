# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test lint typecheck unit bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml adapters/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . -e ./adapters
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cutbook validate runbooks/customs-reorg-2025.yaml
	$(VENV)/bin/cutbook plan runbooks/customs-reorg-2025.yaml
	$(VENV)/bin/cutbook demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src adapters/src tests bench flows
	$(VENV)/bin/ruff format --check src adapters/src tests bench flows

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/run.py

# Re-resolve the lock from pyproject (needs the package index); commit the result.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -e . -e ./adapters -e '.[dev]'
	.lockenv/bin/pip freeze --all --exclude-editable | grep -v '^-e' | sort -f > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
