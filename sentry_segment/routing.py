"""Decides, per Sentry project, whether events are forwarded, with which write key and limit key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from .config import Options, WriteKey

_ORG_HOST = re.compile(r"^o(\d+)\.")


@dataclass(frozen=True)
class Route:
    """Where the events of one Sentry project go."""

    project: str
    organization: str
    enabled: bool
    write_key: Optional[WriteKey]
    host: str
    # The counter of an event this route does not forward.
    skipped_as: str = "skipped_disabled"


def parse_dsn(dsn: Optional[str]) -> tuple[str, str]:
    """(project ID, organization key) of a DSN; the key is the org ID when the host has one."""
    if not dsn:
        return "", "no-dsn"
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        public_key = parts.username or ""
    except ValueError:
        return "", "invalid-dsn"
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    match = _ORG_HOST.match(host)
    organization = match.group(1) if match else f"{host}:{public_key}"
    return project, organization


def route(options: Options, dsn: Optional[str]) -> Route:
    """Where the events of the DSN's project go."""
    project, organization = parse_dsn(dsn)
    return project_route(options, project, organization)


def project_route(options: Options, project: str, organization: str = "") -> Route:
    """The organization configuration shallow-merged with the project's override."""
    override = options.projects.get(project)
    enabled = options.enabled
    write_key = options.write_key
    if override is not None:
        if override.enabled is not None:
            enabled = override.enabled
        if override.write_key is not None:
            write_key = override.write_key
    # Without a write key the project is inert, as sentry-sdk is without a DSN.
    return Route(
        project=project,
        organization=organization,
        enabled=enabled and write_key is not None,
        skipped_as="skipped_disabled" if not enabled else "skipped_no_write_key",
        write_key=write_key,
        host=options.host,
    )
