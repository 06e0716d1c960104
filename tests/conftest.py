"""Real loopback endpoints for Sentry and Segment, and a real sentry_sdk.init per test."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import sentry_sdk
import sentry_sdk.utils
from hypothesis import settings
from jsonschema import Draft7Validator
from sentry_sdk.scope import Scope

from sentry_segment import SegmentIntegration, payload
from sentry_segment.config import ENV_PREFIX, OPTION_NAMES
from sentry_segment.schema import message_schema
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import WRITE_KEY

ROOT = Path(__file__).resolve().parent.parent

# `make fuzz` runs the property tests with many more examples (FUZZ_EXAMPLES).
settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")), deadline=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# How the suite is run (Makefile `test`, noxfile.py): everything but `timing` on several
# pytest-xdist workers, since most of it waits on loopback servers and subprocesses; then the
# `timing` tests alone, whose real-time windows and deadlines must not share the 2 cores with
# other tests. `load` tests run only in `make test` (newest releases), not in every matrix
# session: what they check of the dependencies (a full queue drops and counts) runs there in
# smaller tests (test_delivery.py); what they add is scale, which is this package's own.
TIMING = (
    "tests/test_ratelimit.py",
    "tests/test_exit.py",
    "tests/test_forking.py::test_a_fork_from_c_without_at_fork_hooks_delivers_the_childs_",
    "tests/test_integration.py::test_rate_limit_is_a_moving_window_per_organization",
    "tests/test_integration.py::test_what_queues_while_a_post_is_in_flight_goes_in_one_batch",
    "tests/test_integration.py::test_the_integrations_threads_end_when_idle_and_at_flush",
    "tests/test_integration.py::test_under_load_what_queues_within_the_post_interval_goes_in_",
    "tests/test_outages.py::test_the_application_never_waits_for_segment",
    "tests/test_outages.py::test_a_request_that_hangs_is_retried_after_the_timeout",
)
LOAD = ("tests/test_flood.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(TIMING):
            item.add_marker(pytest.mark.timing)
        if item.nodeid.startswith(LOAD):
            item.add_marker(pytest.mark.load)
    # The load tests first, so that pytest-xdist starts them at once, on workers of their own.
    items.sort(key=lambda item: item.get_closest_marker("load") is None)


def _working_tree_changes() -> Optional[set[str]]:
    try:
        listed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an sdist): nothing to compare
    return set(listed.stdout.splitlines())


@pytest.fixture(scope="session", autouse=True)
def _tests_write_only_to_temporary_directories() -> Iterator[None]:
    before = _working_tree_changes()
    yield
    after = _working_tree_changes()
    if before is not None and after is not None:
        assert sorted(after - before) == [], "files the tests left in the working tree"


class _SwallowedErrors(logging.Handler):
    """Every exception sentry_sdk's capture_internal_exception(s) swallowed, on any thread.

    capture_internal_exception is replaced where it is called from: the sentry_sdk.utils global
    (which capture_internal_exceptions() calls) and every module that imported it by name, ours
    included. What it logs ("Internal error in sentry_sdk") is recorded too, for a module that
    imported the name after the test started.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def record(self, error: Optional[BaseException]) -> None:
        if error is not None and all(error is not seen for seen in self.errors):
            self.errors.append(error)

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.getMessage() == "Internal error in sentry_sdk":
            self.record(record.exc_info[1])


@pytest.fixture(autouse=True)
def _no_swallowed_internal_errors(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fails the test in which sentry_sdk swallowed an exception (a bug there passes every
    other check), unless it is marked internal_errors_expected (raises=the types it causes,
    as xfail takes them; any type without it). Autouse fixtures are set up
    first, so this one is torn down last: after init_sentry closed the client and its threads."""
    swallowed = _SwallowedErrors()
    original = sentry_sdk.utils.capture_internal_exception

    def capture_internal_exception(exc_info: Any) -> None:
        swallowed.record(exc_info[1])
        original(exc_info)

    for name, module in list(sys.modules.items()):
        if (
            name.startswith(("sentry_sdk", "sentry_segment"))
            and getattr(module, "capture_internal_exception", None) is original
        ):
            monkeypatch.setattr(module, "capture_internal_exception", capture_internal_exception)
    sdk_logger = sentry_sdk.utils.logger
    sdk_logger.addHandler(swallowed)
    try:
        yield
    finally:
        sdk_logger.removeHandler(swallowed)
    expected = request.node.get_closest_marker("internal_errors_expected")
    if expected is not None:
        # raises=Type or a tuple of types, as with xfail; without it, any type.
        types = expected.kwargs.get("raises", BaseException)
        swallowed.errors = [error for error in swallowed.errors if not isinstance(error, types)]
    if swallowed.errors:
        tracebacks = "\n".join(
            "".join(traceback.format_exception(type(error), error, error.__traceback__))
            for error in swallowed.errors
        )
        pytest.fail(
            f"sentry_sdk swallowed {len(swallowed.errors)} exception(s); mark the test "
            f"internal_errors_expected(raises=Type) if it means to cause them:\n{tracebacks}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def _endpoints() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as endpoints:
        yield endpoints


# Each test gets endpoints of its own, which listen until the session ends: what an earlier
# test's clients post late (a client that sentry_sdk.init replaced is never closed, and a
# loaded machine delays everything) lands there, never in a later test's, whatever order
# pytest-xdist runs them in. A pair costs 5 ms.
@pytest.fixture
def segment(_endpoints: contextlib.ExitStack) -> SegmentCollector:
    """A loopback Segment API of this test's own."""
    collector: SegmentCollector = _endpoints.enter_context(SegmentCollector())
    return collector


@pytest.fixture
def sentry(_endpoints: contextlib.ExitStack) -> SentryRecorder:
    """A loopback Sentry endpoint of this test's own."""
    recorder: SentryRecorder = _endpoints.enter_context(SentryRecorder())
    return recorder


@pytest.fixture(autouse=True)
def _every_message_matches_its_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every message the suite builds, in every test, is held to the JSON Schema that
    `sentry-segment schema` prints for the shape that built it: they cannot drift apart."""
    build = payload.track_from_fields
    validators: dict[payload.Shape, Draft7Validator] = {}
    mismatches: list[str] = []

    def validated(
        fields: payload.ErrorFields,
        shape: payload.Shape = payload.FORWARDER_SHAPE,
        project: str = "",
    ) -> payload.Track:
        track = build(fields, shape, project)
        validator = validators.get(shape)
        if validator is None:
            validator = validators[shape] = Draft7Validator(message_schema(shape))
        # Recorded, not raised: on the worker thread an exception would only be logged. A
        # track with no one to attribute it to (an ID Sentry would filter) is never sent.
        if track.user_id or track.anonymous_id:
            message = track.as_message()
            mismatches.extend(error.message for error in validator.iter_errors(message))
        return track

    monkeypatch.setattr(payload, "track_from_fields", validated)
    yield
    assert mismatches == [], "messages that do not match their schema"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("SENTRY_DSN", raising=False)


InitSentry = Callable[..., SegmentIntegration]


@pytest.fixture
def init_sentry(segment: SegmentCollector, sentry: SentryRecorder) -> Iterator[InitSentry]:
    """sentry_sdk.init with a SegmentIntegration aimed at the loopback collector.

    Keyword arguments go to SegmentIntegration when they are its options, else to init;
    integrations=[...] are added beside the SegmentIntegration.
    """

    def init(
        integration: Optional[SegmentIntegration] = None,
        project: int = 1,
        **kwargs: Any,
    ) -> SegmentIntegration:
        integration_options = {key: kwargs.pop(key) for key in list(kwargs) if key in OPTION_NAMES}
        integration_options.setdefault("write_key", WRITE_KEY)
        if "region" not in integration_options:
            integration_options.setdefault("host", segment.host)
        if integration is None:
            integration = SegmentIntegration(**integration_options)
        kwargs.setdefault("dsn", sentry.dsn(project))
        others = list(kwargs.pop("integrations", []))
        sentry_sdk.init(integrations=[integration, *others], **kwargs)
        return integration

    yield init
    # Returns once sent; a short timeout on a loaded machine let a test's last events reach the
    # (per-process) recorder during the next test.
    sentry_sdk.get_client().close(timeout=10)
    # sentry_sdk.get_isolation_scope() and friends are there from 2.12; Scope's from 2.0.
    Scope.get_isolation_scope().clear()
    Scope.get_current_scope().clear()
    Scope.get_global_scope().clear()


def raise_and_capture(
    error: Optional[BaseException] = None, user: Optional[dict[str, Any]] = None
) -> Optional[str]:
    """Raise, catch and capture an exception, with a user on a fresh scope."""
    with sentry_sdk.new_scope() as scope:
        if user is not None:
            scope.set_user(user)
        try:
            raise error or ValueError("boom")
        except BaseException:
            return sentry_sdk.capture_exception()


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A real redis-server on a free loopback port (skipped, or failed in CI, without one)."""
    from .redis_server import RedisServer, require_redis_server

    server = RedisServer(require_redis_server())
    server.start()
    yield server
    server.stop()
