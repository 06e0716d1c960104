"""What differs between sentry-sdk releases, on the real thing: the hooks hold on each of them."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import InitSentry, raise_and_capture
from .support import script_environment

COMPAT_WRITE_KEY = "wk_CompatTest_0123456789abcdef"


def test_segments_error_logs_never_come_back_as_sentry_events(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # Log records at ERROR are events here on every release (sentry-sdk 3 needs event_level
    # for that); Segment's client logs a refused batch at ERROR on its consumer thread.
    errors_as_events = LoggingIntegration(event_level=logging.ERROR)
    # A write key of its own: Segment clients are shared per key and host, and keep the
    # max_retries of the first integration that made one.
    integration = init_sentry(
        write_key=COMPAT_WRITE_KEY, max_retries=0, integrations=[errors_as_events]
    )
    segment.respond_next(1, 400)
    raise_and_capture(ValueError("refused by Segment"), user={"id": 1})
    assert integration.flush(timeout=10)
    assert integration.stats()["failed"] == 1
    logging.getLogger("tests.app").error("an application error log")
    sentry_sdk.flush(timeout=5)

    sentry.wait_for_events(2)
    assert integration.flush(timeout=5)
    sentry_sdk.flush(timeout=5)
    loggers = [event.get("logger") for event in sentry.events()]
    assert "segment" not in loggers
    assert loggers.count("tests.app") == 1
    assert len(loggers) == 2


def test_the_integrations_own_warnings_never_reach_sentry(
    init_sentry: InitSentry, sentry: SentryRecorder
) -> None:
    # Warnings as events: the hint about errors without a user ID is one.
    init_sentry(integrations=[LoggingIntegration(event_level=logging.WARNING)])
    raise_and_capture(ValueError("no user"))
    sentry_sdk.flush(timeout=5)
    raise_and_capture(ValueError("with a user"), user={"id": 1})
    sentry_sdk.flush(timeout=5)
    events = sentry.wait_for_events(2)
    assert [e["exception"]["values"][0]["value"] for e in events] == ["no user", "with a user"]
    crumbs = [c for e in events for c in (e.get("breadcrumbs") or {}).get("values") or []]
    assert [c for c in crumbs if c.get("category") == "sentry_segment"] == []
    assert [e for e in events if e.get("logger") == "sentry_segment"] == []


def test_segments_log_lines_never_become_sentry_logs(
    init_sentry: InitSentry, sentry: SentryRecorder
) -> None:
    if "enable_logs" not in sentry_sdk.consts.DEFAULT_OPTIONS:
        pytest.skip("this sentry-sdk has no Sentry Logs option")
    init_sentry(enable_logs=True)
    logging.getLogger("segment").warning("a line of Segment's client")
    logging.getLogger("tests.app").warning("an application warning")
    sentry_sdk.flush(timeout=5)
    bodies = [log.get("body") for log in sentry.logs()]
    assert "an application warning" in bodies
    assert "a line of Segment's client" not in bodies


def test_a_cron_check_in_is_counted_as_nothing(init_sentry: InitSentry) -> None:
    from sentry_sdk.crons import capture_checkin

    integration = init_sentry()
    capture_checkin(monitor_slug="nightly", status="ok")
    raise_and_capture(ValueError("no user"))
    sentry_sdk.flush(timeout=5)
    stats = integration.stats()
    assert stats["skipped_no_user"] == 1
    assert sum(stats.values()) == 1, stats


ASYNC_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    async def main():
        sentry_sdk.init(
            dsn=os.environ["TEST_DSN"],
            integrations=[SegmentIntegration(), AsyncioIntegration()],
            _experiments={"transport_async": True},
        )
        client = sentry_sdk.get_client()
        print(type(client.transport).__name__, flush=True)
        if type(client.transport).__name__ != "AsyncHttpTransport":
            return
        for number in range(5):
            capture_error(number)
        if sys.argv[1] == "close_async":
            await client.close_async()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("ending", ["close_async", "exit"])
def test_the_async_transport_flushes_forwarded_events_too(
    segment: SegmentCollector, sentry: SentryRecorder, ending: str
) -> None:
    # With the async transport, close() and flush_async() never call Client.flush().
    environ = script_environment(segment.host, sentry.dsn(), SENTRY_SEGMENT_RATE_LIMIT="off")
    finished = subprocess.run(
        [sys.executable, "-c", ASYNC_SCRIPT, ending],
        env=environ,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    if finished.stdout.split()[:1] != ["AsyncHttpTransport"]:
        pytest.skip(f"this sentry-sdk has no async transport: {finished.stdout.strip()}")
    received = sorted(str(event["user"]["id"]) for event in sentry.events())
    print(ending, received)
    assert sorted(m["userId"] for m in segment.messages()) == received
