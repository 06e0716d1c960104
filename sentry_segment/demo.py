"""The main job on loopback: a web app's errors reach Sentry and, as track calls, Segment.

Run with ``make demo`` or ``python -m sentry_segment.demo``; needs the ``testing`` extra.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, Callable, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sentry_sdk
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

from .integration import SegmentIntegration
from .testing import SegmentCollector, SentryRecorder

DEMO_WRITE_KEY = "demo_write_key_0123456789"
StartResponse = Callable[..., Any]


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A tiny WSGI app: signs the caller in from a header, then fails at checkout."""
    user_id = environ.get("HTTP_X_USER_ID")
    if user_id:
        sentry_sdk.set_user({"id": user_id, "email": f"user{user_id}@example.com"})
    if environ.get("PATH_INFO") == "/report":
        sentry_sdk.capture_message("weekly report generated")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    raise ValueError("payment provider declined the card")


class _QuietHandler(WSGIRequestHandler):
    """No access log and no traceback on stderr: the demo prints what Sentry got instead."""

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def get_stderr(self) -> TextIO:
        return io.StringIO()


def _serve(app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def run(out: TextIO = sys.stdout) -> dict[str, int]:
    """Run the demo, print what arrived where, and return the integration's stats."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with SegmentCollector() as segment, SentryRecorder() as sentry:
        integration = SegmentIntegration(write_key=DEMO_WRITE_KEY, host=segment.host)
        sentry_sdk.init(dsn=sentry.dsn(), integrations=[integration], release="demo-1.0")
        web = _serve(SentryWsgiMiddleware(shop))
        base = f"http://127.0.0.1:{web.server_port}"
        browser = {"User-Agent": "Mozilla/5.0 (demo)", "Referer": f"{base}/cart"}

        requests = [
            ("signed-in user 42 fails at checkout", "/checkout?cart=3", {"X-User-Id": "42"}),
            ("signed-in user 7 fails at checkout", "/checkout?cart=9", {"X-User-Id": "7"}),
            ("anonymous visitor fails at checkout", "/checkout?cart=1", {}),
            ("user 42 runs a report (a message, not an error)", "/report", {"X-User-Id": "42"}),
        ]
        print("Requests to the web app:", file=out)
        for label, path, headers in requests:
            status = _get(base + path, {**browser, **headers})
            print(f"  GET {path:<18} -> {status}  ({label})", file=out)

        sentry_sdk.flush(timeout=5)
        web.shutdown()

        print("\nWhat Sentry received:", file=out)
        for event in sentry.events():
            values = (event.get("exception") or {}).get("values") or [{}]
            kind = values[0].get("type") or f"message: {event.get('message')!r}"
            user = (event.get("user") or {}).get("id", "-")
            print(f"  {event['event_id']}  user={user:<3} {kind}", file=out)

        print("\nWhat Segment received (POST /v1/batch bodies):", file=out)
        for batch in segment.batches():
            body = {**batch.body, "writeKey": "<masked>"}
            print(json.dumps(body, indent=2, sort_keys=True), file=out)

        stats = integration.stats()
        print("\nintegration.stats():", file=out)
        print(json.dumps(stats, indent=2), file=out)
        sentry_sdk.get_client().close(timeout=2)
        return stats


if __name__ == "__main__":
    run()
