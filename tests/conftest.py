"""Real loopback endpoints for Sentry and Segment, and a real sentry_sdk.init per test."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import sentry_sdk
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


@pytest.fixture(scope="session")
def _segment_server() -> Iterator[SegmentCollector]:
    with SegmentCollector() as collector:
        yield collector


@pytest.fixture(scope="session")
def _sentry_server() -> Iterator[SentryRecorder]:
    with SentryRecorder() as recorder:
        yield recorder


@pytest.fixture
def segment(_segment_server: SegmentCollector) -> Iterator[SegmentCollector]:
    """The loopback Segment API, empty at the start of each test."""
    _segment_server.clear()
    yield _segment_server
    _segment_server.clear()


@pytest.fixture
def sentry(_sentry_server: SentryRecorder) -> Iterator[SentryRecorder]:
    """The loopback Sentry endpoint, empty at the start of each test."""
    _sentry_server.clear()
    yield _sentry_server
    _sentry_server.clear()


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
    sentry_sdk.get_client().close(timeout=2)
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
