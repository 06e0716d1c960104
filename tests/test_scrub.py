"""What Segment receives is scrubbed as Sentry's server scrubs its events: Sentry's own
normalization and data scrubbing (the sentry-relay package) are the oracle."""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import unquote_plus

import pytest
import sentry_sdk
from flask import Flask
from hypothesis import assume, given
from hypothesis import strategies as st

from sentry_segment import payload
from sentry_segment.config import resolve
from sentry_segment.scrub import FILTERED, Scrubber, patterns
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import InitSentry
from .support import http_status, pii_options, uvicorn_serving

# Sentry's own code, the oracle: its wheels need Python 3.10 (3.9 runs the rest of the suite).
sentry_relay = pytest.importorskip("sentry_relay")

_CONFIGS: dict[tuple[str, ...], Any] = {}


def relay_stores(event: dict[str, Any], sensitive_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The event as Sentry stores (and forwards) it: normalized, then scrubbed with a new
    project's default data-scrubbing settings."""
    config = _CONFIGS.get(sensitive_fields)
    if config is None:
        config = _CONFIGS[sensitive_fields] = sentry_relay.convert_datascrubbing_config(
            {
                "scrubData": True,
                "scrubDefaults": True,
                "scrubIpAddresses": False,
                "sensitiveFields": list(sensitive_fields),
                "excludeFields": [],
            }
        )
    normalized = sentry_relay.StoreNormalizer(project_id=1).normalize_event(event)
    return sentry_relay.pii_strip_event(config, normalized)  # type: ignore[no-any-return]


def error_event(request: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "ValueError", "value": "boom"}]},
        "user": user,
        "request": request,
    }


def decoded_pairs(search: str) -> list[list[str]]:
    pairs = (part.partition("=") for part in search.lstrip("?").split("&") if part)
    return [[unquote_plus(key), unquote_plus(value)] for key, _, value in pairs]


def header(stored: dict[str, Any], name: str) -> Optional[str]:
    return dict(stored["request"].get("headers") or []).get(name)


# Words Relay's rules look for, and secrets of every kind, joined at random with other text.
_WORDS = st.sampled_from(
    [
        *("password", "Secret", "passwd", "api_key", "api-key", "APIKEY", "auth", "Author"),
        *("credentials", "mysql_pwd", "privatekey", "private_key", "token", "myTokens", "otp"),
        *("two_factor", "page", "q", "id", "email", "a@b.example", "true", "null", "0"),
        *("Bearer abc.def", "4111111111111111", "4111 1111 1111 1111", "378282246310005"),
        *("5555-5555-5555-4444", "DE89370400440532013000", "123-45-6789", "https://u:pw@h/"),
        *("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----", "token="),
        *("token:", "=", ":", " ", "%20", "+", "%2B", "é", "Plan", "x.y", "/"),
    ]
)
_TEXT = st.lists(_WORDS, max_size=4).map("".join) | st.text(max_size=8)
_KEY = _TEXT.map(lambda text: text.replace("&", "").replace("=", "").replace("#", ""))
_VALUE = _TEXT.map(lambda text: text.replace("&", "").replace("#", ""))
_LINE = _TEXT.map(lambda text: text.replace("\r", " ").replace("\n", " ").strip())
_SENSITIVE_FIELDS = st.sampled_from([(), ("Plan",), ("x.y", "email")])


@given(
    pairs=st.lists(st.tuples(_KEY, _VALUE), max_size=4),
    referer=_LINE,
    user_id=_LINE.filter(bool),
    sensitive_fields=_SENSITIVE_FIELDS,
)
def test_any_query_referer_and_user_id_are_scrubbed_exactly_as_sentry_stores_them(
    pairs: list[tuple[str, str]], referer: str, user_id: str, sensitive_fields: tuple[str, ...]
) -> None:
    query = "&".join(f"{key}={value}" for key, value in pairs if key)
    request = {"url": "https://shop.example/p", "method": "GET", "query_string": query}
    if referer:
        request["headers"] = {"Referer": referer}
    event = error_event(request, {"id": user_id})
    stored = relay_stores(event, sensitive_fields)
    options = resolve(write_key="k", sensitive_fields=list(sensitive_fields))
    track = payload.build_track(event, options.shape)
    message = json.dumps(track.as_message(), ensure_ascii=False)

    # Every query parameter Sentry keeps arrives as it keeps it; what it filters does not.
    assert decoded_pairs(track.properties["page"]["search"]) == [
        list(pair) for pair in stored["request"].get("query_string") or []
    ]
    assert track.context["page"]["referrer"] == (header(stored, "Referer") or "")
    if stored["user"]["id"] == user_id:
        assert track.user_id == user_id
    else:
        assert track.user_id == "", "a user ID Sentry filters is nobody to attribute to"
    for key, value in pairs:
        kept = [list(pair) for pair in stored["request"].get("query_string") or []]
        if key and [unquote_plus(key), unquote_plus(value)] not in kept and len(value) > 3:
            assert f"{key}={value}" not in message


@given(pairs=st.lists(st.tuples(_KEY, _VALUE), max_size=4), referer=_LINE)
def test_scrub_false_forwards_the_strings_as_the_event_has_them(
    pairs: list[tuple[str, str]], referer: str
) -> None:
    query = "&".join(f"{key}={value}" for key, value in pairs if key)
    event = error_event({"query_string": query, "headers": {"Referer": referer}}, {"id": "7"})
    track = payload.build_track(event, resolve(write_key="k", scrub=False).shape)
    search = query.lstrip("?")  # sentry-sdk's query strings have none; Relay strips it too
    assert track.properties["page"]["search"] == (f"?{search}" if search else "")
    assert track.context["page"]["referrer"] == referer


def test_fields_sentry_keeps_whole_lose_only_unmistakable_secrets() -> None:
    # Relay scrubs neither the URL, the user agent, tags nor exception messages; the
    # message keeps them, with card numbers and credentials taken out, words kept.
    text = "auth failed for token 4111111111111111 at https://u:hunter2@db/ Bearer abc.def"
    assert patterns(text) == (
        f"auth failed for token {FILTERED} at https://u:{FILTERED}@db/ {FILTERED}"
    )
    event = error_event(
        {
            "url": f"https://shop.example/oauth/{'4111111111111111'}",
            "headers": {"User-Agent": text},
        },
        {"id": "1"},
    )
    event["exception"]["values"][0]["value"] = text
    event["tags"] = {"auth_mode": "oauth", "session_token": "s3cr3t", "card": "4111111111111111"}
    shape = resolve(write_key="k", include="tags,exception_message").shape
    track = payload.build_track(event, shape)
    assert track.properties["page"]["url"] == f"https://shop.example/oauth/{FILTERED}"
    assert track.properties["userAgent"] == patterns(text)
    assert track.properties["exceptionMessage"] == patterns(text)
    assert track.properties["tags"] == {
        "auth_mode": FILTERED,
        "session_token": FILTERED,
        "card": FILTERED,
    }
    assert Scrubber().value("oauth", "mode") == FILTERED


def test_a_real_flask_request_forwards_no_secret_sentry_filters(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    init_sentry(**pii_options())
    app = Flask(__name__)

    @app.route("/reset")
    def reset() -> str:
        sentry_sdk.set_user({"id": 42})
        raise KeyError("reset failed")

    secrets = {
        "token": "tok-3141592653",
        "api_key": "ak-2718281828",
        "secret": "sh-1618033988",
        "card": "4111111111111111",
        "password": "hunter2hunter2",
    }
    query = "&".join(f"{key}={value}" for key, value in secrets.items()) + "&page=2&sort=asc"
    response = app.test_client().get(
        f"/reset?{query}",
        headers={
            "User-Agent": "Mozilla/5.0 (X11)",
            "Referer": "https://shop.example/login?password=pw-0577215664&next=/cart",
        },
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)
    [message] = segment.messages()
    [sent] = sentry.wait_for_events(1)
    stored = relay_stores(sent)

    text = json.dumps(message)
    for value in [*secrets.values(), "pw-0577215664"]:
        assert value not in text
    assert decoded_pairs(message["properties"]["page"]["search"]) == [
        list(pair) for pair in stored["request"]["query_string"]
    ]
    assert ["page", "2"] in decoded_pairs(message["context"]["page"]["search"])
    assert message["context"]["page"]["referrer"] == header(stored, "Referer") == FILTERED
    assert message["context"]["userAgent"] == header(stored, "User-Agent")
    assert message["context"]["ip"] == stored["user"]["ip_address"] == "127.0.0.1"


_IP = st.sampled_from(
    [
        "192.0.2.7",
        "2001:DB8::1",
        "::ffff:1.2.3.4",
        "01.2.3.4",
        "fe80::1%eth0",
        "foo",
        "",
        " 1.2.3.4",
    ]
)


@given(ip_address=st.none() | _IP | st.just("{{auto}}"), remote_addr=st.none() | _IP)
def test_context_ip_is_the_address_sentry_normalization_fills(
    ip_address: Optional[str], remote_addr: Optional[str]
) -> None:
    user: dict[str, Any] = {"id": "1"}
    if ip_address is not None:
        user["ip_address"] = ip_address
    request: dict[str, Any] = {"url": "https://shop.example/"}
    if remote_addr is not None:
        request["env"] = {"REMOTE_ADDR": remote_addr}
    event = error_event(request, user)
    filled = (relay_stores(event).get("user") or {}).get("ip_address")
    track = payload.build_track(event, resolve(write_key="k").shape)
    if filled == "{{auto}}":  # Sentry puts the sending host's address there: not the user's
        assert "ip" not in track.context
    else:
        assert track.context.get("ip") == filled


@pytest.mark.parametrize(
    ("given_ip", "anonymized"),
    [("192.0.2.77", "192.0.2.0"), ("2001:db8:aa:bb:cc:dd:ee:ff", "2001:db8:aa::")],
)
def test_the_ip_option_anonymizes_or_drops_the_address(given_ip: str, anonymized: str) -> None:
    event = error_event({"env": {"REMOTE_ADDR": given_ip}}, {"id": "1"})
    for policy, expected in (("full", given_ip), ("anonymize", anonymized), ("none", None)):
        track = payload.build_track(event, resolve(write_key="k", ip=policy).shape)
        assert track.context.get("ip") == expected


def test_context_ip_on_asgi_is_what_sentry_fills_from_the_request(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # sentry-sdk's ASGI integrations put the client address only in request.env.
    import fastapi

    init_sentry(**pii_options())
    app = fastapi.FastAPI()

    @app.get("/checkout")
    def checkout() -> None:
        sentry_sdk.set_user({"id": "7"})
        raise ValueError("declined")

    with uvicorn_serving(app) as base:
        assert http_status(f"{base}/checkout?page=2") == 500
    sentry_sdk.flush(timeout=5)
    [message] = segment.messages()
    [sent] = sentry.wait_for_events(1)
    assert "ip_address" not in sent["user"]
    assert message["context"]["ip"] == relay_stores(sent)["user"]["ip_address"] == "127.0.0.1"


def test_an_event_without_a_request_has_no_page_and_no_ip() -> None:
    track = payload.build_track(error_event({}, {"id": "1"}))
    assert track.properties["page"] == {"url": "", "method": "", "search": "", "referer": ""}
    assert "ip" not in track.context


# A source names its cookie or key as the option's list can: stripped, without commas.
_SOURCE_NAME = _KEY.map(lambda text: text.replace(",", "").strip()).filter(bool)


@given(name=_SOURCE_NAME, value=_VALUE, key=_SOURCE_NAME, data=_VALUE)
def test_any_anonymous_id_goes_only_where_sentry_keeps_it_as_sent(
    name: str, value: str, key: str, data: str
) -> None:
    # A cookie and a key of the user's data, each the only source: forwarded only when
    # Sentry's server keeps it as the event has it (after its own normalization).
    assume(key not in ("id", "email", "username", "ip_address", "name", "geo", "segment"))
    event = error_event({"url": "https://shop.example/", "cookies": {name: value}}, {key: data})
    stored = relay_stores(event)
    kept_cookie = dict(stored["request"].get("cookies") or []).get(name)
    kept_data = ((stored.get("user") or {}).get("data") or {}).get(key)
    for source, given_value, kept in (
        (f"cookie:{name}", value, kept_cookie),
        (f"user:{key}", data, kept_data),
    ):
        shape = resolve(write_key="k", anonymous_id=source).shape
        track = payload.build_track(event, shape)
        found = payload.anonymous_id(event, shape.anonymous_id)
        if kept != given_value:
            assert track.anonymous_id == "", (source, given_value, kept)
        elif given_value.strip() and "%" not in given_value and '"' not in given_value:
            # Nothing analytics.js would have encoded: the very value Sentry keeps.
            assert found is not None
            assert track.anonymous_id == found[1] == given_value, (source, given_value)
