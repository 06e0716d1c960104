"""Flask: the signed-in user comes from the session that /login sets.

Run it, with `sentry-segment listen` standing in for Segment (or your own write key):

    pip install sentry-segment flask
    sentry-segment listen &          # a local Segment collector: one line per message
    export SENTRY_SEGMENT_HOST=http://127.0.0.1:8765 SENTRY_SEGMENT_WRITE_KEY=anyKey
    export SENTRY_DSN=http://public@127.0.0.1:8766/1   # yours, or sentry-segment listen's
    python examples/flask_app.py                       # serves on 127.0.0.1:5000 (PORT=...)
    curl -c jar 'http://127.0.0.1:5000/login?user=42'
    curl -b jar http://127.0.0.1:5000/checkout          # 500, and "Error Captured" for user 42
"""

from __future__ import annotations

import os

import sentry_sdk
from flask import Flask, request, session

from sentry_segment import SegmentIntegration

sentry_sdk.init(dsn=os.environ.get("SENTRY_DSN"), integrations=[SegmentIntegration()])

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "example-only-secret")


@app.before_request
def identify_user() -> None:
    if "user_id" in session:
        sentry_sdk.set_user({"id": session["user_id"]})


@app.route("/login")
def login() -> str:
    session["user_id"] = request.args["user"]
    return "signed in\n"


@app.route("/checkout")
def checkout() -> str:
    raise ValueError("the payment provider declined the card")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
