# `make test` and `make run` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-fast lint typecheck run install clean-venv

$(STAMP): pyproject.toml core/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

# The tests without the slow end-to-end ones and the browser test (pytest markers in pyproject.toml).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

run: $(STAMP)
	$(BIN)/mtu app

clean-venv:
	rm -rf $(VENV)
