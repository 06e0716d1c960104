"""The `sentry-segment` command: check the configuration, send a test event, print the message's
schema, run a local collector, run the demo."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable, Optional, TextIO

from . import __version__, hints, payload
from .config import (
    ENV,
    EU_HOST,
    US_HOST,
    ConfigurationError,
    Options,
    mask,
    resolve,
    unknown_variables,
)
from .delivery import SEGMENT_LOGGER, redact, segment_message
from .failures import describe_failure
from .ratelimit import storage_problem
from .routing import Route, project_route

TEST_EVENT_NAME_NOTE = "sent by `sentry-segment send-test-event`"
DEFAULT_LISTEN_PORT = 8765
# What a shell reports for a command killed by SIGPIPE (128 + 13): its reader went away.
EXIT_CLOSED_PIPE = 141
_REGIONS_BY_HOST = {US_HOST: "us", EU_HOST: "eu"}


def _effective(options: Options) -> dict[str, Any]:
    described = options.describe()
    # The region the host is, when it is Segment's: "us" by default, as documented.
    described["region"] = options.region or _REGIONS_BY_HOST.get(options.host)
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
    for warning in _warnings(options):
        print(f"sentry-segment: warning: {warning}", file=sys.stderr)
    print(f"sentry-segment: note: {hints.no_user_id()}", file=sys.stderr)
    if problems:
        return 1
    print(
        "configuration OK" if options.enabled else "configuration OK (forwarding disabled)",
        file=out,
    )
    return 0


def _warnings(options: Options) -> list[str]:
    """What is valid but likely not meant: no DSN in the environment, a clear-text host."""
    found = []
    if not os.environ.get("SENTRY_DSN", "").strip():
        found.append(hints.no_dsn())
    clear_text = hints.clear_text_host(options.host)
    if clear_text:
        found.append(clear_text)
    return found


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


def _failure(error: BaseException, host: str) -> str:
    """Why Segment did not take the test event; this command posts once and never retries."""
    status = getattr(error, "status", None)
    if isinstance(status, int) and status >= 500:
        return (
            f"{host} answered HTTP {status}: Segment is failing; this command posted once and "
            f"did not retry (the integration retries with back-off, {ENV['max_retries']})"
        )
    return describe_failure(error, host)


def _accepted(status: int, host: str) -> str:
    """The success line; a 200 from the US host is no proof for an EU workspace's key."""
    if host == US_HOST:
        return (
            f"HTTP {status}: {host} accepted the event. It answers 200 to an EU workspace's "
            "write key too, and drops the event: confirm it in the source's Debugger "
            f"(an EU workspace needs {ENV['region']}=eu)"
        )
    return f"HTTP {status}: {host} accepted the event; confirm it in the source's Debugger"


def send_test_event(
    user_id: str, project: Optional[str], out: TextIO, as_json: bool = False
) -> int:
    """Post one "Error Captured" event, built by the integration's own payload code.

    With ``as_json``, stdout is one JSON object: host, message, status, accepted and error.
    """
    from segment.analytics.request import post

    options = resolve()
    destination = project_route(options, project or "")
    report: dict[str, Any] = {"host": destination.host, "message": None, "status": None}
    if not destination.enabled or destination.write_key is None:
        return _report_failure(report, _not_forwarding(options, project, destination), out, as_json)
    redact(destination.write_key)
    track = payload.build_track(sample_event(user_id), options.shape, destination.project)
    report["message"] = message = segment_message(track)
    if not as_json:
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
        status = getattr(error, "status", None)
        report["status"] = status if isinstance(status, int) else None
        return _report_failure(
            report,
            f"Segment did not accept the event: {_failure(error, destination.host)}",
            out,
            as_json,
        )
    report.update(status=response.status_code, accepted=True, error=None)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str), file=out)
    else:
        print(_accepted(response.status_code, destination.host), file=out)
    return 0


def _report_failure(report: dict[str, Any], problem: str, out: TextIO, as_json: bool) -> int:
    print(f"sentry-segment: {problem}", file=sys.stderr)
    if as_json:
        report.update(accepted=False, error=problem)
        print(json.dumps(report, indent=2, sort_keys=True, default=str), file=out)
    return 1


def schema(out: TextIO) -> int:
    """Print the JSON Schema of the properties the configuration's messages carry."""
    from .schema import message_schema

    print(json.dumps(message_schema(resolve().shape), indent=2), file=out)
    return 0


def listen(port: int, out: TextIO, stop: Optional[threading.Event] = None) -> int:
    """Run a Segment-compatible collector on 127.0.0.1 and print each message that arrives,
    beside a loopback Sentry endpoint (the next port, or any free one) that takes every event:
    Segment gets only what Sentry received, so a dead DSN forwards nothing."""
    from .testing import SegmentCollector, SentryRecorder

    stop = stop or threading.Event()
    reader_gone = threading.Event()

    def show(message: dict[str, Any]) -> None:
        properties = message.get("properties") or {}
        try:
            print(
                f"{message.get('event')!s:<16} userId={message.get('userId')!s:<12} "
                f"exceptionType={properties.get('exceptionType')!s:<20} "
                f"eventId={properties.get('eventId') or message.get('messageId')}",
                file=out,
                flush=True,
            )
        except BrokenPipeError:  # `listen | head -3`: the reader has what it wanted
            reader_gone.set()
            stop.set()

    def stop_on_signal(_signal: int, _frame: Optional[FrameType]) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)
    collector = SegmentCollector(port, on_message=show)
    try:
        collector.start()
    except OSError as error:
        print(
            f"sentry-segment: cannot listen on 127.0.0.1:{port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    sentry = SentryRecorder(port + 1 if port < 65535 else 0)
    try:
        sentry.start()
    except OSError:
        sentry = SentryRecorder(0)
        sentry.start()
    with collector, sentry:
        print(
            f"listening on {collector.host}: export {ENV['host']}={collector.host} "
            f"(and any write key) SENTRY_DSN={sentry.dsn()} (or your own); Ctrl-C stops",
            file=out,
            flush=True,
        )
        stop.wait()
    if reader_gone.is_set():
        raise BrokenPipeError
    return 0


def demo(out: TextIO) -> int:
    from .demo import run

    run(out)
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def _project_id(text: str) -> str:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Sentry project ID (digits only)")
    return text


def _user_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty: Segment needs a user ID")
    return text


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
    sender.add_argument(
        "--user-id", type=_user_id, default="sentry-segment-test", help="the event's userId"
    )
    sender.add_argument(
        "--project", type=_project_id, default=None, help="Sentry project ID, for its override"
    )
    sender.add_argument(
        "--json", action="store_true", help="print one JSON object: host, message, status, error"
    )
    commands.add_parser("schema", help="print the JSON Schema of the message's properties")
    listener = commands.add_parser("listen", help="a local Segment collector that prints messages")
    listener.add_argument(
        "--port", type=_port, default=DEFAULT_LISTEN_PORT, help="port on 127.0.0.1 (1-65535)"
    )
    commands.add_parser("demo", help="the loopback demo that `make demo` runs")
    return parser


def _run(argv: Optional[Sequence[str]], out: TextIO) -> int:
    try:
        arguments = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error, already printed
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    commands: dict[str, Callable[[], int]] = {
        "check": lambda: check(out),
        "send-test-event": lambda: send_test_event(
            arguments.user_id, arguments.project, out, arguments.json
        ),
        "schema": lambda: schema(out),
        "listen": lambda: listen(arguments.port, out),
        "demo": lambda: demo(out),
    }
    try:
        return commands[arguments.command]()
    except ConfigurationError as error:
        print(f"{error}", file=sys.stderr)
        if getattr(arguments, "json", False):
            print(json.dumps({"accepted": False, "error": str(error)}), file=out)
        return 2


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    try:
        code = _run(argv, out)
        # Written here, not at exit, where a closed pipe would print a traceback.
        out.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `sentry-segment schema | head -1`: the reader has gone
        _discard_further_output()
        return EXIT_CLOSED_PIPE
    return code


def _discard_further_output() -> None:
    """Point stdout and stderr at /dev/null, so that what is still buffered (flushed at exit)
    does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            continue  # not a file (a test's StringIO): nothing to flush at exit
    os.close(devnull)
