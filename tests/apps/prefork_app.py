"""A Flask app for servers that import it once and fork workers from that process (uWSGI,
gunicorn --preload) or import it in each worker (gunicorn -k gevent without --preload).

Every event carries the PID of the process that captured it as the tag ``pid``, so a test
can tell the master's events from each worker's.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import sentry_sdk
from flask import Flask, request
from sentry_sdk.integrations.flask import FlaskIntegration

from sentry_segment import SegmentIntegration

# sentry-sdk's WSGI support imports Django where it is installed (it is, for other tests). In a
# worker forked from a preloading gunicorn, gevent's monkey.patch_all() looks at every object
# the master made, and Django's settings raise ImproperlyConfigured when looked at before they
# are configured: each gevent worker would fail to boot. Configured (empty), they do not.
try:
    from django.conf import settings
except ImportError:
    pass
else:
    if not settings.configured:
        settings.configure()

# sentry-sdk's logger, through which the integration warns, prints only with debug=True (the
# handler and filter sentry-sdk gives it on import). Here its warnings go to stderr.
SDK_LOG_PREFIX = "sentry_sdk.errors"
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter(f"{SDK_LOG_PREFIX} %(levelname)s: %(message)s"))
_sdk_logger = logging.getLogger("sentry_sdk.errors")
_sdk_logger.handlers, _sdk_logger.filters = [_handler], []
_sdk_logger.setLevel(logging.WARNING)

sentry_sdk.init(
    dsn=os.environ["TEST_DSN"],
    integrations=[SegmentIntegration(), FlaskIntegration()],
    auto_enabling_integrations=False,
)

# Where the app is imported before the fork, this forwards one error from the master first,
# so the master has a worker thread and a Segment client when the workers are forked from it.
with sentry_sdk.new_scope() as scope:
    scope.set_user({"id": "startup"})
    scope.set_tag("pid", str(os.getpid()))
    try:
        raise RuntimeError("error while the app is imported")
    except RuntimeError:
        sentry_sdk.capture_exception()
sentry_sdk.flush(timeout=5)  # this integration's threads have ended when it returns
# sentry-sdk's own worker thread yields (sleep(0)) after each job before it waits again: under
# load it can hold the GIL when uWSGI forks from C, and that worker hangs for good (3 of 80
# runs here, with forwarding disabled too). Let it settle, so these tests measure ours.
time.sleep(0.2)

app = Flask(__name__)
# Flask would print each request's traceback on stderr, where the tests look for others.
app.logger.disabled = True


@app.route("/fail/<user_id>")
def fail(user_id: str) -> str:
    # A short delay keeps this worker busy, so concurrent requests reach the other workers.
    time.sleep(float(request.args.get("delay", "0")))
    sentry_sdk.set_user({"id": user_id})
    sentry_sdk.set_tag("pid", str(os.getpid()))
    raise ValueError(f"request failed in worker {os.getpid()}")


@app.route("/pid")
def pid() -> str:
    time.sleep(float(request.args.get("delay", "0")))
    return str(os.getpid())
