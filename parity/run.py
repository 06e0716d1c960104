"""`make parity`: sentry-python's own tests, as shipped and with SegmentIntegration injected.

    .venv/bin/python parity/run.py [--sentry-sdk X] [--python PY] [--serial] [PATH ...]

1. Downloads the sdist of sentry-sdk X (default: the version installed with this interpreter,
   the project's dev venv) with ``pip download --no-deps --no-binary :all:`` and extracts it
   under .parity/sdist/ (gitignored, kept: the next run skips this).
2. Builds .parity/venv/sentry-sdk-<X>-py<M.N>/ (gitignored, reused while its stamp matches):
   sentry-sdk X, what its tests need (TEST_REQUIREMENTS), and this project with
   ``pip install -e``, so its own pytest plugin (entry point pytest11) is loaded in both
   passes as in a user's suite. Where X is outside the project's sentry-sdk pin (3.x betas),
   the project goes in with ``--no-deps`` and its other requirements are installed by name.
   Then byte-compiles the sdist in place (see precompile()).
3. Runs PATHS of the sdist twice, concurrently (one process each, 2 cores), from the sdist's
   root, with the sdist's addopts less coverage, without PYTEST_ADDOPTS, PYTHONPATH or any
   SENTRY_* variable: as shipped, and with ``-p parity_inject`` (parity_inject.py), which
   gives every client a real SegmentIntegration posting to a loopback collector.
4. Compares the outcome of every test id (JUnit XML of each pass) and prints every test whose
   outcome differs, with the first lines of its failure. Exits 1 if any differs but the
   ACCEPTED ones, if the injection did not reach every client or the canary did not arrive;
   2 if a pass did not complete.

Results (logs, XML, report.txt) are left in .parity/results/<X>/, replaced on each run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from packaging.requirements import Requirement
from packaging.version import Version

HERE = Path(__file__).resolve().parent
WORKTREE = HERE.parent
PROJECT = "sentry-segment"

DEFAULT_PATHS = (
    "tests/test_basics.py",
    "tests/test_client.py",
    "tests/test_transport.py",
    "tests/integrations/logging",
    "tests/integrations/threading",
    "tests/integrations/stdlib",
    "tests/integrations/flask",
)

# What those tests import or need, from sentry-python's requirements-testing.txt (which the
# sdist does not ship) less coverage, pytest-watch and docker, plus the tox env extras of the
# suites run here (asyncio, flask). The sdist's own addopts are replaced (no --cov), so
# pytest-cov is not needed.
TEST_REQUIREMENTS = (
    # pytest 9.2's TestReport carries a NodeId that pytest-forked (1.7.5) cannot marshal: every
    # @pytest.mark.forked test then fails as "running the test EXITED with status 3".
    "pytest<9.2",
    "pytest-forked",
    "pytest-localserver",
    "pytest-asyncio",
    # Not sentry-python's: bounds every test (signal method: a hung test fails, the pass goes on).
    "pytest-timeout",
    "jsonschema",
    "executing",
    "asttokens",
    "responses",
    "pysocks",
    "socksio",
    "httpcore[http2,asyncio]",
    "httpx",
    "Brotli",
    "setuptools",
    "flask",
    "flask-login",
)

# Differences that are the integration's purpose, not a change to what Sentry receives.
# Each is named by its full test id; nothing else is accepted.
_TEST_INTEGRATIONS = "tests/test_basics.py::test_integrations"
_EXACT_SET = (
    "asserts the exact set of integrations on the client; SegmentIntegration is one more, by design"
)
ACCEPTED: dict[str, str] = {
    f"{_TEST_INTEGRATIONS}[provided_integrations0-False-None-expected_integrations0]": _EXACT_SET,
    (
        f"{_TEST_INTEGRATIONS}"
        "[provided_integrations1-False-disabled_integrations1-expected_integrations1]"
    ): _EXACT_SET,
    f"{_TEST_INTEGRATIONS}[provided_integrations2-False-None-expected_integrations2]": _EXACT_SET,
    f"{_TEST_INTEGRATIONS}[provided_integrations3-True-None-expected_integrations3]": _EXACT_SET,
    (
        f"{_TEST_INTEGRATIONS}"
        "[provided_integrations4-True-disabled_integrations4-expected_integrations4]"
    ): _EXACT_SET,
}

PIP_TIMEOUT = 900.0
PASS_TIMEOUT = 1200.0
TEST_TIMEOUT = 120
# Variables that would change what either pass runs, what sentry-sdk does (SENTRY_DSN, ...) or
# how the integration is configured (SENTRY_SEGMENT_*): neither pass sees them.
_DROPPED_ENV = re.compile(r"^(PYTEST_ADDOPTS|PYTEST_PLUGINS|PYTHONPATH|SENTRY_.*)$")


def log(message: str) -> None:
    print(f"parity: {message}", flush=True)


def run(command: list[str], timeout: float, **kwargs: Any) -> None:
    """Run a setup command with a deadline; its output goes to ours; fail loudly."""
    log("$ " + " ".join(command))
    subprocess.run(command, check=True, timeout=timeout, **kwargs)


# ---------------------------------------------------------------------------------------------
# sdist and venv


def fetch_sdist(version: str, cache: Path) -> Path:
    """The extracted sdist of sentry-sdk==version, downloaded once into the cache."""
    target = cache / "sdist" / f"sentry_sdk-{version}"
    if (target / "tests" / "conftest.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parity-sdist-") as tmp:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"sentry-sdk=={version}",
                "-d",
                tmp,
            ],
            timeout=PIP_TIMEOUT,
        )
        archives = sorted(Path(tmp).glob("sentry*sdk-*.tar.gz"))
        if len(archives) != 1:
            raise SystemExit(f"parity: expected one sdist archive, got {archives}")
        extracted = Path(tmp) / "extracted"
        _extract(archives[0], extracted)
        roots = [p for p in extracted.iterdir() if p.is_dir()]
        if len(roots) != 1 or not (roots[0] / "tests" / "conftest.py").is_file():
            raise SystemExit(f"parity: {archives[0].name} has no tests/conftest.py")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(roots[0]), str(target))
    return target


def _extract(archive: Path, into: Path) -> None:
    into.mkdir()
    with tarfile.open(archive) as tar:
        base = into.resolve()
        for member in tar.getmembers():
            destination = (into / member.name).resolve()
            if base not in destination.parents or not (member.isfile() or member.isdir()):
                raise SystemExit(f"parity: refusing sdist member {member.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # every member was checked above
            tar.extractall(into)


def project_requirements() -> list[Requirement]:
    """This project's runtime requirements and its ``testing`` extra, from its metadata."""
    requirements = []
    for text in importlib.metadata.requires(PROJECT) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or marker.evaluate({"extra": "testing"}):
            requirement.marker = None
            requirements.append(requirement)
    return requirements


def install_plan(version: str) -> tuple[list[str], bool]:
    """What to pip install into the harness venv, and whether the project goes in --no-deps."""
    wanted = [f"sentry-sdk=={version}", *TEST_REQUIREMENTS]
    ours = project_requirements()
    pin = next((r for r in ours if r.name == "sentry-sdk"), None)
    if pin is None or pin.specifier.contains(Version(version), prereleases=True):
        return [*wanted, "-e", f"{WORKTREE}[testing]"], False
    # Outside the project's pin: everything it needs but sentry-sdk, then the project alone.
    return [*wanted, *(str(r) for r in ours if r.name != "sentry-sdk")], True


_VERSIONS = (
    "import importlib.metadata as m; print(m.version('sentry-sdk'), m.version('sentry-segment'))"
)


def _own_version() -> str:
    return importlib.metadata.version(PROJECT)


def harness_venv(version: str, python: str, cache: Path) -> Path:
    """The cached venv for this sentry-sdk version; rebuilt only when its stamp changes."""
    python_version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    packages, no_deps = install_plan(version)
    pyproject = (WORKTREE / "pyproject.toml").read_bytes()
    stamp_text = json.dumps(
        {
            "sentry-sdk": version,
            "python": python_version,
            "packages": packages,
            "no_deps": no_deps,
            "pyproject": hashlib.sha256(pyproject).hexdigest(),
            PROJECT: _own_version(),
        },
        indent=2,
    )
    minor = ".".join(python_version.split(".")[:2])
    venv = cache / "venv" / f"sentry-sdk-{version}-py{minor}"
    stamp = venv / "parity-stamp.json"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        log(f"reusing {venv}")
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", str(venv)], timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, *packages], timeout=PIP_TIMEOUT)
    if no_deps:
        run([*pip, "--no-deps", "-e", str(WORKTREE)], timeout=PIP_TIMEOUT)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _VERSIONS],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    if installed != [version, _own_version()]:
        raise SystemExit(
            f"parity: {venv} has sentry-sdk and {PROJECT} {installed}, "
            f"not {[version, _own_version()]}"
        )
    stamp.write_text(stamp_text)
    return venv


def precompile(venv: Path, sdist: Path) -> None:
    """Byte-compile the sdist's sentry_sdk and tests once, into the cache.

    With PYTHONDONTWRITEBYTECODE set (as on this machine) nothing else writes them, and every
    client with default integrations re-imports, so recompiles from source, each integration
    whose library is missing: that alone was two thirds of test_client.py's CPU time. Reading
    a .pyc changes nothing a test can see; neither pass's environment is changed for it.
    """
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", "sentry_sdk", "tests"],
        cwd=sdist,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )


# ---------------------------------------------------------------------------------------------
# the two passes


@dataclass
class Pass:
    name: str
    inject: bool
    results: Path
    process: Optional[subprocess.Popen[bytes]] = None
    returncode: Optional[int] = None
    seconds: float = 0.0
    timed_out: bool = False
    _log: Optional[IO[bytes]] = field(default=None, repr=False)

    @property
    def junit(self) -> Path:
        return self.results / f"{self.name}.xml"

    @property
    def log_path(self) -> Path:
        return self.results / f"{self.name}.log"

    @property
    def stats(self) -> Path:
        return self.results / f"{self.name}-stats.json"

    def command(self, venv: Path, paths: list[str]) -> list[str]:
        command = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider"]
        if self.inject:
            command += ["-p", "parity_inject"]
        return [
            *command,
            # The sdist's addopts less coverage and verbosity: -rfEs -s --tb=short kept.
            "-o",
            "addopts=",
            "-rfEs",
            "-s",
            "--tb=short",
            f"--timeout={TEST_TIMEOUT}",
            f"--junitxml={self.junit}",
            "-o",
            "junit_family=xunit1",
            "-o",
            "junit_logging=no",
            *paths,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _DROPPED_ENV.match(k)}
        if self.inject:
            env["PYTHONPATH"] = str(HERE)
            env["PARITY_STATS_FILE"] = str(self.stats)
            env["PARITY_COLLECTOR_LOG"] = str(self.results / "collector.log")
        return env

    def start(self, venv: Path, sdist: Path, paths: list[str]) -> None:
        command = self.command(venv, paths)
        log(f"{self.name}: " + " ".join(command[1:]))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.seconds = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=sdist,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: on timeout, end it and its children
        )

    def kill(self) -> None:
        """End this pass's process group (pytest, its collector, forked tests) if still running."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def wait(self, deadline: float) -> None:
        assert self.process is not None
        try:
            self.returncode = self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            self.returncode = self.process.returncode
        self.seconds = time.monotonic() - self.seconds
        if self._log is not None:
            self._log.close()


# ---------------------------------------------------------------------------------------------
# comparing


@dataclass(frozen=True)
class Outcome:
    outcome: str
    detail: tuple[str, ...] = ()


def node_id(case: ET.Element) -> str:
    """pytest's node id from an xunit1 testcase: file, then classes, then the name."""
    name = case.get("name", "")
    classname = case.get("classname", "")
    file = case.get("file")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    classes = classname[len(module) :].strip(".") if classname.startswith(module) else ""
    return "::".join(part for part in (file, *classes.split("."), name) if part)


def first_lines(element: ET.Element, limit: int = 4) -> tuple[str, ...]:
    """The message of a failure, error or skip, then its first 'E ' lines."""
    lines = []
    message = (element.get("message") or "").strip()
    if message:
        lines.append(message.splitlines()[0][:300])
    for line in (element.text or "").splitlines():
        if line.startswith("E ") and len(lines) < limit:
            text = line[1:].strip()
            if text and text not in lines[0:1]:
                lines.append(text[:300])
    return tuple(lines)


def outcomes(junit: Path) -> dict[str, Outcome]:
    found: dict[str, Outcome] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds: list[str] = []
        detail: list[str] = []
        for child in case:
            if child.tag in ("failure", "error"):
                kinds.append("failed" if child.tag == "failure" else "error")
                detail.extend(first_lines(child))
            elif child.tag == "skipped":
                kinds.append("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
                detail.extend(first_lines(child, limit=1))
        outcome = "+".join(sorted(set(kinds))) or "passed"
        key = node_id(case)
        if key in found:  # the same id twice (a teardown error, a duplicate): keep both
            previous = found[key]
            outcome = "+".join(sorted({*previous.outcome.split("+"), *outcome.split("+")}))
            detail = [*previous.detail, *detail]
        found[key] = Outcome(outcome, tuple(detail))
    return found


def tally(results: dict[str, Outcome]) -> str:
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def report(shipped: Pass, injected: Pass, out: IO[str]) -> int:
    """Print the comparison; return the exit status it calls for."""

    def say(line: str = "") -> None:
        print(line, file=out)

    broken = [p for p in (shipped, injected) if p.timed_out or not p.junit.is_file()]
    broken += [p for p in (shipped, injected) if p not in broken and p.returncode not in (0, 1)]
    for each in broken:
        tail = each.log_path.read_text(errors="replace").splitlines()[-15:]
        say(f"{each.name} pass did not complete: exit {each.returncode}, {each.seconds:.0f} s")
        say("timed out" if each.timed_out else "")
        for line in tail:
            say(f"    {line}")
    if broken:
        return 2

    before, after = outcomes(shipped.junit), outcomes(injected.junit)
    say(f"shipped:  {len(before)} tests: {tally(before)} ({shipped.seconds:.0f} s)")
    say(f"injected: {len(after)} tests: {tally(after)} ({injected.seconds:.0f} s)")

    missing = Outcome("absent")
    differing = sorted(
        key
        for key in before.keys() | after.keys()
        if before.get(key, missing).outcome != after.get(key, missing).outcome
    )
    unexpected = [key for key in differing if key not in ACCEPTED]
    say()
    say(f"{len(differing)} differ, {len(differing) - len(unexpected)} of them accepted:")
    for key in differing:
        old, new = before.get(key, missing), after.get(key, missing)
        tag = f"  [accepted: {ACCEPTED[key]}]" if key in ACCEPTED else ""
        say(f"  {key}: {old.outcome} -> {new.outcome}{tag}")
        for side, result in (("shipped", old), ("injected", new)):
            if result.outcome not in ("passed", "absent"):
                for line in result.detail[:4]:
                    say(f"      {side}: {line}")
    stale = sorted(key for key in ACCEPTED if key not in differing)
    if stale:
        say(f"accepted but not differing now: {', '.join(stale)}")

    status = 1 if unexpected else 0
    say()
    stats = json.loads(injected.stats.read_text()) if injected.stats.is_file() else None
    if stats is None:
        say("injection: no stats written (parity_inject did not run to the end)")
        return 1
    collector = stats.get("collector") or {}
    say(
        f"injection: {stats['clients_injected']} clients given SegmentIntegration; the "
        f"collector received {collector.get('messages', '?')} messages in "
        f"{collector.get('batches', '?')} batches (user ids: {collector.get('user_ids')}), "
        f"{collector.get('batches_with_sentry_trace_or_baggage', '?')} batches with "
        f"sentry-trace/baggage headers"
    )
    uninjected = stats["tests_with_a_client_without_integration"]
    if uninjected:
        status = 1
        say(f"injection missed the client of {len(uninjected)} tests: {uninjected[:20]}")
    if stats.get("canary_error") or "parity-canary" not in (collector.get("user_ids") or []):
        status = 1
        say(f"canary did not reach the collector: {stats.get('canary_error')}")
    say(
        "parity: "
        + ("no unexpected difference" if status == 0 else f"{len(unexpected)} unexpected")
    )
    return status


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentry-sdk", help="sdist version (default: the installed one)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv")
    parser.add_argument("--cache", type=Path, default=WORKTREE / ".parity")
    parser.add_argument("--serial", action="store_true", help="one pass after the other")
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS))
    args = parser.parse_args(argv)
    started = time.monotonic()

    version = args.sentry_sdk or importlib.metadata.version("sentry-sdk")
    cache: Path = args.cache.resolve()
    log(f"sentry-sdk {version}, cache {cache}")
    try:
        sdist = fetch_sdist(version, cache)
        venv = harness_venv(version, args.python, cache)
        precompile(venv, sdist)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log(f"setup failed: {error}")
        return 2
    ready = time.monotonic()

    results = cache / "results" / version
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    shipped = Pass("shipped", inject=False, results=results)
    injected = Pass("injected", inject=True, results=results)
    deadline = time.monotonic() + PASS_TIMEOUT
    try:
        if args.serial:
            for each in (shipped, injected):
                each.start(venv, sdist, args.paths)
                each.wait(deadline)
        else:
            for each in (shipped, injected):
                each.start(venv, sdist, args.paths)
            for each in (shipped, injected):
                each.wait(deadline)
    finally:  # interrupted: the passes run in sessions of their own, so end them here
        shipped.kill()
        injected.kill()

    with open(results / "report.txt", "w") as saved:
        status = report(shipped, injected, saved)
    print((results / "report.txt").read_text(), end="")
    log(
        f"setup {ready - started:.0f} s, passes {time.monotonic() - ready:.0f} s, "
        f"total {time.monotonic() - started:.0f} s; results in {results}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
