"""The integration's options: one table of names, environment variables, defaults and checks."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many

from .payload import (
    ANONYMOUS_ID_KINDS,
    DEFAULT_EVENT_NAME,
    EVENT_TYPES,
    INCLUDABLE,
    IP_POLICIES,
    AnonymousSource,
    Shape,
)
from .scrub import Scrubber
from .secrets import WriteKey, given_secrets, mask, mask_uri, masked_text, shown

__all__ = ["ConfigurationError", "Options", "WriteKey", "mask", "mask_uri", "resolve"]

US_HOST = "https://api.segment.io"
EU_HOST = "https://events.eu1.segmentapis.com"
REGION_HOSTS = {"us": US_HOST, "eu": EU_HOST}
DEFAULT_RATE_LIMIT = "200/second"
DEFAULT_SENTRY_WEB_URL = "https://sentry.io"
MEMORY_STORAGE = "memory://"
ENV_PREFIX = "SENTRY_SEGMENT_"
# limits storage schemes that can share one limit between processes, and the extra each needs.
SHARED_STORAGES = {
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "redis+sentinel": ("redis", "redis"),
    "redis+cluster": ("redis", "redis"),
    "memcached": ("pymemcache", "memcached"),
}

# Sentry's forwarder accepts the same alphabet for organization write keys.
_WRITE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_PROJECT_ID = re.compile(r"[0-9]+")
_ORGANIZATION_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_OVERRIDE_KEYS = frozenset({"write_key", "enabled"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NO_LIMIT = frozenset({"off", "none", "unlimited"})


class ConfigurationError(ValueError):
    """An option of SegmentIntegration is missing or invalid."""


@dataclass(frozen=True)
class ProjectOverride:
    """What one Sentry project changes in the organization's configuration."""

    write_key: Optional[WriteKey] = None
    enabled: Optional[bool] = None

    def describe(self) -> dict[str, Any]:
        """The keys this override sets, write key masked."""
        described: dict[str, Any] = {}
        if self.write_key is not None:
            described["write_key"] = mask(self.write_key)
        if self.enabled is not None:
            described["enabled"] = self.enabled
        return described


# The checks of the table below: each takes the option's name and the value given (a keyword
# argument as passed, or an environment variable's text, both stripped of surrounding
# whitespace) and returns the option's value or raises ConfigurationError.
Parse = Callable[[str, Any], Any]


def _error(option: str, problem: str) -> ConfigurationError:
    variable = ENV.get(option)
    where = f" (env {variable})" if variable else ""
    return ConfigurationError(f"sentry-segment: {option}{where} {problem}")


def _write_key_problem(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if any(character.isspace() for character in value):
        return "contains whitespace; copy the key again from the Segment source"
    if not _WRITE_KEY.fullmatch(value):
        return "may contain only letters, digits, '_' and '-'"
    return None


def _write_key(option: str, value: Any) -> WriteKey:
    problem = _write_key_problem(value)
    if problem is not None:
        raise _error(option, problem)
    return WriteKey(value)


def _bool(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _error(option, f"must be true or false, got {shown(value)}")


def _region(option: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in REGION_HOSTS:
        raise _error(option, f"must be 'us' or 'eu', got {shown(value)}")
    return value.lower()


def _url(option: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _error(option, f"must be a URL string, got {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _error(option, f"must start with http:// or https://, got {shown(value)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _error(option, f"must be scheme and host only ({what}), got {shown(value)}")
    return f"{parts.scheme}://{parts.netloc}"


def _host(option: str, value: Any) -> str:
    return _url(option, value, "the client appends /v1/batch")


def _sentry_web_url(option: str, value: Any) -> str:
    return _url(option, value, "links add /organizations/...")


def _rate_limits(option: str, value: Any) -> tuple[RateLimitItem, ...]:
    if isinstance(value, str) and value.lower() in _NO_LIMIT:
        return ()
    if not isinstance(value, str):
        raise _error(option, f"must be a string like '200/second', got {shown(value)}")
    try:
        items = tuple(parse_many(value))
    except ValueError:
        raise _error(
            option, f"must look like '200/second' or '10/second;1000/hour', got {shown(value)}"
        ) from None
    if any(item.amount < 1 for item in items):
        raise _error(
            option,
            f"must allow at least 1 event, got {shown(value)}; to stop forwarding, set enabled "
            "to false (env SENTRY_SEGMENT_ENABLED=false)",
        )
    return items


def _storage(option: str, value: Any) -> str:
    if not isinstance(value, str) or "://" not in value:
        given = mask_uri(value) if isinstance(value, str) else type(value).__name__
        raise _error(option, f"must be a limits storage URI (scheme://...), got {given!r}")
    scheme = value.split("://", 1)[0].lower()
    if value == MEMORY_STORAGE or scheme == "memory":
        return MEMORY_STORAGE
    if scheme not in SHARED_STORAGES:
        allowed = ", ".join(f"{name}://" for name in ("memory", *SHARED_STORAGES))
        raise _error(option, f"scheme {scheme!r} is not one of {allowed}")
    module, extra = SHARED_STORAGES[scheme]
    if importlib.util.find_spec(module) is None:
        raise _error(
            option,
            f"{scheme}:// needs the {module!r} package: pip install 'sentry-segment[{extra}]'",
        )
    return value


def _integer(minimum: int) -> Parse:
    def parse(option: str, value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = minimum - 1
        if isinstance(value, (bool, float)) or number < minimum:
            raise _error(option, f"must be an integer of at least {minimum}, got {shown(value)}")
        return number

    return parse


def _seconds(option: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if isinstance(value, bool) or not 0 < seconds < float("inf"):
        raise _error(option, f"must be a positive number of seconds, got {shown(value)}")
    return seconds


def _text(option: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _error(option, "must be a non-empty string")
    return value


def _organization(option: str, value: Any) -> str:
    if not isinstance(value, str) or not _ORGANIZATION_SLUG.fullmatch(value):
        raise _error(option, f"must be a Sentry organization slug like 'acme', got {shown(value)}")
    return value


def _include(option: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        names = [name.strip() if isinstance(name, str) else name for name in value]
    else:
        raise _error(
            option, f"must be a list of names or a comma-separated string, got {shown(value)}"
        )
    unknown = [name for name in names if name and name not in INCLUDABLE]
    if unknown:
        raise _error(option, f"has unknown names {shown(unknown)}; valid: {', '.join(INCLUDABLE)}")
    return tuple(name for name in INCLUDABLE if name in names)


def _names(option: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(name, str) for name in value
    ):
        names = [name.strip() for name in value]
    else:
        raise _error(
            option, f"must be a list of names or a comma-separated string, got {shown(value)}"
        )
    return tuple(dict.fromkeys(name for name in names if name))


def _ip_policy(option: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in IP_POLICIES:
        raise _error(option, f"must be one of {', '.join(IP_POLICIES)}, got {shown(value)}")
    return value.lower()


def _anonymous_sources(option: str, value: Any) -> tuple[AnonymousSource, ...]:
    sources = []
    for name in _names(option, value):
        kind, _, key = name.partition(":")
        if kind not in ANONYMOUS_ID_KINDS or not key.strip():
            raise _error(
                option,
                f"has {shown(name)}; each source must be cookie:NAME, tag:NAME or user:KEY, as in "
                "'cookie:ajs_anonymous_id,tag:anonymous_id'",
            )
        sources.append(AnonymousSource(kind, key.strip()))
    return tuple(dict.fromkeys(sources))


def _event_types(option: str, value: Any) -> tuple[str, ...]:
    names = _names(option, value)
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise _error(option, f"has unknown types {shown(unknown)}; valid: {', '.join(EVENT_TYPES)}")
    if "error" not in names:
        raise _error(
            option, f"must include error (errors are always forwarded), got {shown(value)}"
        )
    return tuple(name for name in EVENT_TYPES if name in names)


_PROFILE_FIELDS = frozenset({"user_id", "anonymous_id"})


def _profile_url(option: str, value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise _error(option, f"must be an http:// or https:// URL template, got {shown(value)}")
    try:
        named = {field for _, field, _, _ in Formatter().parse(value) if field is not None}
        value.format(user_id="", anonymous_id="")
    except (ValueError, KeyError, IndexError, AttributeError):
        named = {"?"}
    if not named or not named <= _PROFILE_FIELDS:
        raise _error(
            option,
            "must name {user_id} or {anonymous_id} (and nothing else in braces), as in "
            "'https://app.segment.com/acme/unify/spaces/prod/explorer/{user_id}', "
            f"got {shown(value)}",
        )
    return value


def _callable(option: str, value: Any) -> Callable[..., Any]:
    if not callable(value):
        raise _error(
            option, f"must be a function (message, event) -> message or None, got {shown(value)}"
        )
    return value  # type: ignore[no-any-return]


def _projects(option: str, value: Any) -> dict[str, ProjectOverride]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _error(option, f"is not valid JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise _error(option, "is nested too deeply") from None
    if not isinstance(value, Mapping):
        raise _error(option, "must be a JSON object keyed by Sentry project ID")
    overrides = {}
    for raw_project, raw_override in value.items():
        project = str(raw_project)
        if isinstance(raw_project, bool) or not _PROJECT_ID.fullmatch(project):
            raise _error(option, f"keys must be numeric Sentry project IDs, got {shown(project)}")
        if not isinstance(raw_override, Mapping):
            raise _error(option, f"[{project!r}] must be an object")
        unknown = sorted(str(key) for key in raw_override if key not in _OVERRIDE_KEYS)
        if unknown:
            raise _error(
                option,
                f"[{project!r}] has unknown keys {shown(unknown)}; "
                f"allowed: {sorted(_OVERRIDE_KEYS)}",
            )
        write_key = raw_override.get("write_key")
        if "write_key" in raw_override and (not isinstance(write_key, str) or not write_key):
            raise _error(
                option,
                f"[{project!r}].write_key must be a non-empty string "
                "(to stop forwarding for a project, set enabled to false)",
            )
        if write_key is not None:
            write_key = write_key.strip()
            problem = _write_key_problem(write_key)
            if problem is not None:
                raise _error(option, f"[{project!r}].write_key {problem}")
            write_key = WriteKey(write_key)
        enabled = raw_override.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise _error(option, f"[{project!r}].enabled must be true or false")
        overrides[project] = ProjectOverride(write_key=write_key, enabled=enabled)
    return overrides


def _option(variable: Optional[str], default: Any, parse: Parse) -> Any:
    return field(default=default, metadata={"env": variable, "parse": parse})


def _no_overrides() -> Any:
    return field(
        default_factory=dict, metadata={"env": "SENTRY_SEGMENT_PROJECTS", "parse": _projects}
    )


@dataclass(frozen=True)
class Options:
    """The validated configuration of one SegmentIntegration: every option, its environment
    variable (None: keyword argument only), its default and its check, in one table."""

    write_key: Optional[WriteKey] = _option("SENTRY_SEGMENT_WRITE_KEY", None, _write_key)
    host: str = _option("SENTRY_SEGMENT_HOST", US_HOST, _host)
    region: Optional[str] = _option("SENTRY_SEGMENT_REGION", None, _region)
    rate_limit: tuple[RateLimitItem, ...] = _option(
        "SENTRY_SEGMENT_RATE_LIMIT", tuple(parse_many(DEFAULT_RATE_LIMIT)), _rate_limits
    )
    rate_limit_storage: str = _option("SENTRY_SEGMENT_RATE_LIMIT_STORAGE", MEMORY_STORAGE, _storage)
    projects: Mapping[str, ProjectOverride] = _no_overrides()
    enabled: bool = _option("SENTRY_SEGMENT_ENABLED", True, _bool)
    event_name: str = _option("SENTRY_SEGMENT_EVENT_NAME", DEFAULT_EVENT_NAME, _text)
    include: tuple[str, ...] = _option("SENTRY_SEGMENT_INCLUDE", (), _include)
    sentry_org: Optional[str] = _option("SENTRY_SEGMENT_SENTRY_ORG", None, _organization)
    sentry_web_url: str = _option(
        "SENTRY_SEGMENT_SENTRY_WEB_URL", DEFAULT_SENTRY_WEB_URL, _sentry_web_url
    )
    before_forward: Optional[Callable[..., Any]] = _option(None, None, _callable)
    max_queue_size: int = _option("SENTRY_SEGMENT_MAX_QUEUE_SIZE", 10_000, _integer(1))
    timeout: float = _option("SENTRY_SEGMENT_TIMEOUT", 10.0, _seconds)
    max_retries: int = _option("SENTRY_SEGMENT_MAX_RETRIES", 10, _integer(0))
    scrub: bool = _option("SENTRY_SEGMENT_SCRUB", True, _bool)
    sensitive_fields: tuple[str, ...] = _option("SENTRY_SEGMENT_SENSITIVE_FIELDS", (), _names)
    ip: str = _option("SENTRY_SEGMENT_IP", "full", _ip_policy)
    anonymous_id: tuple[AnonymousSource, ...] = _option(
        "SENTRY_SEGMENT_ANONYMOUS_ID", (), _anonymous_sources
    )
    event_types: tuple[str, ...] = _option("SENTRY_SEGMENT_EVENT_TYPES", ("error",), _event_types)
    profile_url: Optional[str] = _option("SENTRY_SEGMENT_PROFILE_URL", None, _profile_url)

    def __repr__(self) -> str:
        return f"Options({self.describe()!r})"

    @property
    def has_write_key(self) -> bool:
        """Whether any project can forward: a write key for the organization or an override."""
        return self.write_key is not None or any(
            override.write_key for override in self.projects.values()
        )

    @property
    def shape(self) -> Shape:
        """What this configuration makes of the forwarder's message."""
        return Shape(
            event_name=self.event_name,
            include=self.include,
            issues_url=f"{self.sentry_web_url}/organizations/{self.sentry_org}/issues/",
            scrubber=Scrubber(self.sensitive_fields) if self.scrub else None,
            ip=self.ip,
            anonymous_id=self.anonymous_id,
        )

    def describe(self) -> dict[str, Any]:
        """The configuration as plain data, write keys and storage passwords masked."""
        described = {option.name: getattr(self, option.name) for option in OPTIONS}
        described.update(
            write_key=mask(self.write_key),
            rate_limit="; ".join(str(item) for item in self.rate_limit) or "off",
            rate_limit_storage=mask_uri(self.rate_limit_storage),
            include=list(self.include),
            sensitive_fields=[masked_text(name) for name in self.sensitive_fields],
            anonymous_id=[masked_text(str(source)) for source in self.anonymous_id],
            event_types=list(self.event_types),
            before_forward=_describe_callable(self.before_forward),
            projects={project: override.describe() for project, override in self.projects.items()},
        )
        # A write key put in a free-text option (event_name, sentry_org) passes its check.
        for name in ("host", "event_name", "sentry_org", "sentry_web_url", "profile_url"):
            if isinstance(described[name], str):
                described[name] = masked_text(described[name])
        return described


def _describe_callable(function: Optional[Callable[..., Any]]) -> Optional[str]:
    if function is None:
        return None
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"


OPTIONS = dataclasses.fields(Options)
OPTION_NAMES = tuple(option.name for option in OPTIONS)
ENV: dict[str, str] = {
    option.name: option.metadata["env"] for option in OPTIONS if option.metadata["env"]
}
# Given as a keyword argument, either of these makes the other's environment variable unread.
_PAIRED = {"host": "region", "region": "host"}


def resolve(*, environ: Optional[Mapping[str, str]] = None, **given: Any) -> Options:
    """Validate explicit options, falling back to the environment for those not given.

    An option given as None counts as not given.
    """
    env = os.environ if environ is None else environ
    unexpected = sorted(set(given) - set(OPTION_NAMES))
    if unexpected:
        close = difflib.get_close_matches(unexpected[0], OPTION_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(f"SegmentIntegration got an unexpected option {unexpected[0]!r}{hint}")
    try:
        return _resolve(given, env)
    except ConfigurationError as error:
        # A value echoed by the message may be a write key given to the wrong option, one
        # that no check could tell from a host or a name: every one given is masked.
        raise ConfigurationError(masked_text(str(error), given_secrets(given, env))) from None


def _resolve(given: Mapping[str, Any], env: Mapping[str, str]) -> Options:
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = _pick(option.name, given, env)
        if raw is not None:
            values[option.name] = option.metadata["parse"](option.name, raw)
    if "host" in values and "region" in values:
        raise ConfigurationError(
            "sentry-segment: give host (env SENTRY_SEGMENT_HOST) or region "
            "(env SENTRY_SEGMENT_REGION), not both"
        )
    if "region" in values:
        values["host"] = REGION_HOSTS[values["region"]]
    options = Options(**values)
    if "sentry_url" in options.include and options.sentry_org is None:
        raise _error(
            "sentry_org",
            "is required to include sentry_url (env SENTRY_SEGMENT_INCLUDE): the links name "
            "the organization, as in https://sentry.io/organizations/acme/",
        )
    return options


def _pick(name: str, given: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """The explicit argument if given, else the environment's text; stripped; None if unset."""
    value = given.get(name)
    if value is not None:
        return value.strip() if isinstance(value, str) else value
    partner = _PAIRED.get(name)
    variable = ENV.get(name)
    if variable is None or (partner is not None and given.get(partner) is not None):
        return None
    text = env.get(variable)
    if text is None or not text.strip():
        return None
    return text.strip()


def unknown_variables(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """One line per SENTRY_SEGMENT_* variable that is no option's, with the likely one."""
    env = os.environ if environ is None else environ
    # Compared without the prefix, which every name shares.
    known = {variable[len(ENV_PREFIX) :]: variable for variable in ENV.values()}
    lines = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in ENV.values():
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], known, n=1, cutoff=0.6)
            hint = f"; did you mean {known[close[0]]}?" if close else ""
            lines.append(f"{name} is not a sentry-segment setting{hint}")
    return lines
