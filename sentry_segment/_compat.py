"""Feature detection for the sentry-sdk releases we support (2.x and the 3.0 beta): no versions."""

from __future__ import annotations

from typing import Callable, Optional

from sentry_sdk.integrations import logging as sentry_logging


def ignore_logger(name: str) -> None:
    """Keep a logger's records out of Sentry: events, breadcrumbs and Sentry Logs.

    From sentry-sdk 3, ignore_logger hides a logger from Sentry Logs only, and
    ignore_logger_for_events does what ignore_logger did before (events and breadcrumbs).
    """
    sentry_logging.ignore_logger(name)
    for_events: Optional[Callable[[str], None]] = getattr(
        sentry_logging, "ignore_logger_for_events", None
    )
    if for_events is not None:
        for_events(name)
