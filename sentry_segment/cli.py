"""The `sentry-segment` command: check the configuration, send a test event, print the message's
schema, run a local collector, run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Optional, TextIO

from . import __version__, payload
from .config import ENV, ConfigurationError, Options, mask, resolve, unknown_variables
from .delivery import SEGMENT_LOGGER, describe_failure, redact, segment_message
from .ratelimit import storage_problem
from .routing import Route, project_route

TEST_EVENT_NAME_NOTE = "sent by `sentry-segment send-test-event`"
DEFAULT_LISTEN_PORT = 8765


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
    """Validate the environment's configuration and print it, write keys masked.

    Exit 1 when it is valid but will not do what was meant: no write key anywhere, a
    SENTRY_SEGMENT_* variable that is no option's (a misspelling, most likely), or a shared
    rate-limit storage that does not make a real decision on a throwaway key.
    """
    options = resolve()
    print(json.dumps(_effective(options), indent=2, sort_keys=True, default=str), file=out)
    problems = list(unknown_variables())
    if not options.has_write_key and options.enabled:
        problems.append(f"no write key: set {ENV['write_key']} (nothing is forwarded without one)")
    if options.enabled:
        storage = storage_problem(options.rate_limit, options.rate_limit_storage)
        problems.extend([storage] if storage else [])
    for problem in problems:
        print(f"sentry-segment: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        "configuration OK" if options.enabled else "configuration OK (forwarding disabled)",
        file=out,
    )
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
        "tags": {"sentry-segment": "test"},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "sentry-segment test event",
                    "mechanism": {"type": "generic", "handled": True},
                    "stacktrace": {"frames": [{"function": frame.name} for frame in frames]},
                }
            ]
        },
    }


def _not_forwarding(options: Options, project: Optional[str], destination: Route) -> str:
    """Why events of this project are not forwarded."""
    override = options.projects.get(project or "")
    where = f"project {project}" if project else "events"
    if destination.write_key is None:
        return f"no write key for {where}: set {ENV['write_key']}"
    if override is not None and override.enabled is False:
        return f"forwarding is disabled for {where} by its override in {ENV['projects']}"
    return f"forwarding is disabled ({ENV['enabled']}=false)"


def send_test_event(user_id: str, project: Optional[str], out: TextIO) -> int:
    """Post one "Error Captured" event, built by the integration's own payload code."""
    from segment.analytics.request import post

    options = resolve()
    destination = project_route(options, project or "")
    if not destination.enabled or destination.write_key is None:
        print(f"sentry-segment: {_not_forwarding(options, project, destination)}", file=sys.stderr)
        return 1
    redact(destination.write_key)
    track = payload.build_track(sample_event(user_id), options.shape, destination.project)
    message = segment_message(track)
    print(f"POST {destination.host}/v1/batch", file=out)
    print(json.dumps(message, indent=2, sort_keys=True, default=str), file=out)
    # The Segment client logs its own line for a failure; this command says it once, with a hint.
    logging.getLogger(SEGMENT_LOGGER).disabled = True
    try:
        response = post(
            str(destination.write_key),
            destination.host,
            timeout=options.timeout,
            batch=[message],
        )
    except Exception as error:  # APIError for a non-2xx answer, requests' for the network
        print(
            f"sentry-segment: Segment did not accept the event: "
            f"{describe_failure(error, destination.host)}",
            file=sys.stderr,
        )
        return 1
    print(f"HTTP {response.status_code}: Segment accepted the event", file=out)
    return 0


def schema(out: TextIO) -> int:
    """Print the JSON Schema of the properties the configuration's messages carry."""
    from .schema import message_schema

    print(json.dumps(message_schema(resolve().shape), indent=2), file=out)
    return 0


def listen(port: int, out: TextIO, stop: Optional[threading.Event] = None) -> int:
    """Run a Segment-compatible collector on 127.0.0.1 and print each message that arrives."""
    from .testing import SegmentCollector

    def show(message: dict[str, Any]) -> None:
        properties = message.get("properties") or {}
        print(
            f"{message.get('event')!s:<16} userId={message.get('userId')!s:<12} "
            f"exceptionType={properties.get('exceptionType')!s:<20} "
            f"eventId={properties.get('eventId') or message.get('messageId')}",
            file=out,
            flush=True,
        )

    stop = stop or threading.Event()

    def stop_on_signal(_signal: int, _frame: Optional[FrameType]) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with SegmentCollector(port, on_message=show) as collector:
        print(
            f"listening on {collector.host}: export {ENV['host']}={collector.host} "
            "(and any write key); Ctrl-C stops",
            file=out,
            flush=True,
        )
        stop.wait()
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
    commands.add_parser("schema", help="print the JSON Schema of the message's properties")
    listener = commands.add_parser("listen", help="a local Segment collector that prints messages")
    listener.add_argument("--port", type=int, default=DEFAULT_LISTEN_PORT, help="port on 127.0.0.1")
    commands.add_parser("demo", help="the loopback demo that `make demo` runs")
    return parser


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "check":
            return check(out)
        if arguments.command == "send-test-event":
            return send_test_event(arguments.user_id, arguments.project, out)
        if arguments.command == "schema":
            return schema(out)
        if arguments.command == "listen":
            return listen(arguments.port, out)
        return demo(out)
    except ConfigurationError as error:
        print(f"{error}", file=sys.stderr)
        return 2
