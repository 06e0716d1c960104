"""Arbitrary event dicts through the hook: it never raises, never changes the event, and every
message that reaches the loopback collector is strict JSON under 32 KB."""

from __future__ import annotations

import copy
import json
import logging
import uuid
from typing import Any

import pytest
import sentry_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.scope import Scope

from sentry_segment import SegmentIntegration, payload
from sentry_segment.payload import MAX_MESSAGE_BYTES, message_problem
from sentry_segment.testing import SegmentCollector, SentryRecorder

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
    forwarder = integration._forwarder

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(events)
    def check(event: dict[Any, Any]) -> None:
        original = copy.deepcopy(event)
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


@pytest.mark.internal_errors_expected(raises=RuntimeError)
def test_an_event_that_fails_to_build_does_not_stop_the_rest_of_its_batch(
    segment: SegmentCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = payload.track_from_fields

    def failing_for_one_user(fields: payload.ErrorFields, *args: Any) -> payload.Track:
        if fields.user_id == "faulty":
            raise RuntimeError("a bug in building this one")
        return build(fields, *args)

    monkeypatch.setattr(payload, "track_from_fields", failing_for_one_user)
    integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
    for user in ("1", "faulty", "2"):
        event = {"event_id": uuid.uuid4().hex, "user": {"id": user}}
        event["exception"] = {"values": [{"type": "ValueError"}]}
        integration._forwarder.offer(event, "http://public@127.0.0.1:9/1")
    assert integration.flush(timeout=10)
    assert sorted(message["userId"] for message in segment.messages()) == ["1", "2"]
    assert integration.stats()["delivered"] == 2


def test_before_forward_shapes_the_message_and_never_the_sentry_event(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    seen: list[dict[str, Any]] = []

    def before_forward(message: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        seen.append(copy.deepcopy(event))
        message["properties"]["plan"] = event["tags"]["plan"]
        message["event"] = "Checkout Failed"
        event["user"]["id"] = "changed by the hook"  # a copy: Sentry's event stays as it was
        event["tags"].clear()
        return message

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> Any:
        event["tags"]["scrubbed"] = "yes"
        return event

    init_sentry(before_forward=before_forward, before_send=before_send)
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("plan", "pro")
        event_id = raise_and_capture(user={"id": 42})
    sentry_sdk.flush(timeout=5)
    [message] = segment.tracked("Checkout Failed")
    assert message["properties"]["plan"] == "pro"
    assert message["messageId"] == event_id
    [sent] = sentry.wait_for_events(1)
    assert sent["user"]["id"] == 42
    assert sent["tags"] == {"plan": "pro", "scrubbed": "yes"}
    # The hook gets the event as Sentry sent it: after the user's before_send.
    [event] = seen
    assert event["event_id"] == event_id
    assert event["tags"]["scrubbed"] == "yes"


def test_before_forward_returning_none_or_raising_forwards_nothing_and_counts_it(
    init_sentry: InitSentry,
    segment: SegmentCollector,
    sentry: SentryRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def before_forward(message: dict[str, Any], event: dict[str, Any]) -> Any:
        if message["userId"] == "drop":
            return None
        if message["userId"].startswith("fail"):
            raise RuntimeError("a bug in the user's hook")
        return message

    integration = init_sentry(before_forward=before_forward, debug=True)
    with caplog.at_level(logging.DEBUG, logger="sentry_sdk.errors"):
        ids = [raise_and_capture(user={"id": user}) for user in ("drop", "fail-1", "fail-2", "ok")]
        sentry_sdk.flush(timeout=5)
    assert [m["userId"] for m in segment.messages()] == ["ok"]
    assert [e["event_id"] for e in sentry.wait_for_events(4)] == ids
    stats = integration.stats()
    assert stats["dropped_by_before_forward"] == 1
    assert stats["before_forward_errors"] == 2
    assert stats["forwarded"] == stats["delivered"] == 1
    raised = [r for r in caplog.records if "before_forward raised" in r.getMessage()]
    assert len(raised) == 1
    assert raised[0].exc_info is not None


def test_before_forward_may_not_send_what_segment_would_refuse(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    def before_forward(message: dict[str, Any], event: dict[str, Any]) -> Any:
        broken = {
            "nan": {**message, "properties": {"ratio": float("nan")}},
            "huge": {**message, "properties": {"blob": "x" * 40_000}},
            "no-user": {key: value for key, value in message.items() if key != "userId"},
            "not-a-dict": [message],
            "surrogate": {**message, "event": "\ud800"},
        }
        return broken.get(message["userId"], message)

    integration = init_sentry(before_forward=before_forward)
    for user in ("nan", "huge", "no-user", "not-a-dict", "surrogate", "fine"):
        raise_and_capture(user={"id": user})
    sentry_sdk.flush(timeout=5)
    assert [m["userId"] for m in segment.messages()] == ["fine"]
    assert integration.stats()["dropped_invalid_message"] == 5


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_any_value_a_before_forward_returns_never_breaks_sentry_or_reaches_segment_invalid(
    segment: SegmentCollector,
) -> None:
    returned: list[Any] = []

    def before_forward(message: dict[str, Any], event: dict[str, Any]) -> Any:
        return returned[-1](message)

    integration = SegmentIntegration(
        write_key=WRITE_KEY, host=segment.host, rate_limit="off", before_forward=before_forward
    )
    sentry_sdk.init(integrations=[integration])
    forwarder = integration._forwarder
    replacements = st.one_of(
        untrusted_values.map(lambda junk: lambda message: junk),
        st.dictionaries(st.text(max_size=8), untrusted_values, max_size=4).map(
            lambda extra: lambda message: {**message, "properties": extra}
        ),
        untrusted_values.map(lambda junk: lambda message: {**message, "userId": junk}),
        st.just(lambda message: message),
    )

    forwardable = st.builds(
        lambda user: {
            "event_id": uuid.uuid4().hex,
            "user": {"id": user},
            "exception": {"values": [{"type": "ValueError"}]},
        },
        st.text(min_size=1).filter(str.strip),
    )

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(events | forwardable, replacements)
    def check(event: dict[Any, Any], replace: Any) -> None:
        original = copy.deepcopy(event)
        returned.append(replace)
        forwarder.offer(event, "http://public@127.0.0.1:9/1")
        assert integration.flush(timeout=10)
        assert same(event, original)

    try:
        check()
    finally:
        sentry_sdk.get_client().close(timeout=2)
        Scope.get_global_scope().set_client(None)
    stats = integration.stats()
    assert stats["failed"] == 0
    assert stats["delivered"] == stats["forwarded"] > 10
    assert stats["dropped_invalid_message"] > 10
    for batch in segment.batches():
        assert batch.status == 200
        for message in batch.messages:
            assert message_problem(message) is None
