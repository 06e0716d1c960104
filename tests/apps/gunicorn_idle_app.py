"""A WSGI app for gunicorn --preload whose master initialises Sentry and, with TEST_CAPTURE=1,
forwards one error before the workers are forked."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Callable

import sentry_sdk

from sentry_segment import SegmentIntegration

from .errors import capture_error

sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
if os.environ.get("TEST_CAPTURE") == "1":
    capture_error("master")
    sentry_sdk.flush(timeout=5)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
