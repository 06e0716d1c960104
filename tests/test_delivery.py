"""Segment clients per write key and host, and the accounting of what they delivered."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from segment.analytics import Client

from sentry_segment import delivery, threads
from sentry_segment.config import resolve
from sentry_segment.payload import Track, build_track, user_id
from sentry_segment.stats import Stats
from sentry_segment.testing import SegmentCollector

from .conftest import WRITE_KEY
from .support import events, free_port

OPTIONS = resolve(write_key=WRITE_KEY, environ={})


def message(number: int) -> dict[str, Any]:
    return delivery.segment_message(track(number))


def track(number: int) -> Track:
    return Track(
        user_id=str(number),
        event="Error Captured",
        properties={"eventId": f"{number:032x}"},
        context={"page": {"url": ""}},
        timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
        message_id=f"{number:032x}",
    )


# A client that never sends returns the message its track() would have queued.
_preparer = Client(write_key=WRITE_KEY, send=False)


def track_arguments(track: Track) -> dict[str, Any]:
    """Keyword arguments for Segment's ``Client.track`` (which adds to the context it gets)."""
    return {
        "user_id": track.user_id or None,
        "anonymous_id": track.anonymous_id or None,
        "event": track.event,
        "properties": track.properties,
        "context": dict(track.context),
        "timestamp": track.timestamp,
        "message_id": track.message_id,
    }


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@given(events, st.integers() | st.text(min_size=1))
def test_any_event_queues_the_message_segments_track_would_queue(
    event: dict[str, Any], some_user_id: Any
) -> None:
    if user_id(event) is None:  # only events with a user ID are forwarded
        user = event.get("user")
        event = {**event, "user": {**(user if isinstance(user, dict) else {}), "id": some_user_id}}
    assume(user_id(event) is not None)
    track = build_track(event)
    # track() raises on what it refuses (bad types, over 32 KB) and adds to the context.
    _, expected = _preparer.track(**track_arguments(track))
    assert delivery.segment_message(track) == expected


def test_one_client_per_write_key_and_host(segment: SegmentCollector) -> None:
    first = delivery.sink_for(WRITE_KEY, segment.host, OPTIONS)
    assert delivery.sink_for(WRITE_KEY, segment.host, OPTIONS) is first
    assert delivery.sink_for("wk_another_key", segment.host, OPTIONS) is not first
    assert delivery.sink_for(WRITE_KEY, segment.host + "/", OPTIONS) is not first
    assert WRITE_KEY not in repr(first)


def test_each_message_is_counted_for_the_stats_that_sent_it(segment: SegmentCollector) -> None:
    sink = delivery.sink_for(WRITE_KEY, segment.host, OPTIONS)
    mine, theirs = Stats(), Stats()
    for number in range(3):
        sink.put_many([message(number)], mine, False)
    sink.put_many([message(99)], theirs, False)
    assert sink.wait_until_sent(time.monotonic() + 5)
    assert (mine.snapshot()["forwarded"], mine.snapshot()["delivered"]) == (3, 3)
    assert (theirs.snapshot()["forwarded"], theirs.snapshot()["delivered"]) == (1, 1)
    assert sorted(m["userId"] for m in segment.messages()) == ["0", "1", "2", "99"]


def own_sink(segment: SegmentCollector, name: str, path: str = "", **options: Any) -> delivery.Sink:
    """A Segment client of the test's own (one per write key and host per process), so that
    what it logs once, or its failing, is the test's."""
    write_key = f"wk_{name}_0123456789abcdef"
    resolved = resolve(write_key=write_key, environ={}, **options)
    return delivery.sink_for(write_key, segment.host + path, resolved)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_refused_messages_count_as_failed_and_are_logged_once(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    sink = own_sink(segment, "RefusedMessages")
    stats = Stats()
    segment.respond_next(3, 400)
    with caplog.at_level(logging.WARNING):
        for number in range(3):
            sink.put_many([message(number)], stats, False)
            assert sink.wait_until_sent(time.monotonic() + 5)
        sink.put_many([message(3)], stats, False)
        assert sink.wait_until_sent(time.monotonic() + 5)
    assert stats.snapshot()["failed"] == 3
    assert stats.snapshot()["delivered"] == 1
    # A refused message is no outage: one line, not a failing and a recovered one.
    [line] = [r.getMessage() for r in caplog.records if r.name == delivery.LOGGER_NAME]
    assert f"{segment.host} answered HTTP 400 to 1 of 1 messages" in line


def test_a_full_queue_while_delivery_works_drops_the_new_without_a_warning(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    sink = own_sink(segment, "TinyQueue", max_queue_size=2)
    stats = Stats()
    segment.respond_next(1, 200, delay=1)
    with caplog.at_level(logging.WARNING):
        sink.put_many([message(0)], stats, False)
        wait_for(lambda: segment.delayed_requests_in_progress == 1)
        for number in range(1, 25):
            sink.put_many([message(number)], stats, False)
        sink.put_many([message(number) for number in range(25, 50)], stats, False)
        assert sink.wait_until_sent(time.monotonic() + 10)
    counts = stats.snapshot()
    assert (counts["forwarded"], counts["dropped_queue_full"], counts["delivered"]) == (3, 47, 3)
    assert sorted(m["userId"] for m in segment.messages()) == ["0", "1", "2"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_full_queue_while_delivery_fails_keeps_the_newest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = SegmentCollector(port=free_port())
    sink = own_sink(collector, "KeepNewest", max_queue_size=2)
    stats = Stats()
    with caplog.at_level(logging.WARNING):
        sink.put_many([message(0)], stats, False)
        wait_for(lambda: sink.failing_since is not None)
        for number in range(1, 11):
            sink.put_many([message(number)], stats, False)
        with collector:
            wait_for(lambda: stats.snapshot()["delivered"] == 3)
            # The batch being retried, and the newest two.
            assert sorted(m["userId"] for m in collector.messages()) == ["0", "10", "9"]
    counts = stats.snapshot()
    assert (counts["forwarded"], counts["dropped_oldest"], counts["failed"]) == (11, 8, 0)
    assert counts["dropped_queue_full"] == 0
    failing, full, recovered = [r.getMessage() for r in caplog.records]
    assert "connection refused" in failing
    assert "keeping the newest 2 messages, dropping the oldest" in full
    assert "8 messages were dropped meanwhile" in recovered


def test_segments_own_error_lines_are_folded_into_one_of_ours(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    # Segment's post() logs each refused post at ERROR.
    sink = own_sink(segment, "Fold", "", max_retries=2)
    segment.respond_next(3, 500)
    stats = Stats()
    with caplog.at_level(logging.DEBUG):
        sink.put_many([message(1)], stats, False)
        wait_for(lambda: stats.snapshot()["failed"] == 1)
    assert len([r for r in segment.batches() if r.status == 500]) == 3
    segments = [r for r in caplog.records if r.name == delivery.SEGMENT_LOGGER]
    assert any(r.levelno == logging.DEBUG for r in segments), "Segment's DEBUG lines pass"
    assert [r.getMessage() for r in segments if r.levelno >= logging.INFO] == []
    [line] = [r.getMessage() for r in caplog.records if r.name == delivery.LOGGER_NAME]
    assert f"{segment.host} answered HTTP 500" in line


def test_a_name_that_does_not_resolve_is_retried_and_said_on_the_first_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = resolve(write_key=WRITE_KEY, max_retries=1, environ={})
    sink = delivery.sink_for(WRITE_KEY, "http://sentry-segment-test.invalid", options)
    stats = Stats()
    with caplog.at_level(logging.WARNING):
        sink.put_many([message(1)], stats, False)
        wait_for(lambda: stats.snapshot()["failed"] == 1, timeout=30)
    [line] = [r.getMessage() for r in caplog.records if r.name == delivery.LOGGER_NAME]
    assert "name resolution failed for sentry-segment-test.invalid" in line
    assert "retried, as it may be transient" in line


@given(st.integers(min_value=1, max_value=10_000))
def test_any_backoff_is_jittered_under_the_cap(failures: int) -> None:
    ceiling = min(
        delivery.BACKOFF_CAP_SECONDS, delivery.BACKOFF_FIRST_SECONDS * 2.0 ** min(failures - 1, 100)
    )
    assert ceiling / 2 <= delivery.backoff(failures) <= ceiling <= delivery.BACKOFF_CAP_SECONDS


def test_segments_debug_logs_never_show_the_write_key(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    sink = delivery.sink_for(WRITE_KEY, segment.host, OPTIONS)
    with caplog.at_level(logging.DEBUG, logger="segment"):
        sink.put_many([message(1)], Stats(), False)
        assert sink.wait_until_sent(time.monotonic() + 5)
    segment_records = [r.getMessage() for r in caplog.records if r.name == "segment"]
    assert any("making request" in message for message in segment_records)
    assert not [message for message in segment_records if WRITE_KEY in message]
    assert WRITE_KEY not in caplog.text


def test_drain_returns_false_at_the_deadline() -> None:
    import queue

    work: queue.Queue[int] = queue.Queue()
    work.put(1)
    started = time.monotonic()
    assert not threads.drain(work, started + 0.05)
    work.get()
    work.task_done()
    assert threads.drain(work, time.monotonic())
