# Everything a fresh machine needs: python3 and make. The venv is built on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

SOURCES := $(wildcard sentry_segment tests examples benchmarks parity)

.PHONY: demo test lint format fuzz bench parity clean

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

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/mypy parity

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .parity
