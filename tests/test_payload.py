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
    Shape,
    Track,
    build_track,
    error_fields,
    is_error,
    track_from_fields,
    user_id,
)

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
