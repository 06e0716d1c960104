"""End to end: real sentry_sdk with its HTTP transport, real Segment client, loopback servers."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import threading
import time
import warnings
from datetime import datetime, timezone
from typing import Any

import pytest
import sentry_sdk
from flask import Flask
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.scope import Scope

from sentry_segment import SegmentIntegration, payload
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
    assert fresh.stats()["forwarded"] == 1


def test_the_clients_options_stay_exactly_as_the_user_gave_them(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> Any:
        return event

    init_sentry()
    raise_and_capture(user={"id": 1})
    assert sentry_sdk.get_client().options["before_send"] is None
    init_sentry(before_send=before_send)
    raise_and_capture(user={"id": 2})
    assert sentry_sdk.get_client().options["before_send"] is before_send
    assert [m["userId"] for m in forwarded_messages(segment)] == ["1", "2"]


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

    for _ in range(12):
        raise_and_capture(user={"id": 1})
    wait_until(lambda: decided() == 12)
    # Decided as Sentry's transport reported each sent: the window counts from then.
    decided_at = time.monotonic()
    assert integration.stats()["forwarded"] == 5
    assert integration.stats()["rate_limited"] == 7

    # Still inside the 1-second span of the first burst (a fixed window may have reopened).
    raise_and_capture(user={"id": 1})
    wait_until(lambda: decided() == 13)
    assert time.monotonic() - decided_at < 0.9, "too slow to observe the window"
    assert integration.stats()["forwarded"] == 5

    time.sleep(max(0.0, 1.1 - (time.monotonic() - decided_at)))
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


@pytest.mark.internal_errors_expected(raises=RuntimeError)
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


def sent_event(sentry: SentryRecorder, integrations: list[Any]) -> dict[str, Any]:
    """The event Sentry receives for one error, from a client with these integrations."""
    sentry.clear()
    sentry_sdk.init(dsn=sentry.dsn(), integrations=integrations, release="same")
    raise_and_capture(KeyError("same"), user={"id": 3, "ip_address": "192.0.2.1"})
    sentry_sdk.flush(timeout=5)
    [event] = sentry.wait_for_events(1)
    sentry_sdk.get_client().close(timeout=2)
    return event


def test_the_event_sentry_receives_is_the_same_with_and_without_the_integration(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    with_integration = sent_event(
        sentry, [SegmentIntegration(write_key=WRITE_KEY, host=segment.host)]
    )
    without = sent_event(sentry, [])
    assert len(segment.messages()) == 1
    assert strip_volatile(with_integration) == strip_volatile(without)
    assert with_integration["user"] == without["user"]
    assert "segment" in with_integration["sdk"]["integrations"]


def test_with_profile_url_only_the_segment_context_of_sentrys_event_changes(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    template = "https://app.segment.com/acme/unify/spaces/prod/explorer/{user_id}"
    integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, profile_url=template)
    with_profile = sent_event(sentry, [integration])
    without = sent_event(sentry, [])
    # Sentry's event after the integration with profile_url is gone: no link from now on.
    with_plain = sent_event(sentry, [SegmentIntegration(write_key=WRITE_KEY, host=segment.host)])
    assert strip_volatile(with_profile) == strip_volatile(without) == strip_volatile(with_plain)
    contexts = with_profile["contexts"]
    assert contexts.pop("segment") == {"profile_url": template.format(user_id="3"), "user_id": "3"}
    assert set(contexts) == set(without["contexts"]) == set(with_plain["contexts"])
    for name in set(contexts) - {"trace"}:
        assert contexts[name] == without["contexts"][name], name


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


def delivered_ids(segment: SegmentCollector) -> list[str]:
    """What Segment has accepted, read at once: no waiting for more to arrive."""
    return sorted(message["messageId"] for message in segment.messages())


def test_flush_and_close_return_once_segment_has_every_event(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry()
    flushed = [raise_and_capture(user={"id": n}) for n in range(3)]
    sentry_sdk.flush(timeout=5)
    assert delivered_ids(segment) == sorted(flushed)
    closed = [raise_and_capture(user={"id": n}) for n in range(3)]
    sentry_sdk.get_client().close(timeout=5)
    assert delivered_ids(segment) == sorted(flushed + closed)


def test_a_serverless_functions_flush_delivers_its_invocations_events(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    from sentry_sdk.integrations.serverless import serverless_function

    init_sentry()

    @serverless_function
    def handler(user_id: int) -> None:
        sentry_sdk.set_user({"id": user_id})
        raise KeyError("invocation failed")

    for invocation in range(3):
        with pytest.raises(KeyError):
            handler(invocation)
        # sentry-sdk's serverless wrapper flushed before the invocation returned.
        assert [m["userId"] for m in segment.messages()][invocation:] == [str(invocation)]
    assert len(sentry.wait_for_events(3)) == 3


def require_the_async_transport() -> None:
    """Skip on a sentry-sdk without the async transport (the early 2.x releases)."""
    import sentry_sdk.transport

    if not hasattr(sentry_sdk.transport, "AsyncHttpTransport"):
        pytest.skip(f"sentry-sdk {sentry_sdk.VERSION} has no async transport")


def test_flush_async_and_close_async_wait_for_segment_with_the_async_transport(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    from sentry_sdk.integrations.asyncio import AsyncioIntegration

    require_the_async_transport()

    async def run() -> tuple[list[str], list[str], list[str]]:
        integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host)
        sentry_sdk.init(
            dsn=sentry.dsn(),
            integrations=[integration, AsyncioIntegration()],
            _experiments={"transport_async": True},
        )
        client = sentry_sdk.get_client()
        assert type(client.transport).__name__ == "AsyncHttpTransport"
        first = [raise_and_capture(user={"id": 1})]
        await client.flush_async(timeout=5)
        after_flush = delivered_ids(segment)
        second = [raise_and_capture(user={"id": 2})]
        await client.close_async(timeout=5)
        assert delivered_ids(segment) == sorted(first + second)
        return first, after_flush, second

    try:
        first, after_flush, _ = asyncio.run(run())
    finally:
        Scope.get_global_scope().set_client(None)
    assert after_flush == first
    assert len(sentry.wait_for_events(2)) == 2


def test_close_with_the_async_transport_forwards_what_sentry_received(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    """sentry-sdk's close() does not flush its async transport: what the loop never ran to
    send, Sentry never receives, and Segment must not receive it either."""
    from sentry_sdk.integrations.asyncio import AsyncioIntegration

    require_the_async_transport()

    async def run() -> list[str]:
        integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host)
        sentry_sdk.init(
            dsn=sentry.dsn(),
            integrations=[integration, AsyncioIntegration()],
            _experiments={"transport_async": True},
        )
        captured = [raise_and_capture(user={"id": n}) for n in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sentry-sdk warns: close() with an async transport
            sentry_sdk.get_client().close(timeout=5)
        received = sorted(event["event_id"] for event in sentry.events())
        assert delivered_ids(segment) == received
        assert set(received) <= set(captured)
        return captured

    try:
        asyncio.run(run())
    finally:
        Scope.get_global_scope().set_client(None)


def test_what_queues_while_a_post_is_in_flight_goes_in_one_batch(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry()
    segment.respond_next(1, 200, delay=0.5)
    first = raise_and_capture(user={"id": "first"})
    wait_until(lambda: segment.delayed_requests_in_progress == 1)
    queued = [raise_and_capture(user={"id": n}) for n in range(30)]
    sentry_sdk.flush(timeout=10)
    batches = [[m["messageId"] for m in batch.messages] for batch in segment.batches()]
    assert batches == [[first], queued]


def test_attached_stack_traces_show_neither_the_integrations_frames_nor_their_locals(
    init_sentry: InitSentry, sentry: SentryRecorder
) -> None:
    init_sentry(attach_stacktrace=True)

    def the_callers_own_function() -> None:
        sentry_sdk.capture_message("hello")

    the_callers_own_function()
    sentry_sdk.flush(timeout=5)
    [event] = sentry.wait_for_events(1)
    frames = event["threads"]["values"][0]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "the_callers_own_function"
    assert not [frame for frame in frames if "sentry_segment" in str(frame.get("module"))]
    assert sentry.dsn() not in json.dumps(event)


def test_a_client_with_the_integration_pickles_and_its_copy_forwards(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(event_name="Pickled Error")
    client = sentry_sdk.get_client()
    copy = pickle.loads(pickle.dumps(client))
    copied = copy.get_integration(SegmentIntegration)
    assert copied is not None
    assert copied is not integration
    assert copied.options == integration.options
    # One scope: a scope forked from it has its client from sentry-sdk 2.x's later releases only.
    with sentry_sdk.new_scope() as scope:
        scope.set_client(copy)
        scope.set_user({"id": "from-the-copy"})
        try:
            raise ValueError("boom")
        except ValueError:
            event_id = sentry_sdk.capture_exception()
    copy.flush(timeout=5)
    assert [m["messageId"] for m in segment.tracked("Pickled Error")] == [event_id]
    assert copied.stats()["delivered"] == 1
    copy.close(timeout=2)


def test_segments_posts_are_invisible_to_sentrys_http_instrumentation(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # sentry-sdk's stdlib integration adds trace headers, spans and breadcrumbs to every
    # request it sees; its own transport is exempt, and so must Segment's client be.
    init_sentry(traces_sample_rate=1.0, release="r-visible")
    with start_transaction("checkout"):
        raise_and_capture(user={"id": 1})
        sentry_sdk.flush(timeout=5)
        sentry_sdk.set_user({"id": 2})
        try:
            raise KeyError("second")
        except KeyError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
    for batch in segment.batches():
        headers = {name.lower() for name in batch.headers}
        assert "sentry-trace" not in headers
        assert "baggage" not in headers
        assert "traceparent" not in headers
    errors = sentry.wait_for_events(2)
    # The transaction (sentry-sdk 2) or its streamed root span (3), which the posts were under.
    wait_until(lambda: "checkout" in str(sentry.transactions() + sentry.spans()))
    # (Sentry's own posts to a loopback DSN are seen: is_sentry_url ignores the port.)
    assert not [span for span in sentry.spans() if segment.host in str(span)]
    for error in errors:
        assert segment.host not in json.dumps(error.get("breadcrumbs", {}))


def test_the_integrations_threads_end_when_idle_and_at_flush(
    init_sentry: InitSentry, segment: SegmentCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentry_segment import threads

    monkeypatch.setattr(threads, "IDLE_SECONDS", 1.0)

    def ours() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("sentry-segment"))

    init_sentry()
    wait_until(lambda: not ours())
    raise_and_capture(user={"id": 1})
    segment.wait_for_messages(1)
    assert ours() == ["sentry-segment", "sentry-segment-delivery"]
    wait_until(lambda: not ours())
    # A flush also ends them: a server that forks from C right after the application's import
    # flushed (uWSGI's master) must find none of them holding the GIL.
    second = raise_and_capture(user={"id": 2})
    sentry_sdk.flush(timeout=5)
    assert ours() == []
    assert second in delivered_ids(segment)


def test_include_adds_tags_the_message_whether_it_was_handled_and_a_link_to_sentry(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry(
        project=4507,
        include="tags,exception_message,handled,sentry_url",
        sentry_org="acme",
        sentry_web_url="https://sentry.example.com",
    )
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("plan", "pro")
        scope.set_tag("beta", True)
        handled_id = raise_and_capture(KeyError("cart 7 is empty"), user={"id": 1})

    app = Flask(__name__)

    @app.route("/checkout")
    def checkout() -> str:
        sentry_sdk.set_user({"id": 2})
        raise ValueError("card declined")

    assert app.test_client().get("/checkout").status_code == 500
    sentry_sdk.flush(timeout=5)
    handled, unhandled = segment.messages()
    assert handled["messageId"] == handled_id
    assert handled["properties"]["tags"] == {"plan": "pro", "beta": "true"}
    assert handled["properties"]["exceptionMessage"] == "'cart 7 is empty'"
    assert handled["properties"]["handled"] is True
    assert handled["properties"]["sentryUrl"] == (
        f"https://sentry.example.com/organizations/acme/issues/?project=4507&query={handled_id}"
    )
    assert unhandled["properties"]["handled"] is False
    assert unhandled["properties"]["exceptionMessage"] == "card declined"
    [_, sent] = sentry.wait_for_events(2)
    assert sent["exception"]["values"][-1]["mechanism"]["handled"] is False


def test_without_include_the_message_keeps_the_forwarders_schema(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry()
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("plan", "pro")
        raise_and_capture(user={"id": 1})
    [message] = forwarded_messages(segment)
    assert set(message["properties"]) == {
        "environment", "eventId", "exceptionType", "release", "transaction", "level",
        "userAgent", "page",
    }  # fmt: skip


def test_without_a_write_key_it_forwards_nothing_counts_it_and_says_so_once(
    segment: SegmentCollector, sentry: SentryRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    integration = SegmentIntegration(host=segment.host)  # no write key anywhere
    sentry_sdk.init(dsn=sentry.dsn(), integrations=[integration], debug=True)
    try:
        with caplog.at_level(logging.DEBUG, logger="sentry_sdk.errors"):
            for user in range(3):
                raise_and_capture(user={"id": user})
            sentry_sdk.flush(timeout=5)
    finally:
        sentry_sdk.get_client().close(timeout=2)
        Scope.get_global_scope().set_client(None)
    assert len(sentry.wait_for_events(3)) == 3
    assert segment.batches() == []
    assert integration.stats()["skipped_no_write_key"] == 3
    lines = [r.getMessage() for r in caplog.records if "no write key" in r.getMessage()]
    assert lines == [
        "sentry-segment: no write key (SENTRY_SEGMENT_WRITE_KEY), so nothing is forwarded "
        "(counted in skipped_no_write_key)"
    ]


def test_misspelt_variables_and_a_missing_dsn_are_each_logged_once(
    segment: SegmentCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_SEGMENT_REGOIN", "eu")
    integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host)
    sentry_sdk.init(integrations=[integration], debug=True)  # no DSN: Sentry sends nothing
    try:
        with caplog.at_level(logging.DEBUG, logger="sentry_sdk.errors"):
            for user in range(3):
                raise_and_capture(user={"id": user})
    finally:
        sentry_sdk.get_client().close(timeout=2)
        Scope.get_global_scope().set_client(None)
    ours = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sentry-segment")]
    assert (
        ours.count(
            "sentry-segment: SENTRY_SEGMENT_REGOIN is not a sentry-segment setting; "
            "did you mean SENTRY_SEGMENT_REGION?"
        )
        == 1
    )
    assert len([line for line in ours if "has no DSN" in line]) == 1
    assert integration.stats()["skipped_not_sent"] == 3


def test_under_load_what_queues_within_the_post_interval_goes_in_one_post(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    init_sentry()
    raise_and_capture(user={"id": "first"})
    segment.wait_for_messages(1)
    # Just after a post, errors 30 ms apart (each handed to Segment's queue on its own, the
    # worker gathering 20 ms): a quiet process would post each at once, a busy one gathers.
    later = []
    for number in range(5):
        later.append(raise_and_capture(user={"id": number}))
        time.sleep(0.03)
    segment.wait_for_messages(6)
    batches = [[m["messageId"] for m in batch.messages] for batch in segment.batches()]
    assert sorted(id_ for batch in batches[1:] for id_ in batch) == sorted(later)
    assert len(batches) <= 3, batches
