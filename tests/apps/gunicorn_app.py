"""A Flask app for gunicorn --preload: Sentry is initialised in the master, before fork."""

from __future__ import annotations

import os

import sentry_sdk
from flask import Flask

from sentry_segment import SegmentIntegration

sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])

# The master forwards one error before forking, so a Segment client and its consumer thread
# exist before the workers are forked from it: the case that loses events without fork care.
with sentry_sdk.new_scope() as scope:
    scope.set_user({"id": "master"})
    try:
        raise RuntimeError("error while the master starts")
    except RuntimeError:
        sentry_sdk.capture_exception()
sentry_sdk.flush(timeout=5)

app = Flask(__name__)


@app.route("/fail/<user_id>")
def fail(user_id: str) -> str:
    sentry_sdk.set_user({"id": user_id})
    raise ValueError(f"request failed in worker {os.getpid()}")


@app.route("/pid")
def pid() -> str:
    return str(os.getpid())
