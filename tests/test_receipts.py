"""Segment gets only what Sentry received: sentry-sdk's transport drops events after
capture_event returned their IDs (quota, its own queue, a refused or failed request)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import sentry_sdk
import urllib3

from sentry_segment.config import resolve
from sentry_segment.forwarder import Forwarder
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import InitSentry, raise_and_capture
from .support import assert_each_delivered_once, free_port


def outcome(sentry: SentryRecorder, segment: SegmentCollector) -> tuple[set[str], set[str]]:
    """(event IDs Sentry received, event IDs Segment received) once both flushed."""
    sentry_sdk.flush(timeout=10)
    received = {str(event["event_id"]) for event in sentry.events()}
    forwarded = {str(message["messageId"]) for message in segment.messages()}
    return received, forwarded


def test_an_organization_over_its_quota_forwards_only_what_sentry_accepted(
    init_sentry: InitSentry, sentry: SentryRecorder, segment: SegmentCollector
) -> None:
    integration = init_sentry()
    # Sentry accepts the first error and says errors are over quota for a minute: its
    # transport drops every later one before sending it.
    sentry.answer = (200, {"X-Sentry-Rate-Limits": "60:error:organization:usage_exceeded"})
    first = raise_and_capture(user={"id": 0})
    sentry.wait_for_events(1)
    captured = [first] + [raise_and_capture(user={"id": n}) for n in range(1, 10)]
    assert all(captured), "capture_event returned an ID for every error"
    received, forwarded = outcome(sentry, segment)
    assert received == {first}
    assert forwarded == received
    stats = integration.stats()
    assert stats["skipped_dropped_by_sentry"] == 9
    assert stats["delivered"] == 1


def test_a_429_for_the_request_itself_forwards_nothing(
    init_sentry: InitSentry, sentry: SentryRecorder, segment: SegmentCollector
) -> None:
    integration = init_sentry()
    sentry.answer = (429, {"Retry-After": "60"})
    captured = [raise_and_capture(user={"id": n}) for n in range(3)]
    assert all(captured)
    received, forwarded = outcome(sentry, segment)
    assert received == forwarded == set()
    # The first is refused by Sentry, the others dropped by the transport's back-off.
    assert integration.stats()["skipped_dropped_by_sentry"] == 3


def test_a_burst_overflowing_sentrys_queue_forwards_exactly_what_sentry_received(
    init_sentry: InitSentry, sentry: SentryRecorder, segment: SegmentCollector
) -> None:
    integration = init_sentry(rate_limit="off", transport_queue_size=20)
    captured = [raise_and_capture(user={"id": n}) for n in range(300)]
    assert all(captured)
    received, forwarded = outcome(sentry, segment)
    assert 0 < len(received) < 300, "the burst overflows the transport's queue"
    assert forwarded == received
    assert_each_delivered_once(segment.messages(), Counter(_pairs(sentry.events())))
    stats = integration.stats()
    assert stats["skipped_dropped_by_sentry"] == 300 - len(received)
    assert stats["delivered"] == len(received)


def _pairs(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(event["event_id"]), str(event["user"]["id"])) for event in events]


# sentry-sdk's transport swallows the refused connection (its capture_internal_exceptions).
@pytest.mark.internal_errors_expected(raises=urllib3.exceptions.HTTPError)
def test_a_sentry_that_refuses_connections_forwards_nothing(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(dsn=f"http://public@127.0.0.1:{free_port()}/1")
    captured = [raise_and_capture(user={"id": n}) for n in range(5)]
    assert all(captured)
    sentry_sdk.flush(timeout=10)
    assert segment.messages() == []
    assert integration.stats()["skipped_dropped_by_sentry"] == 5


def test_a_sentry_answering_500_forwards_nothing_and_recovers_when_it_accepts(
    init_sentry: InitSentry, sentry: SentryRecorder, segment: SegmentCollector
) -> None:
    integration = init_sentry()
    sentry.answer = (500, {})
    raise_and_capture(user={"id": 1})
    sentry_sdk.flush(timeout=10)
    sentry.answer = (200, {})
    accepted = raise_and_capture(user={"id": 2})
    received, forwarded = outcome(sentry, segment)
    assert received == forwarded == {accepted}
    assert integration.stats()["skipped_dropped_by_sentry"] == 1


def test_events_forwarded_for_an_anonymous_id_or_as_messages_get_receipts_too(
    init_sentry: InitSentry, sentry: SentryRecorder, segment: SegmentCollector
) -> None:
    integration = init_sentry(anonymous_id="tag:anonymous_id", event_types="error,message")
    sentry.answer = (200, {"X-Sentry-Rate-Limits": "60:error:organization:usage_exceeded"})
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("anonymous_id", "anon-1")
        try:
            raise ValueError("declined")
        except ValueError:
            first = sentry_sdk.capture_exception()
        sentry.wait_for_events(1)
        dropped = [sentry_sdk.capture_exception(ValueError("again")) for _ in range(3)]
    with sentry_sdk.new_scope() as scope:
        scope.set_user({"id": "42"})
        dropped += [sentry_sdk.capture_message("down", level="error") for _ in range(2)]
    assert all(dropped)
    received, forwarded = outcome(sentry, segment)
    assert received == forwarded == {first}
    stats = integration.stats()
    # Reported by the transport, not timed out after a minute: the flush above returned.
    assert stats["skipped_dropped_by_sentry"] == 5
    assert stats["delivered"] == 1


def test_what_sentry_drops_is_counted_for_the_events_the_options_forward() -> None:
    error = {"event_id": "e1", "exception": {"values": [{"type": "E"}]}, "user": {"id": 1}}
    anonymous = {**error, "event_id": "e2", "user": {}, "tags": {"anonymous_id": "a"}}
    message = {"event_id": "e3", "level": "error", "message": "down", "user": {"id": 1}}
    default = Forwarder(resolve(write_key="k", environ={}))
    extended = Forwarder(
        resolve(write_key="k", anonymous_id="tag:anonymous_id", event_types="error,message")
    )
    for event, by_default, with_options in (
        (error, True, True),
        (anonymous, False, True),
        (message, False, True),
        ({**message, "level": "warning"}, False, False),
        ({**message, "type": "transaction"}, False, False),
    ):
        assert default.forwardable(event) is by_default
        assert extended.forwardable(event) is with_options
    for event in (error, anonymous, message):
        default.dropped_by_sentry(event)
        extended.dropped_by_sentry(event)
    assert default.stats.snapshot()["skipped_dropped_by_sentry"] == 1
    assert extended.stats.snapshot()["skipped_dropped_by_sentry"] == 3
