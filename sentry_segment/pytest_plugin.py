"""The pytest plugin: fixtures with a loopback Segment collector and Sentry endpoint.

Registered with pytest when sentry-segment is installed. It imports nothing but pytest when
pytest loads it: a suite whose conftest must import or patch first (gevent's monkey-patching,
a check that sentry_sdk is not imported yet) starts exactly as without it. The fixtures
import the servers, which need the ``testing`` extra, when a test uses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import SegmentCollector, SentryRecorder


@pytest.fixture
def segment_collector() -> Iterator[SegmentCollector]:
    """A loopback Segment endpoint for this test; aim SegmentIntegration at it with
    ``segment_collector.integration()`` or the ``segment_environment`` fixture."""
    from .testing import SegmentCollector

    with SegmentCollector() as collector:
        yield collector


@pytest.fixture
def sentry_recorder() -> Iterator[SentryRecorder]:
    """A loopback Sentry endpoint for this test: ``sentry_recorder.dsn()`` is a DSN whose
    events arrive there, and ``.events()`` what arrived."""
    from .testing import SentryRecorder

    with SentryRecorder() as recorder:
        yield recorder


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
    return segment_collector
