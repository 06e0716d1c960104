# Everything a fresh machine needs: python3 and make. The venv is built on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

SOURCES := $(wildcard sentry_segment tests examples benchmarks parity noxfile.py)

.PHONY: demo test lint format fuzz bench parity matrix matrix-ci dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The package, and the dependency group `dev` of pyproject.toml (the suite's own
	# dependencies and the tools; pip reads dependency groups from 25.1).
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sentry_segment.demo

# The suite in two runs (tests/conftest.py marks which test goes where): all but the `timing`
# tests on TEST_WORKERS pytest-xdist processes, as most of the suite waits on loopback servers
# and subprocesses (worksteal: the worker that starts with the flood gives its other tests
# away); then the `timing` tests in one process, with nothing beside them. Either run may
# select nothing for given PYTEST_ARGS (pytest's exit 5), not both. TEST_WORKERS=0: one run.
TEST_WORKERS ?= 4
test: $(STAMP)
ifeq ($(TEST_WORKERS),0)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
else
	set +e; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not timing" $(PYTEST_ARGS); first=$$?; \
	$(BIN)/python -m pytest -m timing $(PYTEST_ARGS); second=$$?; \
	for status in $$first $$second; do [ $$status = 0 ] || [ $$status = 5 ] || exit $$status; done; \
	[ "$$first$$second" != 55 ] || { echo "no test selected"; exit 5; }
endif

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

# The sdist, and the wheel built from it, into a temporary folder; twine checks their metadata
# as an index would (--strict: warnings fail too), and the long description must carry the
# four Project-URLs and no relative link (hatch-fancy-pypi-readme makes them absolute).
dist: $(STAMP)
	set -e; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	$(BIN)/python -m build --outdir "$$out" . >/dev/null; \
	$(BIN)/twine check --strict "$$out"/*; \
	$(BIN)/python -c "$$CHECK_METADATA" "$$out"/*.whl

define CHECK_METADATA
import re, sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
urls = set(re.findall(r"^Project-URL: ([^,]+),", metadata, re.M))
missing = {"Homepage", "Documentation", "Changelog", "Issues"} - urls
relative = re.findall(r"\]\((?!https?://|mailto:|#)[^)]*\)", metadata)
assert not missing and not relative, f"Project-URLs missing: {missing}; relative links: {relative}"
print(f"{sys.argv[1]}: Project-URLs {sorted(urls)}, no relative link")
endef
export CHECK_METADATA

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
