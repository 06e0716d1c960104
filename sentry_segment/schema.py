"""The JSON Schema (draft-07) of the properties a configuration's messages carry, for tracking
plans (Segment Protocols imports it)."""

from __future__ import annotations

from typing import Any

from . import __version__
from .payload import MAX_STACKTRACE_FRAMES, MAX_USER_ID_CHARS, Shape

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_TEXT = {"type": "string"}

# The forwarder's schema: every key always present, "" when the event has no value.
_ALWAYS: dict[str, Any] = {
    "environment": {**_TEXT, "description": "Sentry's environment"},
    "eventId": {**_TEXT, "description": "Sentry's event ID, also the messageId"},
    "exceptionType": {**_TEXT, "description": "type of the root cause (exception.values[0])"},
    "release": {**_TEXT, "description": "Sentry's release"},
    "transaction": {**_TEXT, "description": "Sentry's transaction (route or task name)"},
    "level": {**_TEXT, "description": "Sentry's level: error, fatal, ..."},
    "userAgent": {**_TEXT, "description": "the request's User-Agent header"},
    "page": {
        "type": "object",
        "description": "the request Sentry's web integrations attach",
        "properties": {
            "url": {**_TEXT, "description": "URL without the query string"},
            "method": _TEXT,
            "search": {**_TEXT, "description": "query string with a leading ?, or empty"},
            "referer": {**_TEXT, "description": "the Referer header"},
        },
        "required": ["url", "method", "search", "referer"],
        "additionalProperties": False,
    },
}

# What each name of the `include` option adds.
_INCLUDED: dict[str, tuple[str, dict[str, Any]]] = {
    "tags": (
        "tags",
        {
            "type": "object",
            "description": "the event's tags, as strings",
            "additionalProperties": _TEXT,
        },
    ),
    "exception_message": (
        "exceptionMessage",
        {**_TEXT, "description": "the message of the exception named by exceptionType"},
    ),
    "handled": (
        "handled",
        {"type": "boolean", "description": "false when Sentry marks the error unhandled"},
    ),
    "sentry_url": (
        "sentryUrl",
        {**_TEXT, "format": "uri", "description": "the event in Sentry's issue search"},
    ),
    "stacktrace": (
        "stacktrace",
        {
            "type": "array",
            "items": _TEXT,
            "maxItems": MAX_STACKTRACE_FRAMES,
            "description": "the in-app frames of exceptionType's exception, innermost last, "
            "as 'shop/views.py in checkout at line 42'",
        },
    ),
}

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_CHARS}


def _identity(key: str) -> dict[str, Any]:
    return {"properties": {key: _ID}, "required": [key]}


def message_schema(shape: Shape) -> dict[str, Any]:
    """The schema of a track call this shape makes, for its ``properties``."""
    properties = dict(_ALWAYS)
    for name in shape.include:
        key, schema = _INCLUDED[name]
        properties[key] = schema
    with_ = [*shape.include]
    # Who the error is attributed to: a user ID, or with anonymous_id either (both when known).
    identities = [_identity("userId")]
    if shape.anonymous_id:
        identities.append(_identity("anonymousId"))
        with_.append("anonymous IDs from " + ", ".join(map(str, shape.anonymous_id)))
    return {
        "$schema": DRAFT_07,
        "title": shape.event_name,
        "description": f"Sentry errors forwarded by sentry-segment {__version__}"
        + (f", with {'; '.join(with_)}" if with_ else ""),
        "type": "object",
        "anyOf": identities,
        "properties": {
            "userId": {
                "type": ["string", "null"],
                "description": "Sentry's user.id",
            },
            "anonymousId": {
                "type": ["string", "null"],
                "description": "Segment's anonymous ID, from the anonymous_id option's sources",
            },
            "properties": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
        "required": ["properties"],
    }
