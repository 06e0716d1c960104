"""Segment outages against loopback servers that misbehave: nothing reaches the application,
every event is delivered exactly once after recovery, and losses are counted and logged."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sentry_sdk

from sentry_segment import stats as stats_module
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import InitSentry, raise_and_capture
from .support import free_port


def capture_errors(count: int) -> list[str]:
    event_ids = [raise_and_capture(ValueError(n), user={"id": n}) for n in range(count)]
    assert all(event_ids)
    return [event_id for event_id in event_ids if event_id]


def assert_delivered_exactly_once(collector: SegmentCollector, event_ids: list[str]) -> None:
    accepted = Counter(message["messageId"] for message in collector.messages())
    assert sorted(accepted) == sorted(event_ids)
    assert sum(accepted.values()) == len(event_ids)


@pytest.fixture
def late_collector() -> Iterator[SegmentCollector]:
    """A collector on a port where nothing listens until the test starts it."""
    collector = SegmentCollector(port=free_port())
    yield collector
    collector.stop()


def test_connection_refused_then_recovery_delivers_everything_once(
    init_sentry: InitSentry, late_collector: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry(host=late_collector.host)
    event_ids = capture_errors(5)
    assert not integration.flush(timeout=1.0)

    late_collector.start()
    late_collector.wait_for_messages(5, timeout=20)
    assert integration.flush(timeout=5)
    assert_delivered_exactly_once(late_collector, event_ids)
    assert integration.stats()["delivered"] == 5
    assert integration.stats()["failed"] == 0
    assert len(sentry.wait_for_events(5)) == 5


def test_server_errors_for_a_while_then_success(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry()
    segment.respond_next(3, 503)
    event_ids = capture_errors(5)
    assert integration.flush(timeout=15)
    assert [batch.status for batch in segment.batches()][:3] == [503, 503, 503]
    assert_delivered_exactly_once(segment, event_ids)
    assert integration.stats()["delivered"] == 5
    # Segment's client logs each refusal at ERROR; none may come back as a Sentry event.
    sentry_sdk.flush(timeout=5)
    assert [e["exception"]["values"][0]["type"] for e in sentry.events()] == ["ValueError"] * 5


def test_rate_limited_with_retry_after(init_sentry: InitSentry, segment: SegmentCollector) -> None:
    integration = init_sentry()
    segment.respond_next(1, 429, {"Retry-After": "1"})
    event_ids = capture_errors(5)
    assert integration.flush(timeout=15)
    assert segment.batches()[0].status == 429
    assert_delivered_exactly_once(segment, event_ids)


def test_a_request_that_hangs_is_retried_after_the_timeout(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(timeout=0.5)
    segment.respond_next(1, 504, delay=1.5)
    event_ids = capture_errors(5)
    assert integration.flush(timeout=15)
    assert_delivered_exactly_once(segment, event_ids)
    assert integration.stats()["delivered"] == 5


@pytest.fixture
def sentry_debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_given_up_batches_are_counted_and_logged_once_per_incident(
    init_sentry: InitSentry,
    late_collector: SegmentCollector,
    sentry_debug_logs: pytest.LogCaptureFixture,
) -> None:
    integration = init_sentry(host=late_collector.host, max_retries=0, debug=True)
    for _ in range(3):
        capture_errors(4)
        assert integration.flush(timeout=10)
    assert integration.stats()["failed"] == 12
    assert integration.stats()["delivered"] == 0

    late_collector.start()
    event_ids = capture_errors(2)
    assert integration.flush(timeout=10)
    assert_delivered_exactly_once(late_collector, event_ids)
    ours = [
        r.getMessage()
        for r in sentry_debug_logs.records
        if r.getMessage().startswith("sentry-segment")
    ]
    [failing] = [m for m in ours if "failing" in m]
    assert f"could not reach {late_collector.host}" in failing
    assert "SENTRY_SEGMENT_HOST" in failing
    assert len([m for m in ours if "recovered" in m]) == 1


def test_a_refused_write_key_is_logged_with_the_host_the_status_and_what_to_check(
    init_sentry: InitSentry, segment: SegmentCollector, sentry_debug_logs: pytest.LogCaptureFixture
) -> None:
    integration = init_sentry(max_retries=0, debug=True)
    segment.respond_next(1, 401)
    capture_errors(1)
    assert integration.flush(timeout=10)
    assert integration.stats()["failed"] == 1
    [failing] = [
        r.getMessage()
        for r in sentry_debug_logs.records
        if "sentry-segment: delivery" in r.getMessage()
    ]
    assert f"{segment.host} answered HTTP 401" in failing
    assert "SENTRY_SEGMENT_WRITE_KEY" in failing
    assert "SENTRY_SEGMENT_REGION" in failing


def test_a_failing_error_callback_never_kills_segments_consumer(
    init_sentry: InitSentry, segment: SegmentCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    integration = init_sentry(max_retries=0)
    original_add = stats_module.Stats.add

    def add_or_explode(self: stats_module.Stats, name: str, amount: int = 1) -> None:
        if name == "failed":
            raise RuntimeError("bookkeeping bug")
        original_add(self, name, amount)

    monkeypatch.setattr(stats_module.Stats, "add", add_or_explode)
    segment.respond_next(1, 400)
    capture_errors(1)
    assert integration.flush(timeout=10)
    assert segment.batches()[0].status == 400

    monkeypatch.setattr(stats_module.Stats, "add", original_add)
    later = capture_errors(3)
    assert integration.flush(timeout=10)
    assert sorted(m["messageId"] for m in segment.messages()) == sorted(later)


def test_the_application_never_waits_for_segment(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(timeout=10)
    segment.respond_next(1, 504, delay=3)
    capture_errors(1)
    deadline = time.monotonic() + 5
    while segment.delayed_requests_in_progress == 0:
        assert time.monotonic() < deadline, "the first batch never reached the collector"
        time.sleep(0.01)

    later = capture_errors(20)
    assert segment.delayed_requests_in_progress == 1, "capturing waited for the hung request"
    assert integration.flush(timeout=15)
    assert set(later) <= {m["messageId"] for m in segment.messages()}
