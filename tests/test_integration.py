"""End to end: real sentry_sdk with its HTTP transport, real Segment client, loopback servers."""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone
from typing import Any

import pytest
import sentry_sdk
from flask import Flask
from sentry_sdk.integrations.logging import LoggingIntegration

from sentry_segment import SegmentIntegration, payload
from sentry_segment.integration import SentEventRecorder
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import WRITE_KEY, InitSentry, raise_and_capture
from .support import start_transaction, user_info_options

OTHER_WRITE_KEY = "wk_OtherProjectKey_abcdef0123"


def forwarded_messages(segment: SegmentCollector) -> list[dict[str, Any]]:
    assert sentry_sdk.flush(timeout=5) is None
    return segment.messages()


def test_forwards_an_error_with_a_user_as_one_track_call(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry(environment="staging", release="a2def1", **user_info_options())

    event_id = raise_and_capture(
        ValueError("boom"), user={"id": 42, "email": "a@example.com", "ip_address": "192.0.2.7"}
    )
    messages = forwarded_messages(segment)

    [sent] = sentry.wait_for_events(1)
    [batch] = segment.batches()
    assert batch.write_key == WRITE_KEY
    assert batch.body["writeKey"] == WRITE_KEY
    [message] = messages
    assert message == {
        "type": "track",
        "event": "Error Captured",
        "userId": "42",
        "anonymousId": None,
        "messageId": event_id,
        "integrations": {},
        "timestamp": message["timestamp"],
        "properties": {
            "environment": "staging",
            "eventId": event_id,
            "exceptionType": "ValueError",
            "release": "a2def1",
            "transaction": "",
            "level": "error",
            "userAgent": "",
            "page": {"url": "", "method": "", "search": "", "referer": ""},
        },
        "context": {
            "ip": "192.0.2.7",
            "userAgent": "",
            "page": {"url": "", "path": "", "search": "", "referrer": ""},
            "library": {
                "name": "analytics-python",
                "version": message["context"]["library"]["version"],
            },
        },
    }
    assert sent["event_id"] == event_id
    assert sent["user"]["ip_address"] == "192.0.2.7"
    sent_at = datetime.fromisoformat(sent["timestamp"].replace("Z", "+00:00"))
    forwarded_at = datetime.fromisoformat(message["timestamp"])
    assert forwarded_at.tzinfo is not None
    assert abs((forwarded_at - sent_at).total_seconds()) < 0.001
    assert integration.stats()["forwarded"] == 1
    assert integration.stats()["delivered"] == 1


def test_request_fields_come_from_a_real_flask_request(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry()
    app = Flask(__name__)

    @app.route("/users/<int:user_id>/orders")
    def orders(user_id: int) -> str:
        sentry_sdk.set_user({"id": user_id})
        raise KeyError("missing order")

    client = app.test_client()
    response = client.get(
        "/users/7/orders?page=2&sort=asc",
        headers={"User-Agent": "Mozilla/5.0 (X11)", "Referer": "https://shop.example/cart"},
    )
    assert response.status_code == 500

    [message] = forwarded_messages(segment)
    [sent] = sentry.wait_for_events(1)
    properties, context = message["properties"], message["context"]
    assert message["userId"] == "7"
    assert properties["exceptionType"] == "KeyError"
    assert properties["transaction"] == sent["transaction"] != ""
    assert properties["userAgent"] == "Mozilla/5.0 (X11)"
    assert properties["page"] == {
        "url": "http://localhost/users/7/orders",
        "method": "GET",
        "search": "?page=2&sort=asc",
        "referer": "https://shop.example/cart",
    }
    assert context["userAgent"] == "Mozilla/5.0 (X11)"
    assert context["page"] == {
        "url": "http://localhost/users/7/orders",
        "path": "/users/7/orders",
        "search": "?page=2&sort=asc",
        "referrer": "https://shop.example/cart",
    }


def test_exception_type_is_the_root_cause_of_a_chain(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry()

    def fail() -> None:
        try:
            raise KeyError("root cause")
        except KeyError as error:
            raise RuntimeError("outer") from error

    with sentry_sdk.new_scope() as scope:
        scope.set_user({"id": "u-1"})
        try:
            fail()
        except RuntimeError:
            sentry_sdk.capture_exception()

    [message] = forwarded_messages(segment)
    [sent] = sentry.wait_for_events(1)
    assert [value["type"] for value in sent["exception"]["values"]] == ["KeyError", "RuntimeError"]
    assert message["properties"]["exceptionType"] == "KeyError"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"id": 0}, "0"),
        ({"id": "abc-123"}, "abc-123"),
        ({"id": 12.5}, "12.5"),
        ({"id": ""}, None),
        ({"id": "   "}, None),
        ({"id": None}, None),
        ({"email": "a@example.com", "username": "a", "ip_address": "192.0.2.1"}, None),
        (None, None),
    ],
)
def test_only_events_with_a_user_id_are_forwarded(
    init_sentry: InitSentry,
    segment: SegmentCollector,
    sentry: SentryRecorder,
    user: Any,
    expected: Any,
) -> None:
    integration = init_sentry()
    raise_and_capture(user=user)
    messages = forwarded_messages(segment)
    sentry.wait_for_events(1)
    assert [m["userId"] for m in messages] == ([expected] if expected is not None else [])
    assert integration.stats()["skipped_no_user"] == (0 if expected is not None else 1)


def test_events_without_an_exception_are_not_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # sentry-sdk 3 sends no event for a log record unless event_level is set.
    errors_as_events = LoggingIntegration(event_level=logging.ERROR)
    integration = init_sentry(traces_sample_rate=1.0, integrations=[errors_as_events])
    sentry_sdk.set_user({"id": 1})
    sentry_sdk.capture_message("a message")
    logging.getLogger("tests.app").error("logged without exc_info")
    with start_transaction("a transaction"):
        pass

    assert forwarded_messages(segment) == []
    assert len(sentry.wait_for_events(2)) == 2
    assert integration.stats()["skipped_not_error"] == 2
    assert integration.stats()["forwarded"] == 0


def test_a_logged_exception_is_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry(integrations=[LoggingIntegration(event_level=logging.ERROR)])
    sentry_sdk.set_user({"id": 5})
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("tests.app").exception("lookup failed")

    [message] = forwarded_messages(segment)
    assert message["properties"]["exceptionType"] == "KeyError"


def test_user_before_send_scrubbing_applies_and_its_drop_is_respected(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> Any:
        if str(event["user"]["id"]) == "drop-me":
            return None
        event["user"]["id"] = "hashed-" + str(event["user"]["id"])
        event["environment"] = "scrubbed"
        return event

    integration = init_sentry(before_send=before_send)
    kept = raise_and_capture(user={"id": 7})
    raise_and_capture(user={"id": "drop-me"})

    [message] = forwarded_messages(segment)
    [sent] = sentry.wait_for_events(1)
    assert sent["event_id"] == kept == message["messageId"]
    assert sent["user"]["id"] == message["userId"] == "hashed-7"
    assert message["properties"]["environment"] == "scrubbed"
    assert integration.stats()["skipped_not_sent"] == 1


def test_events_sentry_does_not_send_are_not_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry(sample_rate=0.0)
    raise_and_capture(user={"id": 1})
    assert forwarded_messages(segment) == []
    assert integration.stats()["skipped_not_sent"] == 1

    sentry_sdk.get_client().close(timeout=2)
    integration = init_sentry(ignore_errors=[ZeroDivisionError])
    raise_and_capture(ZeroDivisionError("ignored"), user={"id": 1})
    raise_and_capture(ValueError("sent"), user={"id": 1})
    [message] = forwarded_messages(segment)
    [sent] = sentry.wait_for_events(1)
    assert message["messageId"] == sent["event_id"]
    assert message["properties"]["exceptionType"] == "ValueError"


def test_error_sampler_decides_what_is_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    def error_sampler(event: dict[str, Any], hint: dict[str, Any]) -> float:
        return 1.0 if isinstance(hint["exc_info"][1], KeyError) else 0.0

    init_sentry(error_sampler=error_sampler)
    raise_and_capture(ValueError("sampled out"), user={"id": 1})
    kept = raise_and_capture(KeyError("kept"), user={"id": 1})
    assert [m["messageId"] for m in forwarded_messages(segment)] == [kept]
    assert [e["event_id"] for e in sentry.wait_for_events(1)] == [kept]


def test_reinit_neither_double_wraps_nor_double_forwards(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry()
    first = raise_and_capture(user={"id": 1})
    sentry_sdk.flush(timeout=5)
    init_sentry(integration=integration)
    second = raise_and_capture(user={"id": 1})
    fresh = init_sentry()
    third = raise_and_capture(user={"id": 1})

    messages = forwarded_messages(segment)
    assert sorted(m["messageId"] for m in messages) == sorted([first, second, third])
    before_send = sentry_sdk.get_client().options["before_send"]
    assert isinstance(before_send, SentEventRecorder)
    assert not isinstance(before_send.__wrapped__, SentEventRecorder)
    assert fresh.stats()["forwarded"] == 1


def test_two_clients_in_one_process_forward_each_event_once_to_their_own_key(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry()
    other_integration = SegmentIntegration(write_key=OTHER_WRITE_KEY, host=segment.host)
    other = sentry_sdk.Client(dsn=sentry.dsn(2), integrations=[other_integration])

    from_default = raise_and_capture(user={"id": 1})
    # Captured on the scope that holds the client: before sentry-sdk 2.20 a nested new_scope()
    # (as raise_and_capture opens) did not copy the client and captured with the default one.
    with sentry_sdk.new_scope() as scope:
        scope.set_client(other)
        scope.set_user({"id": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            from_other = sentry_sdk.capture_exception()
    other.flush(timeout=5)

    by_key = {
        message["messageId"]: batch.write_key
        for batch in segment.batches()
        for message in batch.messages
    }
    forwarded_messages(segment)
    by_key.update({m["messageId"]: b.write_key for b in segment.batches() for m in b.messages})
    assert by_key == {from_default: WRITE_KEY, from_other: OTHER_WRITE_KEY}
    assert len(segment.messages()) == 2
    other.close(timeout=2)


def test_project_overrides_disable_a_project_or_route_it_to_another_key(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    projects = {"2": {"enabled": False}, "3": {"write_key": OTHER_WRITE_KEY}}
    integration = init_sentry(project=2, projects=projects)
    raise_and_capture(user={"id": 1})
    assert forwarded_messages(segment) == []
    assert integration.stats()["skipped_disabled"] == 1

    sentry_sdk.get_client().close(timeout=2)
    init_sentry(project=3, projects=projects)
    routed = raise_and_capture(user={"id": 1})
    forwarded_messages(segment)
    [batch] = segment.batches()
    assert batch.write_key == OTHER_WRITE_KEY
    assert [m["messageId"] for m in batch.messages] == [routed]


def test_disabled_integration_forwards_nothing(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry(enabled=False)
    raise_and_capture(user={"id": 1})
    assert forwarded_messages(segment) == []
    assert len(sentry.wait_for_events(1)) == 1
    assert integration.stats()["skipped_disabled"] == 1


def test_custom_event_name(init_sentry: InitSentry, segment: SegmentCollector) -> None:
    init_sentry(event_name="Backend Error")
    raise_and_capture(user={"id": 1})
    [message] = forwarded_messages(segment)
    assert message["event"] == "Backend Error"


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_rate_limit_is_a_moving_window_per_organization(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(rate_limit="5/second")

    def decided() -> int:
        stats = integration.stats()
        return stats["forwarded"] + stats["rate_limited"]

    first_burst = time.monotonic()
    for _ in range(12):
        raise_and_capture(user={"id": 1})
    wait_until(lambda: decided() == 12)
    assert integration.stats()["forwarded"] == 5
    assert integration.stats()["rate_limited"] == 7

    # Still inside the 1-second span of the first burst: a fixed window could reopen here.
    time.sleep(max(0.0, 0.6 - (time.monotonic() - first_burst)))
    raise_and_capture(user={"id": 1})
    wait_until(lambda: decided() == 13)
    assert time.monotonic() - first_burst < 1.0, "too slow to observe the window"
    assert integration.stats()["forwarded"] == 5

    time.sleep(max(0.0, 1.1 - (time.monotonic() - first_burst)))
    for _ in range(6):
        raise_and_capture(user={"id": 1})
    assert len(forwarded_messages(segment)) == 10
    assert integration.stats()["rate_limited"] == 9


def test_skipped_events_use_no_rate_limit_budget(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(rate_limit="2/second")
    for _ in range(5):
        raise_and_capture(user=None)
    raise_and_capture(user={"id": 1})
    raise_and_capture(user={"id": 2})
    assert [m["userId"] for m in forwarded_messages(segment)] == ["1", "2"]
    assert integration.stats()["rate_limited"] == 0


def test_a_failure_inside_the_integration_never_touches_the_sentry_event(
    init_sentry: InitSentry,
    segment: SegmentCollector,
    sentry: SentryRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    init_sentry(release="r1")
    baseline_id = raise_and_capture(KeyError("same"), user={"id": 9})
    forwarded_messages(segment)
    [baseline] = sentry.wait_for_events(1)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("bug in sentry-segment")

    monkeypatch.setattr(payload, "user_id", broken)
    monkeypatch.setattr(payload, "build_track", broken)
    failing_id = raise_and_capture(KeyError("same"), user={"id": 9})
    sentry_sdk.flush(timeout=5)
    events = sentry.wait_for_events(2)
    assert [e["event_id"] for e in events] == [baseline_id, failing_id]
    assert strip_volatile(events[1]) == strip_volatile(baseline)
    assert len(segment.messages()) == 1


def strip_volatile(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs between two captures of the same error."""
    volatile = {"event_id", "timestamp", "contexts", "breadcrumbs", "extra"}
    stripped = {key: value for key, value in event.items() if key not in volatile}
    # Sentry lists the enabled integrations; with ours on, "segment" is among them.
    stripped["sdk"] = {**stripped["sdk"], "integrations": None}
    for value in stripped.get("exception", {}).get("values", []):
        for frame in value.get("stacktrace", {}).get("frames", []):
            frame.pop("lineno", None)
            frame.pop("context_line", None)
            frame.pop("pre_context", None)
            frame.pop("post_context", None)
            frame.pop("vars", None)
    return stripped


def test_the_event_sentry_receives_is_the_same_with_and_without_the_integration(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    def capture(integrations: list[Any]) -> dict[str, Any]:
        sentry.clear()
        sentry_sdk.init(dsn=sentry.dsn(), integrations=integrations, release="same")
        raise_and_capture(KeyError("same"), user={"id": 3, "ip_address": "192.0.2.1"})
        sentry_sdk.flush(timeout=5)
        [event] = sentry.wait_for_events(1)
        sentry_sdk.get_client().close(timeout=2)
        return event

    with_integration = capture([SegmentIntegration(write_key=WRITE_KEY, host=segment.host)])
    without = capture([])
    assert len(segment.messages()) == 1
    assert strip_volatile(with_integration) == strip_volatile(without)
    assert with_integration["user"] == without["user"]
    assert "segment" in with_integration["sdk"]["integrations"]


def test_repr_and_stats(init_sentry: InitSentry) -> None:
    integration = init_sentry()
    assert WRITE_KEY not in repr(integration)
    assert WRITE_KEY not in str(integration.options)
    assert set(integration.stats()) >= {
        "forwarded",
        "delivered",
        "failed",
        "rate_limited",
        "skipped_no_user",
        "skipped_not_error",
        "skipped_disabled",
        "dropped_queue_full",
    }
    assert set(integration.stats().values()) == {0}


def test_timestamps_are_timezone_aware_utc(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry()
    raise_and_capture(user={"id": 1})
    [message] = forwarded_messages(segment)
    stamp = datetime.fromisoformat(message["timestamp"])
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)


def test_an_unreachable_rate_limit_storage_never_stops_forwarding(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"redis://127.0.0.1:{probe.getsockname()[1]}"
    integration = init_sentry(rate_limit="100/second", rate_limit_storage=nowhere)
    event_ids = [raise_and_capture(user={"id": n}) for n in range(5)]
    assert sorted(m["messageId"] for m in forwarded_messages(segment)) == sorted(event_ids)
    assert integration.stats()["rate_limit_fallback"] == 5
    assert len(sentry.wait_for_events(5)) == 5
