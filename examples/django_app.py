"""Django in one file: users sign in through django.contrib.auth (a trusted header here, with
RemoteUserMiddleware), and Sentry's Django integration reports request.user.

Needs sentry-sdk 2.65 or later for data_collection; on older ones pass send_default_pii=True
instead (it sends more: IP addresses, cookies, request bodies). Under ASGI Sentry reports no
user either way: call sentry_sdk.set_user where users sign in.

Run it:

    pip install sentry-segment django "sentry-sdk>=2.65"
    sentry-segment listen &          # a local Segment collector: one line per message
    export SENTRY_SEGMENT_HOST=http://127.0.0.1:8765 SENTRY_SEGMENT_WRITE_KEY=anyKey
    export SENTRY_DSN=http://public@127.0.0.1:8766/1   # yours, or sentry-segment listen's
    python examples/django_app.py                      # serves on 127.0.0.1:8000 (PORT=...)
    curl -H 'X-Remote-User: alice' http://127.0.0.1:8000/checkout
    # 500, and "Error Captured" with userId = alice's primary key
"""

from __future__ import annotations

import os
import sys
import tempfile

import django
import sentry_sdk
from django.conf import settings

from sentry_segment import SegmentIntegration

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-secret"),
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        f"{__name__}.HeaderRemoteUserMiddleware",
    ],
    AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.RemoteUserBackend"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "sentry-segment-django-example.sqlite3"),
        }
    },
)
# data_collection user_info (sentry-sdk 2.65+) lets Sentry's Django integration read
# request.user; without it every error is skipped_no_user.
sentry_sdk.init(
    dsn=os.environ.get("SENTRY_DSN"),
    integrations=[SegmentIntegration()],
    data_collection={"user_info": True},
)
django.setup()

from django.contrib.auth.middleware import RemoteUserMiddleware  # noqa: E402
from django.core.management import call_command, execute_from_command_line  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


class HeaderRemoteUserMiddleware(RemoteUserMiddleware):
    """Signs in the user a trusted proxy names in X-Remote-User (Django's documented way)."""

    header = "HTTP_X_REMOTE_USER"


def checkout(request: HttpRequest) -> HttpResponse:
    raise ValueError(f"the payment provider declined {request.user}'s card")


urlpatterns = [path("checkout", checkout)]

if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    port = os.environ.get("PORT", "8000")
    execute_from_command_line([sys.argv[0], "runserver", f"127.0.0.1:{port}", "--noreload"])
