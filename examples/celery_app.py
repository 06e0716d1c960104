"""Celery: the task receives the user ID with its arguments and tells Sentry who it runs for.
Sentry is initialised when the worker imports this module, before the prefork pool forks.

Run it (a filesystem broker, so no broker server is needed for the example):

    pip install sentry-segment celery
    sentry-segment listen &          # a local Segment collector: one line per message
    export SENTRY_SEGMENT_HOST=http://127.0.0.1:8765 SENTRY_SEGMENT_WRITE_KEY=anyKey
    export SENTRY_DSN=http://public@127.0.0.1:8766/1   # yours, or sentry-segment listen's
    celery --workdir examples -A celery_app worker --pool prefork --concurrency 2
    python examples/celery_app.py 42                  # the task fails: "Error Captured" for 42
"""

from __future__ import annotations

import os
import sys
import tempfile

import sentry_sdk
from celery import Celery

from sentry_segment import SegmentIntegration

FOLDER = os.environ.get(
    "BROKER_FOLDER", os.path.join(tempfile.gettempdir(), "sentry-segment-broker")
)
for name in ("queue", "processed", "control"):
    os.makedirs(os.path.join(FOLDER, name), exist_ok=True)

app = Celery("celery_app", broker=os.environ.get("CELERY_BROKER_URL", "filesystem://"))
app.conf.broker_transport_options = {
    "data_folder_in": os.path.join(FOLDER, "queue"),
    "data_folder_out": os.path.join(FOLDER, "queue"),
    "processed_folder": os.path.join(FOLDER, "processed"),
    # Celery's broadcast exchanges; by default it writes them to ./control.
    "control_folder": os.path.join(FOLDER, "control"),
}
app.conf.task_ignore_result = True

sentry_sdk.init(dsn=os.environ.get("SENTRY_DSN"), integrations=[SegmentIntegration()])


@app.task(name="charge_card")
def charge_card(user_id: str) -> None:
    sentry_sdk.set_user({"id": user_id})
    raise ValueError(f"the payment provider declined user {user_id}'s card")


if __name__ == "__main__":
    charge_card.delay(sys.argv[1] if len(sys.argv) > 1 else "42")
    print("queued charge_card")
