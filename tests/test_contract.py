"""When sentry-sdk or Segment's client changes what the integration relies on, the application
and Sentry go on as without it: each change simulated in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sentry_segment import contract
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import script_environment

CAPTURE = textwrap.dedent(
    """
    import os, sentry_sdk
    from sentry_segment import SegmentIntegration

    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
    sentry_sdk.set_user({"id": "7"})
    try:
        raise ValueError("still reaches Sentry")
    except ValueError:
        assert sentry_sdk.capture_exception() is not None
    sentry_sdk.flush(timeout=5)
    """
)


def run(change: str, segment: SegmentCollector, sentry: SentryRecorder) -> str:
    """Run the capture after the change; its stderr."""
    code = textwrap.dedent(change) + CAPTURE
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=script_environment(segment.host, sentry.dsn()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [event] = sentry.wait_for_events(1)
    assert event["exception"]["values"][0]["value"] == "still reaches Sentry"
    return done.stderr


def test_capture_event_with_a_new_keyword_and_called_by_keywords(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    stderr = run(
        """
        from sentry_sdk.client import _Client

        capture = _Client.capture_event

        def capture_event(self, event, hint=None, scope=None, *, new_option=None):
            return capture(self, event=event, hint=hint, scope=scope)

        _Client.capture_event = capture_event
        """,
        segment,
        sentry,
    )
    assert "forwarding is off" not in stderr
    [message] = segment.wait_for_messages(1)
    assert message["userId"] == "7"


def test_a_segment_client_without_a_constant_relied_on_leaves_the_integration_inert(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # Read at import before: the application did not start (AttributeError).
    stderr = run(
        """
        from segment.analytics import consumer
        del consumer.BATCH_SIZE_LIMIT
        """,
        segment,
        sentry,
    )
    [line] = [line for line in stderr.splitlines() if "sentry-segment" in line]
    assert "consumer.BATCH_SIZE_LIMIT (segment-analytics-python " in line
    assert "forwarding is off" in line
    assert segment.messages() == []


def test_a_sentry_sdk_whose_transport_renamed_a_method_leaves_the_integration_inert(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    stderr = run(
        """
        from sentry_sdk import transport

        for cls in transport.HttpTransport.__mro__:
            if "on_dropped_event" in vars(cls):
                cls.on_drop = cls.on_dropped_event
                del cls.on_dropped_event
        """,
        segment,
        sentry,
    )
    assert "HttpTransport.on_dropped_event (sentry-sdk " in stderr
    assert segment.messages() == []


def test_every_piece_relied_on_is_there_in_the_installed_releases() -> None:
    assert contract.gaps() == []
