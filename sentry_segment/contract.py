"""What the integration relies on that sentry-sdk and Segment's client do not promise, checked
once at setup: a release that changed it leaves the application and Sentry as without us."""

from __future__ import annotations

import inspect
import logging
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# (module, attribute path, what it must be): "callable", "int", or any "object".
RELIED_ON = (
    ("sentry_sdk.client", "_Client.capture_event", "callable"),
    ("sentry_sdk.transport", "HttpTransport._send_envelope", "callable"),
    ("sentry_sdk.transport", "HttpTransport.record_lost_event", "callable"),
    ("sentry_sdk.transport", "HttpTransport.on_dropped_event", "callable"),
    ("segment.analytics.consumer", "Consumer.run", "callable"),
    ("segment.analytics.consumer", "BATCH_SIZE_LIMIT", "int"),
    ("segment.analytics.consumer", "DEFAULT_MAX_RATE_LIMIT_DURATION", "int"),
    ("segment.analytics.request", "post", "callable"),
    ("segment.analytics.request", "parse_retry_after", "callable"),
    ("segment.analytics.request", "_session", "object"),
)
# Where a gap is reported from: the package, for its version.
_PACKAGES = {"sentry_sdk": "sentry-sdk", "segment": "segment-analytics-python"}

logger = logging.getLogger("sentry_segment")


def gaps() -> list[str]:
    """Each relied-on piece that is missing or not of its kind, with its package's version."""
    found = []
    for module_name, path, kind in RELIED_ON:
        if not _present(module_name, path, kind):
            package = _PACKAGES[module_name.split(".", 1)[0]]
            found.append(f"{module_name}.{path} ({package} {_version(package)})")
    return found


def _present(module_name: str, path: str, kind: str) -> bool:
    try:
        value: Any = import_module(module_name)
        for name in path.split("."):
            value = getattr(value, name)
    except (ImportError, AttributeError):
        return False
    if kind == "int":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "callable":
        return callable(value) and not inspect.isclass(value)
    return True


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def report(missing: list[str]) -> None:
    """One warning: what changed, and that forwarding is off (Sentry works as without it)."""
    logger.warning(
        "sentry-segment: forwarding is off: it relies on %s, which this release changed; "
        "Sentry works as without the integration. Pin the versions in docs/compatibility.md "
        "or upgrade sentry-segment",
        ", ".join(missing),
    )
