"""Feature detection for the sentry-sdk releases we support (2.x and the 3.0 beta): no versions."""

from __future__ import annotations

from typing import Callable, Optional

from sentry_sdk.integrations import logging as sentry_logging


def ignore_logger(name: str) -> None:
    """Keep a logger's records out of Sentry: events, breadcrumbs and Sentry Logs.

    Which function covers what changed across releases; each one present is called.
    """
    sentry_logging.ignore_logger(name)
    # sentry-sdk 2.x from its Sentry Logs on: ignore_logger leaves Sentry Logs alone. 3.0:
    # ignore_logger is Sentry Logs only, and ignore_logger_for_events does the rest.
    for other in ("ignore_logger_for_sentry_logs", "ignore_logger_for_events"):
        ignore: Optional[Callable[[str], None]] = getattr(sentry_logging, other, None)
        if ignore is not None:
            ignore(name)
