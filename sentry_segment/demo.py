"""The main job on loopback: a web app's errors reach Sentry and, as track calls, Segment.

Run with ``sentry-segment demo``, ``make demo`` or ``python -m sentry_segment.demo``; it needs
nothing beyond a plain install.
"""

from __future__ import annotations

import io
import json
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


# Why an event was not forwarded, by the counter that says so.
REASONS = {
    "skipped_no_user": "no user ID on the event",
    "skipped_not_error": "a message, not an error",
    "skipped_not_sent": "Sentry did not send it",
    "skipped_disabled": "forwarding is disabled",
    "skipped_no_write_key": "no write key",
    "rate_limited": "over the rate limit",
}


def _outcome(before: dict[str, int], after: dict[str, int]) -> str:
    """What became of one request's event, from the counters it moved."""
    moved = [name for name in after if after[name] > before[name]]
    if "delivered" in moved:
        return "forwarded: Segment has it"
    skipped = [name for name in moved if name in REASONS]
    if skipped:
        return f"skipped: {REASONS[skipped[0]]} ({skipped[0]})"
    return "not forwarded: " + (", ".join(moved) or "no counter moved")


def run(out: TextIO = sys.stdout) -> dict[str, int]:
    """Run the demo, print what became of each request's event, and return the stats."""
    with SegmentCollector() as segment, SentryRecorder() as sentry:
        integration = SegmentIntegration(write_key=DEMO_WRITE_KEY, host=segment.host)
        sentry_sdk.init(dsn=sentry.dsn(), integrations=[integration], release="demo-1.0")
        web = _serve(SentryWsgiMiddleware(shop))
        base = f"http://127.0.0.1:{web.server_port}"
        browser = {"User-Agent": "Mozilla/5.0 (demo)", "Referer": f"{base}/cart"}

        requests = [
            ("user 42", "/checkout?cart=3", {"X-User-Id": "42"}),
            ("user 7", "/checkout?cart=9", {"X-User-Id": "7"}),
            ("anonymous", "/checkout?cart=1", {}),
            ("user 42", "/report", {"X-User-Id": "42"}),
        ]
        print("A WSGI shop on loopback, with Sentry and Segment on loopback too:\n", file=out)
        for who, path, headers in requests:
            before = integration.stats()
            status = _get(base + path, {**browser, **headers})
            sentry_sdk.flush(timeout=5)
            outcome = _outcome(before, integration.stats())
            print(f"  GET {path:<17} {who:<10} -> {status}  {outcome}", file=out)

        web.shutdown()
        messages = segment.messages()
        print(
            f"\nSentry received {len(sentry.events())} events; Segment received "
            f"{len(messages)} messages in {len(segment.batches())} batches.",
            file=out,
        )
        stats = integration.stats()
        print(
            "integration.stats(): "
            + " ".join(f"{name}={count}" for name, count in stats.items() if count),
            file=out,
        )
        if messages:
            print("\nThe first message, as Segment received it:", file=out)
            print(json.dumps(messages[0], indent=2, sort_keys=True), file=out)
        sentry_sdk.get_client().close(timeout=2)
        return stats


if __name__ == "__main__":
    run()
