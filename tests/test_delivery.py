"""Segment clients per write key and host, and the accounting of what they delivered."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import sentry_sdk
from hypothesis import assume, given
from hypothesis import strategies as st
from segment.analytics import Client
from sentry_sdk.scope import Scope

from sentry_segment import delivery
from sentry_segment.config import resolve
from sentry_segment.payload import Track, build_track, user_id
from sentry_segment.stats import Stats
from sentry_segment.testing import SegmentCollector

from .conftest import WRITE_KEY
from .support import events

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
    _, expected = _preparer.track(**{**track.track_arguments(), "context": dict(track.context)})
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


@pytest.fixture
def sentry_debug() -> Iterator[None]:
    """sentry-sdk's logger, where the integration reports, is silent unless debug is on."""
    sentry_sdk.init(debug=True)
    yield
    sentry_sdk.get_client().close()
    Scope.get_global_scope().set_client(None)


@pytest.mark.usefixtures("sentry_debug")
def test_refused_batches_count_as_failed_and_log_once_per_incident(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    sink = delivery.sink_for(WRITE_KEY, segment.host, OPTIONS)
    stats = Stats()
    segment.respond_next(3, 400)
    with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
        for number in range(3):
            sink.put_many([message(number)], stats, True)
            assert sink.wait_until_sent(time.monotonic() + 5)
        sink.put_many([message(3)], stats, True)
        assert sink.wait_until_sent(time.monotonic() + 5)
    assert stats.snapshot()["failed"] == 3
    assert stats.snapshot()["delivered"] == 1
    ours = [r.getMessage() for r in caplog.records if r.name == "sentry_sdk.errors"]
    assert len([m for m in ours if "failing" in m]) == 1
    assert len([m for m in ours if "recovered" in m]) == 1


def test_a_full_queue_drops_and_counts_without_a_warning_per_event(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing answers /full/v1/batch but a 500: without max_retries=0 this client kept retrying
    # for minutes and gave up (logging "failing") inside later tests.
    tiny_queue = resolve(write_key=WRITE_KEY, max_queue_size=2, max_retries=0, environ={})
    sink = delivery.sink_for(WRITE_KEY, segment.host + "/full", tiny_queue)
    stats = Stats()
    with caplog.at_level(logging.WARNING):
        for number in range(25):
            sink.put_many([message(number)], stats, False)
        sink.put_many([message(number) for number in range(25, 50)], stats, False)
    counts = stats.snapshot()
    assert counts["dropped_queue_full"] >= 40
    assert counts["forwarded"] + counts["dropped_queue_full"] == 50
    assert not [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert sink.wait_until_sent(time.monotonic() + 10)


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
    assert not delivery.drain(work, started + 0.05)
    work.get()
    work.task_done()
    assert delivery.drain(work, time.monotonic())
