"""A Celery app whose worker initialises Sentry before its prefork pool forks."""

from __future__ import annotations

import os
import tempfile

import sentry_sdk
from celery import Celery

from sentry_segment import SegmentIntegration


def make_app(folder: str) -> Celery:
    """A Celery app on a filesystem broker in ``folder`` (no broker server needed)."""
    for name in ("queue", "processed", "control"):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    app = Celery("celery_app", broker="filesystem://")
    app.conf.broker_transport_options = {
        "data_folder_in": os.path.join(folder, "queue"),
        "data_folder_out": os.path.join(folder, "queue"),
        "processed_folder": os.path.join(folder, "processed"),
        # Celery's broadcast exchanges; by default it writes them to ./control.
        "control_folder": os.path.join(folder, "control"),
    }
    app.conf.task_ignore_result = True
    return app


# The worker's folder comes from the test; a process that only imports make_app gets its own.
app = make_app(
    os.environ.get("TEST_BROKER_FOLDER") or tempfile.mkdtemp(prefix="sentry-segment-celery-")
)


@app.task(name="fail")
def fail(user_id: str) -> None:
    sentry_sdk.set_user({"id": user_id})
    raise ValueError(f"task failed in pool process {os.getpid()}")


if os.environ.get("TEST_DSN"):
    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
    with sentry_sdk.new_scope() as scope:
        scope.set_user({"id": "celery-main"})
        try:
            raise RuntimeError("error while the worker starts")
        except RuntimeError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
