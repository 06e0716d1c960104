"""Turns a Sentry error event into the Segment track call: pure functions of the event.

Events are the plain dicts Sentry's serializer produces; anything else in their place
(another mapping type included) counts as missing.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from string import Formatter
from typing import Any, Callable, NamedTuple, Optional, Union
from urllib.parse import quote, unquote, urlsplit

from .scrub import FILTERED, Scrubber, patterns

# Segment refuses messages over 32 KB; its client adds library, type, timestamp and ids.
MAX_MESSAGE_BYTES = 32 * 1024
MESSAGE_BUDGET_BYTES = MAX_MESSAGE_BYTES - 2048
# Segment documents no length for a user ID; longer than this it is data that reached
# set_user, not an identity, and is cut.
MAX_USER_ID_CHARS = 256
# Sentry's event IDs are 32 hex characters; room to spare, under Segment's own limit
# (MAX_SEGMENT_MESSAGE_ID_CHARS).
MAX_MESSAGE_ID_CHARS = 64
# Every string is cut to the first of these lengths at which the message fits its budget:
# 2,048 keeps real URLs and user agents whole; the shorter ones apply only to messages made
# huge by their strings (a megabyte query string), which still reach Segment, shortened.
FIELD_CHAR_LIMITS = (2048, 512, 128, 32)
# Tags carry at most this many characters (keys and values) per character limit above.
TAG_CHARACTERS_PER_LIMIT = 4
MAX_TAG_CHARACTERS = FIELD_CHAR_LIMITS[0] * TAG_CHARACTERS_PER_LIMIT
DEFAULT_EVENT_NAME = "Error Captured"
# What the `include` option can add to the properties, each from the Sentry event.
INCLUDABLE = ("tags", "exception_message", "handled", "sentry_url", "stacktrace")
# What the `event_types` option can forward: errors always, messages of these levels on request.
EVENT_TYPES = ("error", "message")
FORWARDED_MESSAGE_LEVELS = frozenset({"error", "fatal"})
MAX_STACKTRACE_FRAMES = 10
# Where the `anonymous_id` option can find Segment's anonymous ID in an event.
ANONYMOUS_ID_KINDS = ("cookie", "tag", "user")
# What the `ip` option can make of the client's address: as Sentry has it, with its last
# octet (IPv4) or 80 bits (IPv6) zeroed as analytics tools anonymize, or none.
IP_POLICIES = ("full", "anonymize", "none")
_ANONYMIZED_PREFIX = {4: 24, 6: 48}


DEFAULT_SCRUBBER = Scrubber()


class AnonymousSource(NamedTuple):
    """One place to look for an anonymous ID: a request cookie, a tag, or a key of the user."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Shape:
    """What the configuration adds to the forwarder's message: the event name, the included
    properties, and the link to Sentry's issues (``{web}/organizations/{org}/issues/``)."""

    event_name: str = DEFAULT_EVENT_NAME
    include: tuple[str, ...] = ()
    issues_url: str = ""
    # None: the strings are forwarded as the event has them (scrub=false).
    scrubber: Optional[Scrubber] = DEFAULT_SCRUBBER
    ip: str = "full"
    # Where to find Segment's anonymous ID, in order; none: only user IDs.
    anonymous_id: tuple[AnonymousSource, ...] = ()

    @property
    def needs_extras(self) -> bool:
        """Whether error_fields must also take what `include` and `anonymous_id` read."""
        return bool(self.include or self.anonymous_id)


# The forwarder's message, as Sentry's server sends it.
FORWARDER_SHAPE = Shape()


@dataclass(frozen=True)
class Track:
    """The arguments of one Segment track call."""

    user_id: str
    event: str
    properties: dict[str, Any]
    context: dict[str, Any]
    timestamp: datetime
    message_id: str
    # "" when the event has none (or only a user ID).
    anonymous_id: str = ""

    def as_message(self, library: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
        """The message as Segment's HTTP API takes it, and as its ``Client.track`` queues it
        when given the client's library (name and version) for ``context.library``."""
        context = self.context if library is None else {**self.context, "library": {**library}}
        return {
            "integrations": {},
            "anonymousId": self.anonymous_id or None,
            "properties": self.properties,
            "timestamp": self.timestamp.isoformat(timespec="milliseconds"),
            "context": context,
            "userId": self.user_id or None,
            "type": "track",
            "event": self.event,
            "messageId": self.message_id,
        }


def message_problem(message: Any) -> Optional[str]:  # noqa: PLR0911 (one check per return)
    """Why Segment would refuse this message (one a user's hook returned), or None if none.

    It must still be a track call with an event name, a user and a message ID, in strict JSON
    (no NaN, no lone surrogates) within Segment's 32 KB.
    """
    if not isinstance(message, dict):
        return f"it is a {type(message).__name__}, not a dict"
    if message.get("type") != "track":
        return "its type is not 'track'"
    for key in ("event", "messageId"):
        if not isinstance(message.get(key), str) or not message[key].strip():
            return f"its {key} is not a non-empty string"
    if len(message["messageId"]) > MAX_SEGMENT_MESSAGE_ID_CHARS:
        return f"its messageId is over {MAX_SEGMENT_MESSAGE_ID_CHARS} characters"
    if not any(isinstance(message.get(key), str) and message[key] for key in _IDENTITIES):
        return "it has neither a userId nor an anonymousId string"
    for key in ("properties", "context"):
        if key in message and not isinstance(message[key], dict):
            return f"its {key} is not a dict"
    try:
        json.dumps(message, allow_nan=False, ensure_ascii=False).encode("utf-8")
        size = len(json.dumps(message, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as error:
        return f"it is not JSON ({type(error).__name__}: {str(error)[:100]})"
    if size > MAX_MESSAGE_BYTES:
        return f"it is {size:,} bytes, over Segment's {MAX_MESSAGE_BYTES:,}"
    return None


# Segment de-duplicates on messageId and takes at most 100 characters of it.
MAX_SEGMENT_MESSAGE_ID_CHARS = 100
_IDENTITIES = ("userId", "anonymousId")


def is_error(event: Mapping[str, Any]) -> bool:
    """True when the event carries exception values, as Sentry's forwarder requires."""
    exception = event.get("exception")
    if not isinstance(exception, dict):
        return False
    values = exception.get("values")
    return isinstance(values, list) and len(values) > 0


def is_error_or_message(event: Mapping[str, Any]) -> bool:
    """An error, or a message event (capture_message, a log record without exc_info) of level
    error or fatal: what ``event_types="error,message"`` forwards. Never a transaction, a
    check-in or another typed event."""
    if is_error(event):
        return True
    level = event.get("level")
    return (
        event.get("type") in (None, "default")
        and isinstance(level, str)
        and level in FORWARDED_MESSAGE_LEVELS
    )


def user_id(event: Mapping[str, Any]) -> Optional[str]:
    """The event's user ID as a string, or None when it has none (0 is an ID)."""
    user = event.get("user")
    if not isinstance(user, dict):
        return None
    return _user_id_text(user.get("id"))


def has_user_id(event: Mapping[str, Any]) -> bool:
    """Whether the event has a user ID: what the forwarder requires by default."""
    user = event.get("user")
    return isinstance(user, dict) and _user_id_text(user.get("id")) is not None


def identified(event: Mapping[str, Any], sources: tuple[AnonymousSource, ...]) -> bool:
    """Whether the event has a user ID, or a value in one of these anonymous ID sources (which
    the worker may yet find empty once decoded, or filtered)."""
    return has_user_id(event) or find_anonymous_id(event, sources) is not None


def is_error_with_user(event: Mapping[str, Any]) -> bool:
    """What the forwarder forwards with its default options: an error with a user ID."""
    return is_error(event) and has_user_id(event)


def find_anonymous_id(
    event: Mapping[str, Any], sources: tuple[AnonymousSource, ...]
) -> Optional[tuple[AnonymousSource, Any]]:
    """The first of these sources that holds a value, and the value as the event has it: only
    lookups, for the capturing thread; anonymous_id_text reads it."""
    for source in sources:
        raw = _find(event, source)
        if raw is not None and raw != "":
            return source, raw
    return None


def anonymous_id_text(source: AnonymousSource, raw: Any) -> Optional[str]:
    """An anonymous ID as Segment takes it, validated and truncated as user IDs are (not
    scrubbed); a cookie decoded as analytics.js writes it. None if there is none."""
    text = _user_id_text(raw)
    if text is not None and source.kind == "cookie":
        text = _user_id_text(_cookie_value(text))
    return text


def anonymous_id(
    event: Mapping[str, Any], sources: tuple[AnonymousSource, ...]
) -> Optional[tuple[AnonymousSource, str]]:
    """The anonymous ID of the first source that holds one, and that source; None if none."""
    found = find_anonymous_id(event, sources)
    text = None if found is None else anonymous_id_text(*found)
    return None if found is None or text is None else (found[0], text)


def _find(event: Mapping[str, Any], source: AnonymousSource) -> Any:
    kind, name = source
    if kind == "user":
        user = event.get("user")
        return user.get(name) if isinstance(user, dict) else None
    if kind == "tag":
        tags = event.get("tags")
        if isinstance(tags, dict):
            return tags.get(name)
        return _pair_value(tags, name) if isinstance(tags, list) else None
    request = event.get("request")
    return _cookie(request.get("cookies"), name) if isinstance(request, dict) else None


def _cookie(cookies: Any, name: str) -> Any:
    if isinstance(cookies, dict):
        return cookies.get(name)
    if isinstance(cookies, list):
        return _pair_value(cookies, name)
    if isinstance(cookies, str):  # a Cookie header as sent: "a=1; b=2"
        for part in cookies.split(";"):
            key, _, value = part.partition("=")
            if key.strip() == name:
                return value.strip()
    return None


def _pair_value(pairs: list[Any], name: str) -> Any:
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] == name:
            return pair[1]
    return None


def _cookie_value(text: str) -> str:
    """A cookie as analytics.js writes it: URL-encoded, and JSON-quoted (``%22abc%22``)."""
    text = unquote(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        return decoded if isinstance(decoded, str) else text
    return text


@functools.lru_cache(maxsize=8)
def _template_fields(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in Formatter().parse(template) if field)


def profile_context(
    event: Mapping[str, Any], template: str, sources: tuple[AnonymousSource, ...]
) -> Optional[dict[str, str]]:
    """Sentry's ``segment`` context for an event: the profile URL (the template with the
    event's IDs URL-quoted) and the IDs; None when the event has none the template names."""
    ids = {"user_id": user_id(event)}
    found = anonymous_id(event, sources) if sources else None
    ids["anonymous_id"] = found[1] if found is not None else None
    if not any(ids.get(name) for name in _template_fields(template)):
        return None
    quoted = {name: quote(value, safe="") if value else "" for name, value in ids.items()}
    context = {"profile_url": template.format(**quoted)}
    context.update((name, value) for name, value in ids.items() if value is not None)
    return context


def _user_id_text(raw: Any) -> Optional[str]:
    if raw is None or isinstance(raw, (dict, list, tuple, set, bytes, bytearray)):
        return None
    try:
        text = _clean(str(raw))
    except Exception:
        return None
    return text[:MAX_USER_ID_CHARS] if text.strip() else None


class ErrorFields(NamedTuple):
    """The event's values that build_track reads, as they are: what the forwarder queues.

    Taken on the capturing thread, so only lookups; one flat tuple rather than a copy of the
    event keeps the queue small.
    """

    event_id: Any = None
    timestamp: Any = None
    level: Any = None
    environment: Any = None
    release: Any = None
    transaction: Any = None
    user_id: Any = None
    ip_address: Any = None
    url: Any = None
    method: Any = None
    query_string: Any = None
    headers: Any = None
    env: Any = None
    exception_type: Any = None
    # Taken only when the shape includes more than the forwarder's schema.
    tags: Any = None
    exception_value: Any = None
    handled: Any = None
    frames: Any = None
    # (source, value) as find_anonymous_id() finds it.
    anonymous_id: Any = None


_new_fields: Callable[[tuple[Any, ...]], ErrorFields] = functools.partial(
    tuple.__new__, ErrorFields
)


def error_fields(event: Mapping[str, Any], extras: Union[bool, Shape] = False) -> ErrorFields:
    """The fields of an event that build_track reads; with extras (True, or a shape that
    needs_extras), also those `include` reads, and the anonymous ID the shape's sources find."""
    get = event.get
    user = get("user")
    if not isinstance(user, dict):
        user = _EMPTY
    request = get("request")
    if not isinstance(request, dict):
        request = _EMPTY
    exception = get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    first = values[0] if isinstance(values, list) and values else None
    if not isinstance(first, dict):
        first = _EMPTY
    frames = found = None
    if extras:
        stacktrace = first.get("stacktrace")
        frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
        sources = extras.anonymous_id if isinstance(extras, Shape) else ()
        found = find_anonymous_id(event, sources) if sources else None
    # tuple.__new__ rather than ErrorFields(...): the generated __new__ is a Python frame.
    return _new_fields(
        (
            get("event_id"),
            get("timestamp"),
            get("level"),
            get("environment"),
            get("release"),
            get("transaction"),
            user.get("id"),
            user.get("ip_address"),
            request.get("url"),
            request.get("method"),
            request.get("query_string"),
            request.get("headers"),
            request.get("env"),
            first.get("type"),
            get("tags") if extras else None,
            first.get("value") if extras else None,
            _handled(values) if extras else None,
            frames,
            found,
        )
    )


def _handled(values: Any) -> bool:
    """False when any exception's mechanism says it was not handled, as Sentry decides."""
    if not isinstance(values, list):
        return True
    for value in values:
        mechanism = value.get("mechanism") if isinstance(value, dict) else None
        if isinstance(mechanism, dict) and mechanism.get("handled") is False:
            return False
    return True


_EMPTY: dict[str, Any] = {}


def build_track(
    event: Mapping[str, Any], shape: Shape = FORWARDER_SHAPE, project: str = ""
) -> Track:
    """The track call for an error event that has a user ID, within Segment's 32 KB."""
    extras = shape if shape.needs_extras else False
    return track_from_fields(error_fields(event, extras), shape, project)


def track_from_fields(
    fields: ErrorFields, shape: Shape = FORWARDER_SHAPE, project: str = ""
) -> Track:
    """The track call for the fields error_fields took, within Segment's 32 KB; project is the
    Sentry project ID, for the link to Sentry. Its user_id is "" when Sentry's scrubbing would
    have filtered the event's user ID: there is no one to attribute the error to."""
    texts = _texts(fields, shape)
    for limit in FIELD_CHAR_LIMITS:
        track = _build(texts, fields, shape, project, limit)
        if _encoded_size(track) <= MESSAGE_BUDGET_BYTES:
            break
    return track


class _Texts(NamedTuple):
    """The event's strings that may hold personal data, scrubbed as the shape says."""

    user_id: str
    url: str
    path: str
    search: str
    referer: str
    user_agent: str
    ip: str
    exception_message: str
    tags: dict[str, str]
    anonymous_id: str
    stacktrace: list[str]


def _texts(fields: ErrorFields, shape: Shape) -> _Texts:
    url = _text(fields.url)
    query = _text(fields.query_string).lstrip("?")
    texts = _Texts(
        user_id=_user_id_text(fields.user_id) or "",
        url=url,
        path=_path(url),
        search=query,
        referer=_header(fields.headers, "referer"),
        user_agent=_header(fields.headers, "user-agent"),
        ip=_client_ip(fields, shape.ip),
        exception_message=_text(fields.exception_value) if shape.include else "",
        tags=_tags(fields.tags, MAX_TAG_CHARACTERS) if "tags" in shape.include else {},
        anonymous_id=(anonymous_id_text(*fields.anonymous_id) or "") if fields.anonymous_id else "",
        stacktrace=_stack_lines(fields.frames) if "stacktrace" in shape.include else [],
    )
    scrubber = shape.scrubber
    if scrubber is not None:
        scrubbed_user_id = scrubber.value(texts.user_id, "id")
        anonymous = texts.anonymous_id
        if anonymous:
            # As Sentry's server scrubs where the ID was found; an ID it filters is no one's.
            scrubbed = _scrub_anonymous_id(scrubber, fields.anonymous_id[0], anonymous)
            anonymous = anonymous if scrubbed == anonymous else ""
        texts = texts._replace(
            user_id=scrubbed_user_id if scrubbed_user_id == texts.user_id else "",
            anonymous_id=anonymous,
            stacktrace=[patterns(line) for line in texts.stacktrace],
            url=patterns(texts.url),
            path=patterns(texts.path),
            search=scrubber.query(texts.search),
            referer=scrubber.value(texts.referer, "Referer"),
            user_agent=patterns(texts.user_agent),
            exception_message=patterns(texts.exception_message),
            tags={
                key: FILTERED if scrubber.sensitive_key(key) else patterns(value)
                for key, value in texts.tags.items()
            },
        )
    return texts


def _scrub_anonymous_id(scrubber: Scrubber, source: AnonymousSource, text: str) -> str:
    if source.kind == "tag":  # as tags are scrubbed here: Relay does not scrub tags
        return FILTERED if scrubber.sensitive_key(source.name) else patterns(text)
    # Relay scrubs cookies and the user's data under their keys.
    return scrubber.value(text, source.name)


def _stack_lines(frames: Any) -> list[str]:
    """The in-app frames (all when none is marked in-app), innermost last, at most the last
    MAX_STACKTRACE_FRAMES, each as "shop/views.py in checkout at line 42"."""
    if not isinstance(frames, list):
        return []
    frames = [frame for frame in frames if isinstance(frame, dict)]
    in_app = [frame for frame in frames if frame.get("in_app") is True]
    return [_frame_line(frame) for frame in (in_app or frames)[-MAX_STACKTRACE_FRAMES:]]


def _frame_line(frame: dict[str, Any]) -> str:
    where = _text(frame.get("filename")) or _text(frame.get("module")) or "?"
    line = f"{where} in {_text(frame.get('function')) or '?'}"
    lineno = frame.get("lineno")
    if isinstance(lineno, int) and not isinstance(lineno, bool):
        line += f" at line {lineno}"
    return line


def _build(texts: _Texts, fields: ErrorFields, shape: Shape, project: str, limit: int) -> Track:
    url = texts.url[:limit]
    search = f"?{texts.search}"[:limit] if texts.search else ""
    referer = texts.referer[:limit]
    user_agent = texts.user_agent[:limit]
    event_id = _text(fields.event_id)

    properties = {
        "environment": _text(fields.environment)[:limit],
        "eventId": event_id[:limit],
        "exceptionType": _text(fields.exception_type)[:limit],
        "release": _text(fields.release)[:limit],
        "transaction": _text(fields.transaction)[:limit],
        "level": _text(fields.level)[:limit],
        "userAgent": user_agent,
        "page": {
            "url": url,
            "method": _text(fields.method)[:limit],
            "search": search,
            "referer": referer,
        },
    }
    context: dict[str, Any] = {
        "userAgent": user_agent,
        "page": {
            "url": url,
            "path": texts.path[:limit],
            "search": search,
            "referrer": referer,
        },
    }
    if texts.ip:
        context["ip"] = texts.ip
    if shape.include:
        _add_included(properties, texts, fields, shape, project, limit)

    return Track(
        user_id=texts.user_id,
        event=shape.event_name,
        properties=properties,
        context=context,
        timestamp=_timestamp(fields.timestamp),
        message_id=event_id[:MAX_MESSAGE_ID_CHARS],
        anonymous_id=texts.anonymous_id,
    )


def _add_included(  # noqa: PLR0917 (_build's own arguments)
    properties: dict[str, Any],
    texts: _Texts,
    fields: ErrorFields,
    shape: Shape,
    project: str,
    limit: int,
) -> None:
    include = shape.include
    if "tags" in include:
        properties["tags"] = _within(texts.tags, limit * TAG_CHARACTERS_PER_LIMIT)
    if "exception_message" in include:
        properties["exceptionMessage"] = texts.exception_message[:limit]
    if "handled" in include:
        properties["handled"] = fields.handled is not False
    if "sentry_url" in include:
        query = f"?project={quote(project, safe='')}&query={quote(_text(fields.event_id), safe='')}"
        properties["sentryUrl"] = shape.issues_url + query[:limit]
    if "stacktrace" in include:
        properties["stacktrace"] = [line[:limit] for line in texts.stacktrace]


def _client_ip(fields: ErrorFields, policy: str) -> str:
    """The user's IP address as Sentry's normalization fills it (the user's if it is a valid
    address, else the request's REMOTE_ADDR: so "{{auto}}" too), made what the ip option says."""
    if policy == "none":
        return ""
    env = fields.env
    for text in (
        _text(fields.ip_address),
        _text(env.get("REMOTE_ADDR")) if isinstance(env, dict) else "",
    ):
        address = _ip_address(text)
        if address is not None:
            if policy == "anonymize":
                prefix = _ANONYMIZED_PREFIX[address.version]
                return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)[0])
            return text
    return ""


def _ip_address(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address, or None for anything Sentry does not take as one (a zone index included)."""
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _tags(raw: Any, budget: int) -> dict[str, str]:
    """The event's tags as strings, in order, up to ``budget`` characters of keys and values."""
    if isinstance(raw, dict):
        pairs: Any = raw.items()
    elif isinstance(raw, list):
        pairs = (pair for pair in raw if isinstance(pair, (list, tuple)) and len(pair) == 2)
    else:
        return {}
    tags: dict[str, str] = {}
    for key, value in pairs:
        name, text = _text(key), _tag_value(value)
        if not name or name in tags:
            continue
        budget -= len(name) + len(text)
        if budget < 0:
            break
        tags[name] = text
    return tags


def _within(tags: dict[str, str], budget: int) -> dict[str, str]:
    """The first tags whose keys and values hold at most ``budget`` characters."""
    kept: dict[str, str] = {}
    for name, text in tags.items():
        budget -= len(name) + len(text)
        if budget < 0:
            break
        kept[name] = text
    return kept


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return _text(value)


def _encoded_size(track: Track) -> int:
    # Segment's client escapes all but ASCII: a character outside the basic plane becomes two
    # \uXXXX escapes, 12 bytes at worst. When even that fits, skip encoding.
    characters = len(track.user_id) + len(track.anonymous_id) + len(track.event)
    characters += len(track.message_id)
    characters += _characters(track.properties) + _characters(track.context)
    worst = MAX_BYTES_PER_CHARACTER * characters + _STRUCTURE_BYTES
    if worst <= MESSAGE_BUDGET_BYTES:
        return worst
    return len(json.dumps(track.as_message()))


MAX_BYTES_PER_CHARACTER = 12
# Keys, quotes and punctuation of a message around its strings, generously rounded up.
_STRUCTURE_BYTES = 1024


def _characters(fields: Mapping[str, Any]) -> int:
    """How many characters the strings in these fields, nested ones included, hold."""
    total = 0
    for value in fields.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            total += _characters(value)
        elif isinstance(value, list):
            total += sum(len(item) for item in value if isinstance(item, str))
    return total


def _clean(value: str) -> str:
    """Replace what cannot be encoded as UTF-8 (lone surrogates) so the JSON stays valid."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return ""


def _header(headers: Any, name: str) -> str:
    if isinstance(headers, dict):
        pairs: Any = headers.items()
    elif isinstance(headers, list):
        pairs = (pair for pair in headers if isinstance(pair, (list, tuple)) and len(pair) == 2)
    else:
        return ""
    for key, value in pairs:
        if isinstance(key, str) and key.lower() == name:
            return _text(value)
    return ""


def _path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def _timestamp(value: Any) -> datetime:
    """The event time as an aware UTC datetime; now when it is missing or unreadable."""
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(_iso_for_python39(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parsed = datetime.fromtimestamp(value, tz=timezone.utc)
        else:
            return datetime.now(timezone.utc)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        return datetime.now(timezone.utc)


def _iso_for_python39(value: str) -> str:
    """Sentry writes '...T07:17:59.120278Z'; fromisoformat before 3.11 needs '+00:00'."""
    return value[:-1] + "+00:00" if value.endswith("Z") else value
