"""What to do when nothing is forwarded: the lines the integration logs and `check` prints."""

from __future__ import annotations

import ipaddress
from typing import Optional
from urllib.parse import urlsplit


def _has_data_collection() -> bool:
    """Whether this sentry-sdk has the ``data_collection`` option (2.65 and later)."""
    from sentry_sdk.consts import DEFAULT_OPTIONS

    return "data_collection" in DEFAULT_OPTIONS


def no_user_id(data_collection: Optional[bool] = None) -> str:
    """What to do when Sentry's errors carry no user ID, so none is forwarded.

    ``data_collection`` says whether the installed sentry-sdk has that option; None looks.
    """
    if data_collection is None:
        data_collection = _has_data_collection()
    framework_option = (
        'send_default_pii=True or data_collection={"user_info": True}'
        if data_collection
        else "send_default_pii=True (data_collection on sentry-sdk 2.65+)"
    )
    return (
        "errors without a user ID are not forwarded (counted in skipped_no_user): call "
        'sentry_sdk.set_user({"id": ...}) where users sign in, or let Sentry\'s integration '
        "read the signed-in user (Django, Flask-Login, Starlette/FastAPI auth) with "
        f"sentry_sdk.init({framework_option}); Django under ASGI needs set_user"
    )


def no_dsn() -> str:
    """What to do when SENTRY_DSN is unset: Sentry sends nothing, so nothing is forwarded."""
    return (
        "SENTRY_DSN is not set: without a DSN Sentry sends nothing, and only what Sentry sends "
        "is forwarded (counted in skipped_not_sent); set SENTRY_DSN or pass init(dsn=...). "
        "Any DSN will do to try it, even http://public@127.0.0.1:9/1 where nothing listens"
    )


def clear_text_host(host: str) -> Optional[str]:
    """A warning when the write key would travel unencrypted to a host off this machine."""
    try:
        parts = urlsplit(host.strip())
        hostname = parts.hostname or ""
    except ValueError:  # not a URL at all: the configuration check says so
        return None
    if parts.scheme.lower() != "http" or _is_loopback(hostname):
        return None
    return (
        f"{host} is plain http:// and not on this machine: the write key would travel in "
        "clear text; use https://"
    )


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
