"""The pytest plugin: fixtures with a loopback Segment collector and Sentry endpoint.

Registered with pytest when sentry-segment is installed. It imports nothing but pytest when
pytest loads it: a suite whose conftest must import or patch first (gevent's monkey-patching,
a check that sentry_sdk is not imported yet) starts exactly as without it.

The two endpoints live for the whole session; each test that asks for one sees only what
arrived during that test. With the ini option ``sentry_segment_environment = true`` they start
before any conftest or settings module is imported, and SENTRY_DSN, SENTRY_SEGMENT_HOST and
SENTRY_SEGMENT_WRITE_KEY point at them for the whole session: for applications that call
``sentry_sdk.init`` at import (Django's settings under pytest-django, a module-level app).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import pytest

if TYPE_CHECKING:
    from .testing import SegmentCollector, SentryRecorder

INI_OPTION = "sentry_segment_environment"
# Removed for the session: a region beside SENTRY_SEGMENT_HOST is a configuration error.
_UNSET = ("SENTRY_SEGMENT_REGION",)


@dataclass
class _Loopback:
    collector: SegmentCollector
    recorder: SentryRecorder
    saved_environment: dict[str, Optional[str]] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {"SENTRY_DSN": self.recorder.dsn(), **self.collector.environment()}

    def stop(self) -> None:
        self.collector.stop()
        self.recorder.stop()


_SESSION_LOOPBACK = pytest.StashKey["_Loopback"]()


def _start() -> _Loopback:
    from .testing import SegmentCollector, SentryRecorder

    collector, recorder = SegmentCollector(), SentryRecorder()
    collector.start()
    recorder.start()
    return _Loopback(collector, recorder)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_OPTION,
        type="bool",
        default=False,
        help="sentry-segment: start the loopback Segment and Sentry endpoints before conftests "
        "and settings are imported, and point SENTRY_DSN and SENTRY_SEGMENT_* at them",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, Any, None]:
    # A wrapper runs before every plugin's own hook: pytest-django imports the settings in it.
    if early_config.getini(INI_OPTION):
        loopback = _start()
        for name, value in loopback.environment().items():
            loopback.saved_environment[name] = os.environ.get(name)
            os.environ[name] = value
        for name in _UNSET:
            loopback.saved_environment[name] = os.environ.pop(name, None)
        early_config.stash[_SESSION_LOOPBACK] = loopback
    yield


def pytest_unconfigure(config: pytest.Config) -> None:
    loopback = config.stash.get(_SESSION_LOOPBACK, None)
    if loopback is None:
        return
    del config.stash[_SESSION_LOOPBACK]
    loopback.stop()
    for name, value in loopback.saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def _sentry_segment_loopback(pytestconfig: pytest.Config) -> Iterator[_Loopback]:
    """The session's endpoints: those the ini option started, or started now."""
    started = pytestconfig.stash.get(_SESSION_LOOPBACK, None)
    if started is not None:
        yield started
        return
    loopback = _start()
    try:
        yield loopback
    finally:
        loopback.stop()


def _settle() -> None:
    """Wait until what Sentry captured so far has reached both endpoints, so that it is not
    counted in the next test."""
    if "sentry_sdk" not in sys.modules:
        return
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=2)


@pytest.fixture
def segment_collector(_sentry_segment_loopback: _Loopback) -> Iterator[SegmentCollector]:
    """The loopback Segment endpoint, holding only what arrived during this test; aim
    SegmentIntegration at it with ``segment_collector.integration()`` or the
    ``segment_environment`` fixture."""
    collector = _sentry_segment_loopback.collector
    _settle()
    collector.clear()
    yield collector
    _settle()
    collector.clear()


@pytest.fixture
def sentry_recorder(_sentry_segment_loopback: _Loopback) -> Iterator[SentryRecorder]:
    """The loopback Sentry endpoint, holding only what arrived during this test:
    ``sentry_recorder.dsn()`` is a DSN whose events arrive there, and ``.events()`` what
    arrived."""
    recorder = _sentry_segment_loopback.recorder
    _settle()
    recorder.clear()
    yield recorder
    _settle()
    recorder.clear()


@pytest.fixture
def segment_environment(
    segment_collector: SegmentCollector,
    sentry_recorder: SentryRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> SegmentCollector:
    """Points an application's own ``sentry_sdk.init(...)`` and ``SegmentIntegration()`` at
    the loopback endpoints: sets SENTRY_DSN to ``sentry_recorder``, and SENTRY_SEGMENT_HOST
    and SENTRY_SEGMENT_WRITE_KEY to ``segment_collector``, which it returns.

    Sentry forwards only what it sends, and sends nothing without a DSN: hence SENTRY_DSN.
    An application that passes ``dsn=`` itself keeps its own.
    """
    monkeypatch.setenv("SENTRY_DSN", sentry_recorder.dsn())
    for name, value in segment_collector.environment().items():
        monkeypatch.setenv(name, value)
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    return segment_collector
