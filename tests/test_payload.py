"""The pure mapping from a Sentry event to a Segment track call."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry_segment.payload import (
    INCLUDABLE,
    MAX_MESSAGE_BYTES,
    AnonymousSource,
    Shape,
    Track,
    anonymous_id,
    build_track,
    error_fields,
    identified,
    is_error,
    is_error_or_message,
    profile_context,
    track_from_fields,
    user_id,
)
from sentry_segment.scrub import FILTERED

from .support import events, same

EVENT: dict[str, Any] = {
    "event_id": "002c8bbde8324dae9f12a0b96f5b1e51",
    "timestamp": "2017-05-20T15:29:06.120278Z",
    "level": "error",
    "environment": "production",
    "release": "a2def1",
    "transaction": "/api/0/users/{user}/",
    "user": {"id": 1, "ip_address": "192.0.2.10", "email": "u@example.com"},
    "request": {
        "url": "https://sentry.io/api/0/users/{user}/",
        "method": "GET",
        "query_string": "",
        "headers": {
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:54.0) Gecko/20100101 Firefox/54.0",
            "Referer": "https://sentry.io/",
        },
    },
    "exception": {"values": [{"type": "ValueError", "value": "bad"}, {"type": "TypeError"}]},
}


def test_the_seed_documents_example() -> None:
    track = build_track(EVENT)
    user_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:54.0) Gecko/20100101 Firefox/54.0"
    assert track == Track(
        user_id="1",
        event="Error Captured",
        properties={
            "environment": "production",
            "eventId": "002c8bbde8324dae9f12a0b96f5b1e51",
            "exceptionType": "ValueError",
            "release": "a2def1",
            "transaction": "/api/0/users/{user}/",
            "level": "error",
            "userAgent": user_agent,
            "page": {
                "url": "https://sentry.io/api/0/users/{user}/",
                "method": "GET",
                "search": "",
                "referer": "https://sentry.io/",
            },
        },
        context={
            "userAgent": user_agent,
            "page": {
                "url": "https://sentry.io/api/0/users/{user}/",
                "path": "/api/0/users/{user}/",
                "search": "",
                "referrer": "https://sentry.io/",
            },
            "ip": "192.0.2.10",
        },
        timestamp=datetime(2017, 5, 20, 15, 29, 6, 120278, tzinfo=timezone.utc),
        message_id="002c8bbde8324dae9f12a0b96f5b1e51",
    )


def test_every_property_is_present_when_the_event_is_bare() -> None:
    track = build_track({"user": {"id": 5}, "exception": {"values": [{}]}}, Shape("E"))
    assert track.properties == {
        "environment": "",
        "eventId": "",
        "exceptionType": "",
        "release": "",
        "transaction": "",
        "level": "",
        "userAgent": "",
        "page": {"url": "", "method": "", "search": "", "referer": ""},
    }
    assert "ip" not in track.context
    assert track.timestamp.tzinfo is not None


def test_search_gets_a_leading_question_mark_and_headers_match_any_case() -> None:
    event = {
        **EVENT,
        "request": {
            "url": "https://x.example/a/b",
            "query_string": "q=1&r=2",
            "headers": [["user-agent", "curl/8"], ["REFERER", "https://r.example/"]],
        },
    }
    track = build_track(event, Shape("E"))
    assert track.properties["page"]["search"] == "?q=1&r=2"
    assert track.context["page"] == {
        "url": "https://x.example/a/b",
        "path": "/a/b",
        "search": "?q=1&r=2",
        "referrer": "https://r.example/",
    }
    assert track.properties["userAgent"] == track.context["userAgent"] == "curl/8"


def test_user_ids() -> None:
    assert user_id({"user": {"id": 0}}) == "0"
    assert user_id({"user": {"id": "u"}}) == "u"
    assert user_id({"user": {"id": ""}}) is None
    assert user_id({"user": {"id": None}}) is None
    assert user_id({"user": {"email": "a@example.com"}}) is None
    assert user_id({"user": "42"}) is None
    assert user_id({"user": {"id": {"nested": 1}}}) is None
    assert user_id({"user": {"id": "x" * 10_000}}) == "x" * 256


def test_what_counts_as_an_error() -> None:
    assert is_error(EVENT)
    assert not is_error({"message": "hi"})
    assert not is_error({"exception": {"values": []}})
    assert not is_error({"exception": [{"type": "ValueError"}]})
    assert not is_error({"exception": {"values": "ValueError"}})


def test_timestamps_of_every_shape_become_aware_utc() -> None:
    def stamp(value: Any) -> datetime:
        return build_track({**EVENT, "timestamp": value}, Shape("E")).timestamp

    expected = datetime(2017, 5, 20, 15, 29, 6, tzinfo=timezone.utc)
    assert stamp("2017-05-20T15:29:06Z") == expected
    assert stamp("2017-05-20T17:29:06+02:00") == expected
    assert stamp("2017-05-20T15:29:06") == expected
    assert stamp(expected.timestamp()) == expected
    assert stamp(datetime(2017, 5, 20, 15, 29, 6)) == expected
    before = datetime.now(timezone.utc)
    assert stamp("yesterday") >= before
    assert stamp(float("nan")) >= before
    assert stamp(1e20) >= before


def test_huge_fields_are_truncated_to_fit_segments_limit() -> None:
    huge = "\u2603" * 100_000
    event = copy.deepcopy(EVENT)
    event["release"] = event["environment"] = event["transaction"] = huge
    event["request"]["url"] = "https://x.example/" + huge
    event["request"]["headers"]["User-Agent"] = huge
    track = build_track(event, Shape("E"))
    encoded = json.dumps(track.as_message())
    assert len(encoded) < MAX_MESSAGE_BYTES - 1024
    assert track.properties["release"].startswith("\u2603")


def test_lone_surrogates_are_replaced() -> None:
    track = build_track({**EVENT, "release": "ok\ud800end"}, Shape("E"))
    assert track.properties["release"] == "ok?end"
    track.properties["release"].encode("utf-8")


def test_error_fields_hold_only_the_values_the_track_reads() -> None:
    event = {**EVENT, "breadcrumbs": {"values": [{"message": "x" * 1000}] * 100}}
    event["exception"] = {"values": [{"type": "KeyError", "stacktrace": {"frames": [{}] * 50}}]}
    fields = error_fields(event)
    assert fields.exception_type == "KeyError"
    assert all(not isinstance(value, (list, tuple)) for value in fields)
    assert track_from_fields(fields, Shape("E")) == build_track(event, Shape("E"))


def test_building_never_changes_the_event() -> None:
    event = copy.deepcopy(EVENT)
    build_track(event, Shape("E"))
    assert event == EVENT


shapes = st.builds(
    Shape,
    event_name=st.text(min_size=1, max_size=200),
    include=st.sets(st.sampled_from(INCLUDABLE)).map(
        lambda names: tuple(name for name in INCLUDABLE if name in names)
    ),
    issues_url=st.just("https://sentry.io/organizations/acme/issues/"),
    anonymous_id=st.sampled_from(
        [(), (AnonymousSource("tag", "a"),), (AnonymousSource("user", "id"),)]
    ),
)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@given(events, shapes, st.text(max_size=20))
def test_any_event_gives_valid_json_under_32kb_and_stays_unchanged(
    event: dict[str, Any], shape: Shape, project: str
) -> None:
    original = copy.deepcopy(event)
    is_error(event)
    user_id(event)
    track = build_track(event, shape, project)
    from_fields = track_from_fields(error_fields(event, shape.needs_extras), shape, project)
    assert (from_fields.properties, from_fields.context) == (track.properties, track.context)
    encoded = json.dumps(track.as_message(), allow_nan=False)
    assert len(encoded.encode()) < MAX_MESSAGE_BYTES - 1024
    encoded.encode("utf-8")
    assert same(event, original)


def test_characters_outside_the_basic_plane_count_twelve_bytes_each() -> None:
    # Segment's client escapes them as two \uXXXX surrogates: 12 bytes of JSON per character.
    wide = "\U0001f600"
    event = {**EVENT, "release": wide * 2000, "transaction": wide * 2000, "environment": wide * 400}
    track = build_track(event, Shape("E"))
    encoded = json.dumps(track.as_message())
    assert len(encoded.encode()) < MAX_MESSAGE_BYTES - 1024


ALL = Shape("E", INCLUDABLE, "https://sentry.example.com/organizations/acme/issues/")


def test_tags_become_strings_in_order_within_a_budget() -> None:
    tags = {"plan": "pro", "beta": True, "n": 3, "ratio": 0.5, "nan": float("nan"), "none": None}
    properties = build_track({**EVENT, "tags": tags}, ALL).properties
    assert properties["tags"] == {
        "plan": "pro", "beta": "true", "n": "3", "ratio": "0.5", "nan": "", "none": ""
    }  # fmt: skip
    as_pairs = build_track({**EVENT, "tags": [["a", "1"], ("b", 2), "junk", ["a", "dup"]]}, ALL)
    assert as_pairs.properties["tags"] == {"a": "1", "b": "2"}
    many = {f"tag{number:04}": "v" * 100 for number in range(2000)}
    kept = build_track({**EVENT, "tags": many}, ALL).properties["tags"]
    assert 0 < len(kept) < 2000
    assert list(kept) == list(many)[: len(kept)]
    assert build_track({**EVENT, "tags": "not tags"}, ALL).properties["tags"] == {}


def test_handled_is_false_when_any_exception_says_unhandled() -> None:
    def handled(*mechanisms: Any) -> Any:
        values = [{"type": "E", "mechanism": mechanism} for mechanism in mechanisms]
        return build_track({**EVENT, "exception": {"values": values}}, ALL).properties["handled"]

    assert handled({"handled": True}) is True
    assert handled({"type": "generic"}, None) is True
    assert handled({"handled": True}, {"handled": False}) is False
    assert handled({"handled": "no"}) is True


def test_the_included_message_is_that_of_the_root_cause_and_the_link_finds_the_event() -> None:
    properties = build_track(EVENT, ALL, "4507").properties
    assert properties["exceptionMessage"] == "bad"
    assert properties["sentryUrl"] == (
        "https://sentry.example.com/organizations/acme/issues/"
        "?project=4507&query=002c8bbde8324dae9f12a0b96f5b1e51"
    )
    odd = build_track({**EVENT, "event_id": "a&b c"}, ALL, "1/2").properties["sentryUrl"]
    assert odd.endswith("?project=1%2F2&query=a%26b%20c")


# Beyond the forwarder: anonymous IDs, message events, stack frames, profile links -----------

ANONYMOUS = (
    AnonymousSource("cookie", "ajs_anonymous_id"),
    AnonymousSource("tag", "anonymous_id"),
    AnonymousSource("user", "anonymous_id"),
)
SIGNED_OUT = {**EVENT, "user": {"ip_address": "192.0.2.10"}}


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        ({"ajs_anonymous_id": "%22abc-1%22"}, "abc-1"),  # analytics.js: JSON-quoted, URL-encoded
        ({"ajs_anonymous_id": '"abc-1"'}, "abc-1"),
        ({"ajs_anonymous_id": "abc-1"}, "abc-1"),
        ({"ajs_anonymous_id": "%22a%5C%22b%22"}, 'a"b'),
        ({"ajs_anonymous_id": '"not json'}, '"not json'),
        ([["other", "x"], ["ajs_anonymous_id", "abc-1"]], "abc-1"),  # as Relay stores them
        ("other=x; ajs_anonymous_id=%22abc-1%22", "abc-1"),  # a Cookie header
        ({"ajs_anonymous_id": "%22%22"}, None),
        ({"ajs_anonymous_id": ""}, None),
        ({"other": "x"}, None),
        ("junk", None),
    ],
)
def test_the_anonymous_id_cookie_is_read_as_analytics_js_writes_it(
    cookies: Any, expected: Any
) -> None:
    event = {**SIGNED_OUT, "request": {"cookies": cookies}}
    found = anonymous_id(event, ANONYMOUS[:1])
    assert (found[1] if found else None) == expected
    track = build_track(event, Shape(anonymous_id=ANONYMOUS[:1]))
    assert (track.user_id, track.anonymous_id) == ("", expected or "")


def test_sources_are_tried_in_order_and_the_user_id_is_kept_beside_the_anonymous_id() -> None:
    event = {
        **EVENT,
        "tags": [["anonymous_id", "from-tag"]],
        "user": {"id": 7, "anonymous_id": "from-user"},
    }
    assert anonymous_id(event, ANONYMOUS) == (ANONYMOUS[1], "from-tag")
    assert anonymous_id(event, ANONYMOUS[2:]) == (ANONYMOUS[2], "from-user")
    track = build_track(event, Shape(anonymous_id=ANONYMOUS))
    assert (track.user_id, track.anonymous_id) == ("7", "from-tag")
    message = track.as_message()
    assert (message["userId"], message["anonymousId"]) == ("7", "from-tag")
    # Without the option, the message is the forwarder's: no anonymous ID.
    assert build_track(event).as_message()["anonymousId"] is None


def test_anonymous_ids_are_validated_and_truncated_as_user_ids() -> None:
    long_id = "a" * 1000
    for raw, expected in ((0, "0"), (long_id, long_id[:256]), ({"x": 1}, None), (" ", None)):
        event = {**SIGNED_OUT, "tags": {"anonymous_id": raw}}
        found = anonymous_id(event, ANONYMOUS[1:2])
        assert (found[1] if found else None) == expected
    assert not identified({**SIGNED_OUT, "tags": {"anonymous_id": None}}, ANONYMOUS)
    assert identified({**SIGNED_OUT, "tags": {"anonymous_id": "a"}}, ANONYMOUS)
    assert not identified({**SIGNED_OUT, "tags": {"anonymous_id": "a"}}, ())


def test_anonymous_ids_sentry_would_filter_are_dropped_whole() -> None:
    shape = Shape(anonymous_id=(AnonymousSource("tag", "auth_anon"), *ANONYMOUS))
    for event in (
        {**SIGNED_OUT, "tags": {"auth_anon": "abc"}},  # a tag under a secret's name
        {**SIGNED_OUT, "tags": {"anonymous_id": "4111111111111111"}},  # a card number
        {**SIGNED_OUT, "request": {"cookies": {"ajs_anonymous_id": "password=abc"}}},
    ):
        assert build_track(event, shape).anonymous_id == ""
    unscrubbed = Shape(anonymous_id=ANONYMOUS, scrubber=None)
    card = {**SIGNED_OUT, "tags": {"anonymous_id": "4111111111111111"}}
    assert build_track(card, unscrubbed).anonymous_id == "4111111111111111"


def test_message_events_are_those_of_level_error_or_fatal_without_a_type() -> None:
    message = {"message": "down", "level": "error"}
    assert is_error_or_message(message)
    assert is_error_or_message({**message, "level": "fatal"})
    assert is_error_or_message({**message, "type": "default"})
    assert is_error_or_message({"exception": {"values": [{}]}, "level": "info"})
    for other in (
        {**message, "level": "warning"},
        {**message, "level": "info"},
        {**message, "type": "transaction"},
        {**message, "type": "check_in"},
        {**message, "type": "feedback"},
        {**message, "level": ["error"]},
    ):
        assert not is_error_or_message(other), other
    properties = build_track({**EVENT, "exception": None, "message": "down"}).properties
    assert properties["exceptionType"] == ""


def frame(function: str, lineno: Any = 1, in_app: Any = None, **more: Any) -> dict[str, Any]:
    return {"filename": f"shop/{function}.py", "function": function, "lineno": lineno,
            "in_app": in_app, **more}  # fmt: skip


def stacktrace(*frames: Any) -> Any:
    values = [{"type": "E", "stacktrace": {"frames": list(frames)}}]
    return build_track({**EVENT, "exception": {"values": values}}, STACKTRACE).properties[
        "stacktrace"
    ]


STACKTRACE = Shape(include=("stacktrace",))


def test_the_stacktrace_lists_the_in_app_frames_innermost_last() -> None:
    assert stacktrace(
        frame("wsgi", in_app=False), frame("views", 42, True), frame("lib", 3, False),
        frame("charge", 7, True),
    ) == ["shop/views.py in views at line 42", "shop/charge.py in charge at line 7"]  # fmt: skip
    # None marked in-app: all of them.
    assert stacktrace(frame("a", 1, False), frame("b", 2)) == [
        "shop/a.py in a at line 1", "shop/b.py in b at line 2",
    ]  # fmt: skip
    many = [frame(f"f{number}", number, True) for number in range(25)]
    listed = stacktrace(*many)
    assert len(listed) == 10
    assert listed[-1] == "shop/f24.py in f24 at line 24"
    assert stacktrace({"module": "shop.views", "lineno": "x"}, "junk", {}) == [
        "shop.views in ?", "? in ?",
    ]  # fmt: skip
    assert build_track(EVENT, Shape(include=("stacktrace",))).properties["stacktrace"] == []
    assert "stacktrace" not in build_track(EVENT).properties


def test_the_stacktrace_is_scrubbed_and_fits_the_message() -> None:
    secret = frame("charge", 1, True, filename="cards/4111111111111111.py")
    assert stacktrace(secret) == [f"cards/{FILTERED}.py in charge at line 1"]
    huge = [frame("x" * 20_000 + str(number), number, True) for number in range(10)]
    track = build_track(
        {**EVENT, "exception": {"values": [{"type": "E", "stacktrace": {"frames": huge}}]}},
        Shape(include=("stacktrace",)),
    )
    assert len(track.properties["stacktrace"]) == 10
    assert len(json.dumps(track.as_message()).encode()) < MAX_MESSAGE_BYTES - 1024


def test_the_profile_context_quotes_the_ids_into_the_template() -> None:
    template = "https://app.segment.com/acme/explorer/{user_id}?anonymous={anonymous_id}"
    event = {**EVENT, "user": {"id": "a b/c"}, "tags": {"anonymous_id": "x&y"}}
    assert profile_context(event, template, ANONYMOUS) == {
        "profile_url": "https://app.segment.com/acme/explorer/a%20b%2Fc?anonymous=x%26y",
        "user_id": "a b/c",
        "anonymous_id": "x&y",
    }
    only_user = "https://app.segment.com/acme/explorer/{user_id}"
    assert (
        profile_context({**SIGNED_OUT, "tags": {"anonymous_id": "x"}}, only_user, ANONYMOUS) is None
    )
    assert profile_context(SIGNED_OUT, template, ANONYMOUS) is None
