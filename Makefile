# Everything a fresh machine needs: python3 and make. The venv is built on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test lint format fuzz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sentry_segment.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sentry_segment tests examples benchmarks
	$(BIN)/ruff format --check sentry_segment tests examples benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format sentry_segment tests examples benchmarks
	$(BIN)/ruff check --fix sentry_segment tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
