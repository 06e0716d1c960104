# Everything a fresh machine needs: python3 and make. The venv is built on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

SOURCES := $(wildcard sentry_segment tests examples benchmarks parity noxfile.py)

.PHONY: demo test lint format fuzz bench parity matrix matrix-ci clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sentry_segment.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Property tests of everything that takes untrusted input, with many examples.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q \
		tests/test_payload.py tests/test_delivery.py tests/test_config.py tests/test_routing.py \
		tests/test_scrub.py \
		-k "any_"

# Benchmarks print one Markdown table (see the README); BENCH_ARGS=--quick for a smoke run.
bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python run.py $(BENCH_ARGS)

# sentry-python's own tests, from the sdist of the installed sentry-sdk (SENTRY_SDK=X for
# another), as shipped and with SegmentIntegration injected into every client; prints every
# test whose outcome differs. Caches the sdist and its venv in .parity/ (see parity/run.py).
SENTRY_SDK ?=
parity: $(STAMP)
	$(BIN)/python parity/run.py --python $(PYTHON) $(if $(SENTRY_SDK),--sentry-sdk $(SENTRY_SDK)) $(PARITY_ARGS)

# nox looks for python3.9 ... python3.13 on PATH. pyenv's own interpreters go first: its shim
# for a version that is not selected fails where nox should skip it. Missing ones are skipped.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
space := $(empty) $(empty)
PYENV_BINS := $(subst $(space),:,$(strip $(wildcard $(PYENV_ROOT)/versions/3.*/bin)))
MATRIX_PATH := $(if $(PYENV_BINS),$(PYENV_BINS):)$$PATH

# The suite on every installed Python 3.9-3.13 (newest releases the pins admit), at the lowest
# declared dependencies, and on sentry-sdk's 3.0 beta; NOX_ARGS="-s lowest" for one session.
matrix: $(STAMP)
	PATH="$(MATRIX_PATH)" $(BIN)/nox $(NOX_ARGS)

# What CI runs of it: lowest on 3.9, newest on 3.13, sentry-sdk 3.0 beta on 3.11. In CI a
# missing interpreter fails the run instead of being skipped.
CI_SESSIONS := lowest tests-3.13 sentry3
matrix-ci: $(STAMP)
	PATH="$(MATRIX_PATH)" $(BIN)/nox --error-on-missing-interpreters -s $(CI_SESSIONS) $(NOX_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/mypy parity

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) .nox .parity .pytest_cache .mypy_cache .ruff_cache .hypothesis
