"""Reads, validates and masks the integration's options (keyword arguments, then environment)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, parse_many

US_HOST = "https://api.segment.io"
EU_HOST = "https://events.eu1.segmentapis.com"
REGION_HOSTS = {"us": US_HOST, "eu": EU_HOST}
DEFAULT_RATE_LIMIT = "200/second"
DEFAULT_EVENT_NAME = "Error Captured"
DEFAULT_MAX_QUEUE_SIZE = 10_000
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 10
MEMORY_STORAGE = "memory://"
# limits storage schemes that can share one limit between processes, and the extra each needs.
SHARED_STORAGES = {
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "redis+sentinel": ("redis", "redis"),
    "redis+cluster": ("redis", "redis"),
    "memcached": ("pymemcache", "memcached"),
}

ENV = {
    "write_key": "SENTRY_SEGMENT_WRITE_KEY",
    "host": "SENTRY_SEGMENT_HOST",
    "region": "SENTRY_SEGMENT_REGION",
    "rate_limit": "SENTRY_SEGMENT_RATE_LIMIT",
    "projects": "SENTRY_SEGMENT_PROJECTS",
    "enabled": "SENTRY_SEGMENT_ENABLED",
    "event_name": "SENTRY_SEGMENT_EVENT_NAME",
    "max_queue_size": "SENTRY_SEGMENT_MAX_QUEUE_SIZE",
    "timeout": "SENTRY_SEGMENT_TIMEOUT",
    "max_retries": "SENTRY_SEGMENT_MAX_RETRIES",
    "rate_limit_storage": "SENTRY_SEGMENT_RATE_LIMIT_STORAGE",
}

# Sentry's forwarder accepts the same alphabet for organization write keys.
_WRITE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
_PROJECT_ID = re.compile(r"^[0-9]+$")
_OVERRIDE_KEYS = frozenset({"write_key", "enabled"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NO_LIMIT = frozenset({"off", "none", "unlimited"})


class ConfigurationError(ValueError):
    """An option of SegmentIntegration is missing or invalid."""


def mask_uri(uri: str) -> str:
    """A storage URI with any password replaced by ****."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def mask(write_key: Optional[str]) -> str:
    """Show a write key as its last four characters only, as logs and reprs must."""
    if not write_key:
        return "<unset>"
    return "****" + write_key[-4:] if len(write_key) > 12 else "****"


class WriteKey(str):
    """A write key whose repr() never shows the secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"WriteKey({mask(self)!r})"


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


@dataclass(frozen=True)
class Options:
    """The validated configuration of one SegmentIntegration."""

    write_key: Optional[WriteKey]
    host: str = US_HOST
    rate_limits: tuple[RateLimitItem, ...] = field(default_factory=tuple)
    projects: Mapping[str, ProjectOverride] = field(default_factory=dict)
    enabled: bool = True
    event_name: str = DEFAULT_EVENT_NAME
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    rate_limit_storage: str = MEMORY_STORAGE

    def __repr__(self) -> str:
        return f"Options({self.describe()!r})"

    def describe(self) -> dict[str, Any]:
        """The configuration as plain data, write keys masked."""
        return {
            "write_key": mask(self.write_key),
            "host": self.host,
            "rate_limit": "; ".join(str(item) for item in self.rate_limits) or "off",
            "rate_limit_storage": mask_uri(self.rate_limit_storage),
            "enabled": self.enabled,
            "event_name": self.event_name,
            "max_queue_size": self.max_queue_size,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "projects": {
                project: override.describe() for project, override in self.projects.items()
            },
        }


_UNSET: Any = object()


def _error(option: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"sentry-segment: {option} (env {ENV[option]}) {problem}")


def _pick(option: str, given: Any, environ: Mapping[str, str]) -> tuple[Any, bool]:
    """The explicit argument if given, else the environment's raw string; and whether set."""
    if given is not _UNSET and given is not None:
        return given, True
    raw = environ.get(ENV[option])
    if raw is not None and raw.strip() != "":
        return raw.strip(), True
    return None, False


def _write_key(option: str, value: Any) -> WriteKey:
    if not isinstance(value, str) or not value:
        raise _error(option, "must be a non-empty string")
    if not _WRITE_KEY.match(value):
        raise _error(option, "may contain only letters, digits, '_' and '-'")
    return WriteKey(value)


def _bool(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _error(option, f"must be true or false, got {value!r}")


def _host(host: Any, region: Any) -> str:
    if host is not None and region is not None:
        raise ConfigurationError(
            "sentry-segment: give host (env SENTRY_SEGMENT_HOST) or region "
            "(env SENTRY_SEGMENT_REGION), not both"
        )
    if region is not None:
        if not isinstance(region, str) or region.lower() not in REGION_HOSTS:
            raise _error("region", f"must be 'us' or 'eu', got {region!r}")
        return REGION_HOSTS[region.lower()]
    if host is None:
        return US_HOST
    if not isinstance(host, str):
        raise _error("host", f"must be a URL string, got {type(host).__name__}")
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _error("host", f"must start with http:// or https://, got {host!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _error(
            "host", f"must be scheme and host only (the client appends /v1/batch), got {host!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _rate_limits(value: Any) -> tuple[RateLimitItem, ...]:
    if isinstance(value, str) and value.lower() in _NO_LIMIT:
        return ()
    if not isinstance(value, str):
        raise _error("rate_limit", f"must be a string like '200/second', got {value!r}")
    try:
        return tuple(parse_many(value))
    except ValueError:
        raise _error(
            "rate_limit", f"must look like '200/second' or '10/second;1000/hour', got {value!r}"
        ) from None


def _storage(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise _error("rate_limit_storage", f"must be a limits storage URI, got {value!r}")
    scheme = value.split("://", 1)[0].lower()
    if value == MEMORY_STORAGE or scheme == "memory":
        return MEMORY_STORAGE
    if scheme not in SHARED_STORAGES:
        allowed = ", ".join(f"{name}://" for name in ("memory", *SHARED_STORAGES))
        raise _error("rate_limit_storage", f"scheme {scheme!r} is not one of {allowed}")
    module, extra = SHARED_STORAGES[scheme]
    if importlib.util.find_spec(module) is None:
        raise _error(
            "rate_limit_storage",
            f"{scheme}:// needs the {module!r} package: pip install 'sentry-segment[{extra}]'",
        )
    return value


def _integer(option: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = minimum - 1
    if isinstance(value, (bool, float)) or number < minimum:
        raise _error(option, f"must be an integer of at least {minimum}, got {value!r}")
    return number


def _seconds(option: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if isinstance(value, bool) or not 0 < seconds < float("inf"):
        raise _error(option, f"must be a positive number of seconds, got {value!r}")
    return seconds


def _projects(value: Any) -> dict[str, ProjectOverride]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _error(
                "projects", f"is not valid JSON: {exc.msg} at position {exc.pos}"
            ) from None
        except RecursionError:
            raise _error("projects", "is nested too deeply") from None
    if not isinstance(value, Mapping):
        raise _error("projects", "must be a JSON object keyed by Sentry project ID")
    overrides = {}
    for raw_project, raw_override in value.items():
        project = str(raw_project)
        if isinstance(raw_project, bool) or not _PROJECT_ID.match(project):
            raise _error("projects", f"keys must be numeric Sentry project IDs, got {project!r}")
        if not isinstance(raw_override, Mapping):
            raise _error("projects", f"[{project!r}] must be an object")
        unknown = sorted(str(key) for key in raw_override if key not in _OVERRIDE_KEYS)
        if unknown:
            raise _error(
                "projects",
                f"[{project!r}] has unknown keys {unknown}; allowed: {sorted(_OVERRIDE_KEYS)}",
            )
        write_key = raw_override.get("write_key")
        if "write_key" in raw_override and (not isinstance(write_key, str) or not write_key):
            raise _error(
                "projects",
                f"[{project!r}].write_key must be a non-empty string "
                "(to stop forwarding for a project, set enabled to false)",
            )
        if write_key is not None and not _WRITE_KEY.match(write_key):
            raise _error(
                "projects", f"[{project!r}].write_key may contain only letters, digits, '_' and '-'"
            )
        enabled = raw_override.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise _error("projects", f"[{project!r}].enabled must be true or false")
        overrides[project] = ProjectOverride(
            write_key=WriteKey(write_key) if write_key is not None else None, enabled=enabled
        )
    return overrides


def resolve(
    *,
    write_key: Any = _UNSET,
    host: Any = _UNSET,
    region: Any = _UNSET,
    rate_limit: Any = _UNSET,
    projects: Any = _UNSET,
    enabled: Any = _UNSET,
    event_name: Any = _UNSET,
    max_queue_size: Any = _UNSET,
    timeout: Any = _UNSET,
    max_retries: Any = _UNSET,
    rate_limit_storage: Any = _UNSET,
    environ: Optional[Mapping[str, str]] = None,
) -> Options:
    """Validate explicit options, falling back to the environment for those not given."""
    env = os.environ if environ is None else environ
    try:
        return _resolve(
            write_key=write_key,
            host=host,
            region=region,
            rate_limit=rate_limit,
            projects=projects,
            enabled=enabled,
            event_name=event_name,
            max_queue_size=max_queue_size,
            timeout=timeout,
            max_retries=max_retries,
            rate_limit_storage=rate_limit_storage,
            env=env,
        )
    except ConfigurationError as error:
        # A value echoed by the message may be a write key given to the wrong option.
        message = str(error)
        for secret in (write_key, env.get(ENV["write_key"])):
            if isinstance(secret, str) and len(secret) >= 4:
                message = message.replace(secret.strip(), mask(secret.strip()))
        raise ConfigurationError(message) from None


def _resolve(
    *,
    write_key: Any,
    host: Any,
    region: Any,
    rate_limit: Any,
    projects: Any,
    enabled: Any,
    event_name: Any,
    max_queue_size: Any,
    timeout: Any,
    max_retries: Any,
    rate_limit_storage: Any,
    env: Mapping[str, str],
) -> Options:
    enabled_value, _ = _pick("enabled", enabled, env)
    is_enabled = True if enabled_value is None else _bool("enabled", enabled_value)

    given_host = host is not _UNSET and host is not None
    given_region = region is not _UNSET and region is not None
    if given_host or given_region:
        resolved_host = _host(host if given_host else None, region if given_region else None)
    else:
        resolved_host = _host(_pick("host", None, env)[0], _pick("region", None, env)[0])

    limit_value, limit_set = _pick("rate_limit", rate_limit, env)
    limits = _rate_limits(limit_value if limit_set else DEFAULT_RATE_LIMIT)

    projects_value, projects_set = _pick("projects", projects, env)
    overrides = _projects(projects_value) if projects_set else {}

    name_value, name_set = _pick("event_name", event_name, env)
    if name_set and (not isinstance(name_value, str) or not name_value.strip()):
        raise _error("event_name", "must be a non-empty string")
    name = name_value if name_set else DEFAULT_EVENT_NAME

    size_value, size_set = _pick("max_queue_size", max_queue_size, env)
    size = _integer("max_queue_size", size_value, 1) if size_set else DEFAULT_MAX_QUEUE_SIZE
    timeout_value, timeout_set = _pick("timeout", timeout, env)
    seconds = _seconds("timeout", timeout_value) if timeout_set else DEFAULT_TIMEOUT
    retries_value, retries_set = _pick("max_retries", max_retries, env)
    retries = _integer("max_retries", retries_value, 0) if retries_set else DEFAULT_MAX_RETRIES
    storage_value, storage_set = _pick("rate_limit_storage", rate_limit_storage, env)
    storage = _storage(storage_value) if storage_set else MEMORY_STORAGE

    key_value, key_set = _pick("write_key", write_key, env)
    key = _write_key("write_key", key_value) if key_set else None
    if key is None and is_enabled:
        raise _error("write_key", "is required (a Segment HTTP API source's write key)")
    for project, override in overrides.items():
        if key is None and override.enabled and override.write_key is None:
            raise _error(
                "write_key",
                f"is required: project {project} is enabled and has no write_key of its own",
            )

    return Options(
        write_key=key,
        host=resolved_host,
        rate_limits=limits,
        projects=overrides,
        enabled=is_enabled,
        event_name=name,
        max_queue_size=size,
        timeout=seconds,
        max_retries=retries,
        rate_limit_storage=storage,
    )
