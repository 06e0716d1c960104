"""The `sentry-segment` command: check the configuration, send a test event, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Optional, TextIO

from . import __version__, payload
from .config import ConfigurationError, Options, mask, resolve
from .delivery import redact, segment_message
from .routing import project_route

TEST_EVENT_NAME_NOTE = "sent by `sentry-segment send-test-event`"


def _effective(options: Options) -> dict[str, Any]:
    described = options.describe()
    if options.projects:
        described["effective_per_project"] = {
            project: {"enabled": destination.enabled, "write_key": mask(destination.write_key)}
            for project in options.projects
            for destination in [project_route(options, project)]
        }
    return described


def check(out: TextIO) -> int:
    """Validate the environment's configuration and print it, write keys masked."""
    options = resolve()
    print(json.dumps(_effective(options), indent=2, sort_keys=True), file=out)
    print("configuration OK", file=out)
    return 0


def sample_event(user_id: str) -> dict[str, Any]:
    """A Sentry-like error event from a real exception, as before_send would see it."""
    try:
        raise ValueError("sentry-segment test event")
    except ValueError as error:
        frames = traceback.extract_tb(error.__traceback__)
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "level": "error",
        "environment": "sentry-segment-test",
        "release": f"sentry-segment {__version__}",
        "transaction": TEST_EVENT_NAME_NOTE,
        "user": {"id": user_id},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "sentry-segment test event",
                    "stacktrace": {"frames": [{"function": frame.name} for frame in frames]},
                }
            ]
        },
    }


def send_test_event(user_id: str, project: Optional[str], out: TextIO) -> int:
    """Post one "Error Captured" event, built by the integration's own payload code."""
    from segment.analytics.request import post

    options = resolve()
    destination = project_route(options, project or "")
    if destination.write_key is None or not destination.enabled:
        print(f"sentry-segment: forwarding is disabled for project {project}", file=sys.stderr)
        return 1
    redact(destination.write_key)
    track = payload.build_track(sample_event(user_id), options.event_name)
    message = segment_message(track)
    print(f"POST {destination.host}/v1/batch", file=out)
    print(json.dumps(message, indent=2, sort_keys=True, default=str), file=out)
    try:
        response = post(
            str(destination.write_key),
            destination.host,
            timeout=options.timeout,
            batch=[message],
        )
    except Exception as error:  # the client raises APIError for non-2xx, requests for network
        status = getattr(error, "status", None)
        reason = f"HTTP {status}" if status else type(error).__name__
        print(f"sentry-segment: Segment did not accept the event ({reason})", file=sys.stderr)
        return 1
    print(f"HTTP {response.status_code}: Segment accepted the event", file=out)
    return 0


def demo(out: TextIO) -> int:
    from .demo import run

    run(out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentry-segment",
        description="Forward Sentry errors to Segment: check the configuration, send a test "
        "event. Options come from the SENTRY_SEGMENT_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate and print the configuration (write key masked)")
    sender = commands.add_parser("send-test-event", help="send one real Error Captured event")
    sender.add_argument("--user-id", default="sentry-segment-test", help="the event's userId")
    sender.add_argument("--project", default=None, help="Sentry project ID, for its override")
    commands.add_parser("demo", help="the loopback demo that `make demo` runs")
    return parser


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "check":
            return check(out)
        if arguments.command == "send-test-event":
            return send_test_event(arguments.user_id, arguments.project, out)
        return demo(out)
    except ConfigurationError as error:
        print(f"{error}", file=sys.stderr)
        return 2
