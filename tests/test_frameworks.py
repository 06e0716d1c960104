"""End to end through real Flask, Django and FastAPI requests: anonymous IDs, message events,
stack frames and the link from Sentry's event to Segment's profile (each off by default)."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import pytest
import sentry_sdk
from flask import Flask
from jsonschema import Draft7Validator
from sentry_sdk.integrations.logging import LoggingIntegration

from sentry_segment.config import resolve
from sentry_segment.schema import message_schema
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import InitSentry, raise_and_capture
from .support import http_status, pii_options, start_transaction, uvicorn_serving

# What analytics.js stores: the ID JSON-quoted, then URL-encoded.
ANONYMOUS_ID = "7b1c1c8e-5d2a-4f0e-9a61-3c2f8f0d4e21"
AJS_COOKIE = f"ajs_anonymous_id=%22{ANONYMOUS_ID}%22"
PROFILE_URL = "https://app.segment.com/acme/unify/spaces/prod/explorer/{user_id}?a={anonymous_id}"


def forwarded(segment: SegmentCollector) -> list[dict[str, Any]]:
    # Within the flush, not after the 60 s a message waits for a receipt Sentry never gives.
    assert sentry_sdk.get_client().flush(timeout=5) is None
    return segment.messages()


def valid(message: dict[str, Any], **options: Any) -> dict[str, Any]:
    """The message, once held to the schema `sentry-segment schema` prints for these options."""
    schema = message_schema(resolve(write_key="k", environ={}, **options).shape)
    assert [error.message for error in Draft7Validator(schema).iter_errors(message)] == []
    return message


# Flask -------------------------------------------------------------------------------------


def flask_app(view: Callable[[], Any]) -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/checkout", "checkout", view)
    return app


def signed_out(view: Callable[[], Any], cookie: str) -> Any:
    """A request to the view with the browser's cookie (name=value)."""
    client = flask_app(view).test_client()
    name, _, value = cookie.partition("=")
    client.set_cookie(name, value)
    return client.get("/checkout")


def declined() -> str:
    raise ValueError("the card was declined")


def test_a_signed_out_flask_request_with_analytics_js_cookie_is_forwarded_with_its_anonymous_id(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    options = {"anonymous_id": "cookie:ajs_anonymous_id"}
    integration = init_sentry(**pii_options(), **options)
    assert signed_out(declined, AJS_COOKIE).status_code == 500
    assert flask_app(declined).test_client().get("/checkout").status_code == 500  # neither ID
    [message] = forwarded(segment)
    valid(message, **options)
    [with_cookie, _] = sentry.wait_for_events(2)
    assert with_cookie["request"]["cookies"]["ajs_anonymous_id"] == f"%22{ANONYMOUS_ID}%22"
    assert (message["userId"], message["anonymousId"]) == (None, ANONYMOUS_ID)
    assert message["messageId"] == with_cookie["event_id"]
    assert message["properties"]["page"]["url"].endswith("/checkout")
    stats = integration.stats()
    assert (stats["delivered"], stats["skipped_no_user"]) == (1, 1)
    assert stats["skipped_dropped_by_sentry"] == 0


def test_a_tag_source_and_a_signed_in_user_send_both_ids(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    options = {"anonymous_id": "cookie:ajs_anonymous_id,tag:anonymous_id"}
    init_sentry(**pii_options(), **options)

    def tagged() -> str:
        sentry_sdk.set_tag("anonymous_id", "anon-from-tag")
        raise ValueError("declined")

    def signed_in() -> str:
        sentry_sdk.set_user({"id": "42"})
        raise ValueError("declined")

    flask_app(tagged).test_client().get("/checkout")
    signed_out(signed_in, AJS_COOKIE)
    messages = forwarded(segment)
    identities = sorted((m["userId"] or "", m["anonymousId"]) for m in messages)
    assert identities == [("", "anon-from-tag"), ("42", ANONYMOUS_ID)]
    for message in messages:
        valid(message, **options)


def test_without_the_option_a_signed_out_request_is_skipped_as_before(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(**pii_options())
    signed_out(declined, AJS_COOKIE)
    assert forwarded(segment) == []
    assert integration.stats()["skipped_no_user"] == 1


def test_an_anonymous_id_sentry_would_filter_is_not_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(**pii_options(), anonymous_id="cookie:session_token,user:card")

    def card() -> str:
        sentry_sdk.set_user({"card": "4111111111111111"})
        raise ValueError("declined")

    signed_out(declined, "session_token=abc")
    flask_app(card).test_client().get("/checkout")
    # Sentry's server stores both as [Filtered]: there is no one to attribute the error to.
    assert forwarded(segment) == []
    assert integration.stats()["skipped_no_user"] == 2


def test_stack_frames_list_the_raising_flask_view(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry(include="stacktrace", in_app_include=[__name__])

    def checkout() -> str:
        sentry_sdk.set_user({"id": "42"})
        return charge()

    def charge() -> str:
        raise ValueError("card 4111111111111111 declined")

    flask_app(checkout).test_client().get("/checkout")
    [message] = forwarded(segment)
    valid(message, include="stacktrace")
    [sent] = sentry.wait_for_events(1)
    frames = sent["exception"]["values"][0]["stacktrace"]["frames"]
    raising = frames[-1]
    assert raising["function"].endswith("charge")
    stacktrace = message["properties"]["stacktrace"]
    assert stacktrace[-1] == (
        f"{raising['filename']} in {raising['function']} at line {raising['lineno']}"
    )
    assert [line.split(" in ")[1].split(" at ")[0] for line in stacktrace][-2:] == [
        frame["function"] for frame in frames[-2:]
    ]
    assert len(stacktrace) == sum(frame.get("in_app") is True for frame in frames)
    assert "4111111111111111" not in json.dumps(message)


def test_message_events_of_level_error_are_forwarded_with_event_types_message(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    options = {"event_types": "error,message"}
    # Log records at ERROR are events on every release (sentry-sdk 3 needs event_level).
    errors_as_events = LoggingIntegration(event_level=logging.ERROR)
    integration = init_sentry(traces_sample_rate=1.0, integrations=[errors_as_events], **options)
    sentry_sdk.set_user({"id": "42"})
    error_id = sentry_sdk.capture_message("the payment provider is down", level="error")
    sentry_sdk.capture_message("retrying", level="info")
    sentry_sdk.capture_message("slow", level="warning")
    logging.getLogger("shop").error("checkout failed for order %s", 7)
    fatal_id = sentry_sdk.capture_message("out of stock", level="fatal")
    with start_transaction("checkout"):
        pass
    exception_id = raise_and_capture(user={"id": "42"})
    messages = forwarded(segment)
    sent = sentry.wait_for_events(6)
    [logged] = [event for event in sent if "logentry" in event]
    by_id = {message["messageId"]: message for message in messages}
    assert set(by_id) == {error_id, logged["event_id"], fatal_id, exception_id}
    levels = {
        key: (m["properties"]["exceptionType"], m["properties"]["level"])
        for key, m in by_id.items()
    }
    assert levels == {
        error_id: ("", "error"),
        logged["event_id"]: ("", "error"),
        fatal_id: ("", "fatal"),
        exception_id: ("ValueError", "error"),
    }
    for message in messages:
        valid(message, **options)
    stats = integration.stats()
    assert stats["skipped_not_error"] == 2  # the info and the warning message
    assert stats["skipped_dropped_by_sentry"] == 0


def test_by_default_message_events_are_not_forwarded(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry()
    sentry_sdk.set_user({"id": "42"})
    sentry_sdk.capture_message("the payment provider is down", level="error")
    assert forwarded(segment) == []
    assert integration.stats()["skipped_not_error"] == 1


def test_profile_url_links_sentrys_event_to_the_segment_profile(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry(profile_url=PROFILE_URL, anonymous_id="tag:anonymous_id")

    def checkout() -> str:
        sentry_sdk.set_user({"id": "a/b 42"})
        sentry_sdk.set_tag("anonymous_id", "anon 1")
        raise ValueError("declined")

    flask_app(checkout).test_client().get("/checkout")
    flask_app(declined).test_client().get("/checkout")  # no ID: no link
    sentry_sdk.flush(timeout=5)
    linked, unlinked = sorted(
        sentry.wait_for_events(2), key=lambda event: "segment" not in event["contexts"]
    )
    assert linked["contexts"]["segment"] == {
        "profile_url": "https://app.segment.com/acme/unify/spaces/prod/explorer/a%2Fb%2042"
        "?a=anon%201",
        "user_id": "a/b 42",
        "anonymous_id": "anon 1",
    }
    assert "segment" not in unlinked["contexts"]
    [message] = segment.messages()
    assert message["userId"] == "a/b 42"


def test_before_send_sees_the_profile_url_and_can_remove_it(
    init_sentry: InitSentry, sentry: SentryRecorder
) -> None:
    seen: list[Any] = []

    def before_send(event: dict[str, Any], hint: Any) -> dict[str, Any]:
        seen.append(event["contexts"].pop("segment", None))
        return event

    init_sentry(profile_url=PROFILE_URL, before_send=before_send)
    raise_and_capture(user={"id": 7})
    sentry_sdk.flush(timeout=5)
    [sent] = sentry.wait_for_events(1)
    assert seen[0]["profile_url"].endswith("/explorer/7?a=")
    assert "segment" not in sent["contexts"]


def test_without_profile_url_sentrys_event_has_no_segment_context(
    init_sentry: InitSentry, sentry: SentryRecorder
) -> None:
    init_sentry(anonymous_id="tag:anonymous_id")
    raise_and_capture(user={"id": 7})
    sentry_sdk.flush(timeout=5)
    [sent] = sentry.wait_for_events(1)
    assert "segment" not in sent["contexts"]


# Django ------------------------------------------------------------------------------------

urlpatterns: list[Any] = []


def _django_checkout(request: Any) -> Any:
    if "user" in request.GET:
        sentry_sdk.set_user({"id": request.GET["user"]})
    if "log" in request.GET:
        logging.getLogger("shop").error("the payment provider is down")
    return _django_charge()


def _django_charge() -> Any:
    raise ValueError("declined")


def django_client() -> Any:
    """A WSGI client of a one-view Django site, through Django's WSGIHandler as a server
    runs it (Django's test Client skips the WSGI handler Sentry wraps to isolate requests)."""
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.urls import path
    from werkzeug.test import Client

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["localhost"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="test-only",
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
        django.setup()
        urlpatterns.append(path("checkout", _django_checkout))
    return Client(WSGIHandler())


def test_a_signed_out_django_request_is_forwarded_with_its_anonymous_id_and_frames(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    from sentry_sdk.integrations.django import DjangoIntegration

    options = {"anonymous_id": "cookie:ajs_anonymous_id", "include": "stacktrace"}
    init_sentry(
        **pii_options(),
        integrations=[DjangoIntegration()],
        profile_url=PROFILE_URL,
        in_app_include=[__name__],
        **options,
    )
    client = django_client()
    client.set_cookie("ajs_anonymous_id", f"%22{ANONYMOUS_ID}%22")
    assert client.get("/checkout").status_code == 500
    assert client.get("/checkout?user=42").status_code == 500
    messages = forwarded(segment)
    sent = {event["event_id"]: event for event in sentry.wait_for_events(2)}
    assert sorted((m["userId"] or "", m["anonymousId"]) for m in messages) == [
        ("", ANONYMOUS_ID), ("42", ANONYMOUS_ID),
    ]  # fmt: skip
    for message in messages:
        valid(message, **options)
        assert message["properties"]["stacktrace"][-1].endswith(
            f"in _django_charge at line {_django_charge.__code__.co_firstlineno + 1}"
        )
        assert message["properties"]["transaction"] == "/checkout"
        event = sent[message["messageId"]]
        # The link is made from what the scope holds before Django's request is read.
        if message["userId"] == "42":
            assert event["contexts"]["segment"]["user_id"] == "42"


def test_a_django_error_logged_without_exc_info_is_forwarded_as_a_message_event(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    from sentry_sdk.integrations.django import DjangoIntegration

    init_sentry(
        **pii_options(), integrations=[DjangoIntegration()], event_types=["error", "message"]
    )
    client = django_client()
    client.get("/checkout?user=9&log=1")
    messages = forwarded(segment)
    assert sorted(m["properties"]["exceptionType"] for m in messages) == ["", "ValueError"]
    assert {m["userId"] for m in messages} == {"9"}
    assert {m["properties"]["transaction"] for m in messages} == {"/checkout"}


# FastAPI under uvicorn ---------------------------------------------------------------------


def _fastapi_charge() -> None:
    raise ValueError("declined")


@pytest.mark.parametrize("signed_in", [False, True])
def test_fastapi_under_uvicorn_forwards_anonymous_ids_messages_and_frames(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder, signed_in: bool
) -> None:
    import fastapi

    options = {
        "anonymous_id": "cookie:ajs_anonymous_id",
        "include": "stacktrace",
        "event_types": "error,message",
    }
    init_sentry(**pii_options(), in_app_include=[__name__], **options)
    app = fastapi.FastAPI()

    @app.get("/checkout")
    def checkout() -> None:
        if signed_in:
            sentry_sdk.set_user({"id": "42"})
        sentry_sdk.capture_message("the payment provider is slow", level="error")
        _fastapi_charge()

    with uvicorn_serving(app) as base:
        assert http_status(f"{base}/checkout", Cookie=AJS_COOKIE) == 500
    messages = forwarded(segment)
    sentry.wait_for_events(2)
    assert len(messages) == 2
    for message in messages:
        valid(message, **options)
        assert message["anonymousId"] == ANONYMOUS_ID
        assert message["userId"] == ("42" if signed_in else None)
    [error] = [m for m in messages if m["properties"]["exceptionType"] == "ValueError"]
    assert error["properties"]["stacktrace"][-1].startswith("tests/test_frameworks.py in")
    assert "_fastapi_charge at line" in error["properties"]["stacktrace"][-1]
    [message_event] = [m for m in messages if m["properties"]["exceptionType"] == ""]
    assert message_event["properties"]["stacktrace"] == []
