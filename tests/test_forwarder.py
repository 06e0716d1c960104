"""Arbitrary event dicts through the hook: it never raises, never changes the event, and every
message that reaches the loopback collector is strict JSON under 32 KB."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import sentry_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.scope import Scope

from sentry_segment import SegmentIntegration, payload
from sentry_segment.integration import SentEventRecorder
from sentry_segment.payload import MAX_MESSAGE_BYTES
from sentry_segment.testing import SegmentCollector

from .conftest import WRITE_KEY, InitSentry, raise_and_capture
from .support import same, start_transaction, untrusted_values

values = untrusted_values
users = st.fixed_dictionaries(
    {"id": st.integers() | st.text(min_size=1) | values},
    optional={"ip_address": values, "email": values},
)
exceptions = st.fixed_dictionaries(
    {
        "values": st.lists(
            st.dictionaries(st.just("type"), values, max_size=1), min_size=1, max_size=3
        )
    }
)
events = st.fixed_dictionaries(
    {"exception": exceptions | exceptions | values, "user": users | users | values},
    optional={
        "event_id": values,
        "timestamp": values,
        "request": st.dictionaries(
            st.sampled_from(["url", "method", "query_string", "headers"]), values
        )
        | values,
        "release": values,
        "environment": values,
        "transaction": values,
        "level": values,
        7: values,
    },
)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_any_event_through_the_hook(segment: SegmentCollector) -> None:
    integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
    sentry_sdk.init(integrations=[integration])
    recorder = SentEventRecorder(None)
    forwarder = integration._forwarder

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(events)
    def check(event: dict[Any, Any]) -> None:
        original = copy.deepcopy(event)
        assert recorder(event, {}) is event
        forwarder.offer(event, "http://public@127.0.0.1:9/1")
        assert same(event, original)

    try:
        check()
        assert integration.flush(timeout=20)
    finally:
        sentry_sdk.get_client().close(timeout=2)
        Scope.get_global_scope().set_client(None)
    stats = integration.stats()
    assert stats["forwarded"] > 50
    assert stats["failed"] == 0
    assert stats["delivered"] == stats["forwarded"]
    for batch in segment.batches():
        assert batch.status == 200
        for message in batch.messages:
            encoded = json.dumps(message, allow_nan=False)
            assert len(encoded.encode()) < MAX_MESSAGE_BYTES
            assert message["userId"]


TRACE_WRITE_KEY = "wk_TraceTest_0123456789abcdef"


def test_segment_posts_do_not_join_the_trace_of_the_capture_that_started_the_worker(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    # A write key of its own, so that its Segment client (shared per key and host) and consumer
    # thread are made by this worker: before sentry-sdk 2.26.1 a thread shares its parent's
    # scopes instead of forking them, and a client another test made from the test's thread
    # would see this test's transaction.
    integration = init_sentry(traces_sample_rate=1.0, write_key=TRACE_WRITE_KEY)
    with start_transaction("checkout") as transaction:
        raise_and_capture(user={"id": 1})
        assert integration.flush(timeout=10)
        trace_id = transaction.trace_id
    [batch] = segment.batches()
    headers = {name.lower(): value for name, value in batch.headers.items()}
    assert batch.messages
    assert trace_id not in headers.get("sentry-trace", "")
    assert trace_id not in headers.get("baggage", "")
    assert "checkout" not in headers.get("baggage", "")


def test_an_event_that_fails_to_build_does_not_stop_the_rest_of_its_batch(
    segment: SegmentCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = payload.track_from_fields

    def failing_for_one_user(fields: payload.ErrorFields, event_name: str) -> payload.Track:
        if fields.user_id == "faulty":
            raise RuntimeError("a bug in building this one")
        return build(fields, event_name)

    monkeypatch.setattr(payload, "track_from_fields", failing_for_one_user)
    integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
    for user in ("1", "faulty", "2"):
        event = {"event_id": uuid.uuid4().hex, "user": {"id": user}}
        event["exception"] = {"values": [{"type": "ValueError"}]}
        integration._forwarder.offer(event, "http://public@127.0.0.1:9/1")
    assert integration.flush(timeout=10)
    assert sorted(message["userId"] for message in segment.messages()) == ["1", "2"]
    assert integration.stats()["delivered"] == 2
