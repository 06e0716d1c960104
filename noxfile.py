"""The compatibility matrix: the test suite per Python, at the lowest declared dependencies, and
on sentry-sdk's 3.0 beta. `make matrix` runs every session, `make matrix-ci` the three that CI runs.

Environments are built by uv, which reads neither pip's configuration nor its constraints file,
and never downloads an interpreter here: a Python that is not installed is skipped.
"""

from __future__ import annotations

import json
import os

import nox
from packaging.requirements import Requirement
from packaging.version import Version

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = False

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
SENTRY_SDK_3 = "sentry-sdk==3.0.0b2"
# uv uses an interpreter that is installed and never fetches one, so a missing Python is
# skipped. It compiles what it installs: pip does, uv does not by default, and with
# PYTHONDONTWRITEBYTECODE set (as here) every subprocess the suite starts would compile its
# imports again (sentry-sdk 3's init took 2.2 s instead of 0.6 s, enough to fail the fleet test).
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

PROJECT = nox.project.load_toml("pyproject.toml")["project"]
DEPENDENCIES = [Requirement(text) for text in PROJECT["dependencies"]]

# The versions each session reports, the library's own dependencies first.
REPORTED = [r.name for r in DEPENDENCIES] + ["requests", "urllib3", "pytest"]
REPORT_VERSIONS = """
import json, platform, sys
from importlib.metadata import PackageNotFoundError, version
def installed(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), **{n: installed(n) for n in sys.argv[1:]}}))
"""


def floor(requirement: Requirement) -> Version:
    """The lowest version a requirement admits, from its >= (or ==) bound."""
    for specifier in requirement.specifier:
        if specifier.operator in (">=", "=="):
            return Version(specifier.version)
    raise ValueError(f"{requirement} declares no lower bound")


def versions(session: nox.Session) -> dict[str, str]:
    output = session.run("python", "-c", REPORT_VERSIONS, *REPORTED, silent=True)
    found: dict[str, str] = json.loads(str(output).strip().splitlines()[-1])
    session.log("versions under test: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    return found


# Each session runs what can differ across versions: the whole suite but the `load` tests (the
# flood), which `make test` runs once, on the newest releases; what they check of the
# dependencies (a full queue drops and counts) runs here in smaller tests (test_delivery.py).
# As in `make test`, the `timing` tests run after the rest, alone (tests/conftest.py lists both).
SELECTED = "not load"
WORKERS = os.environ.get("TEST_WORKERS", "4")


def run_tests(session: nox.Session) -> None:
    pytest = ["python", "-m", "pytest", "-p", "no:cacheprovider"]
    if WORKERS == "0":
        session.run(*pytest, "-m", SELECTED, *session.posargs)
        return
    xdist = ["-n", WORKERS, "--dist", "worksteal"]
    either = {"success_codes": [0, 5]}  # as in `make test`: one of the runs may select nothing
    session.run(*pytest, *xdist, "-m", f"{SELECTED} and not timing", *session.posargs, **either)
    session.run(*pytest, "-m", f"{SELECTED} and timing", *session.posargs, **either)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite with the newest releases the pins admit (sentry-sdk: the newest 2.x)."""
    session.install("-e", ".", "--group", "tests")
    found = versions(session)
    if Version(found["sentry-sdk"]).is_prerelease:
        session.error(f"a pre-release sentry-sdk {found['sentry-sdk']} was resolved")
    run_tests(session)


@nox.session(python="3.9")
def lowest(session: nox.Session) -> None:
    """The suite with every direct dependency of the library at its declared floor."""
    session.install("--resolution", "lowest-direct", "-e", ".")
    # The test tools after it, at their newest: what is installed already satisfies the library.
    session.install("-e", ".", "--group", "tests")
    found = versions(session)
    wrong = {r.name: found[r.name] for r in DEPENDENCIES if Version(found[r.name]) != floor(r)}
    if wrong:
        session.error(f"not at their declared floors: {wrong}")
    run_tests(session)


@nox.session(python="3.11")
def sentry3(session: nox.Session) -> None:
    """The suite on sentry-sdk's 3.0 beta, installed over the pin's preference for releases."""
    session.install("-e", ".", "--group", "tests", SENTRY_SDK_3)
    found = versions(session)
    if found["sentry-sdk"] != SENTRY_SDK_3.split("==")[1]:
        session.error(f"wanted {SENTRY_SDK_3}, resolved {found['sentry-sdk']}")
    run_tests(session)
