"""The JSON Schema (draft-07) of the properties a configuration's messages carry, for tracking
plans (Segment Protocols imports it)."""

from __future__ import annotations

from typing import Any

from . import __version__
from .payload import Shape

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
}


def message_schema(shape: Shape) -> dict[str, Any]:
    """The schema of a track call this shape makes, for its ``properties``."""
    properties = dict(_ALWAYS)
    for name in shape.include:
        key, schema = _INCLUDED[name]
        properties[key] = schema
    return {
        "$schema": DRAFT_07,
        "title": shape.event_name,
        "description": f"Sentry errors forwarded by sentry-segment {__version__}"
        + (f", with {', '.join(shape.include)}" if shape.include else ""),
        "type": "object",
        "properties": {
            "properties": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        },
        "required": ["properties"],
    }
