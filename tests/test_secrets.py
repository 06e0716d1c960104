"""The write key never shows: not in logs at DEBUG, output, reprs, nor configuration errors."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import script_environment

SECRET = "wk_NeverPrintMe_0123456789abcdef"

SCRIPT = textwrap.dedent(
    """
    import logging, os, sentry_sdk
    from sentry_segment import ConfigurationError, SegmentIntegration
    from tests.apps.errors import capture_error

    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("segment").setLevel(logging.DEBUG)
    integration = SegmentIntegration(timeout=1, max_retries=1)
    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[integration], debug=True)
    print(repr(integration), str(integration), integration.options, integration.options.describe())
    for number in range(6):
        capture_error(number)
        sentry_sdk.flush(timeout=5)
    print(integration.stats())
    for bad in ({"projects": {"1": {"write_key": os.environ["SENTRY_SEGMENT_WRITE_KEY"] + "!"}}},
                {"write_key": os.environ["SENTRY_SEGMENT_WRITE_KEY"] + " "},
                {"rate_limit": os.environ["SENTRY_SEGMENT_WRITE_KEY"]}):
        try:
            SegmentIntegration(**bad)
        except ConfigurationError as error:
            print(repr(error), error)
    """
)


def test_the_write_key_never_appears_in_any_output(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    segment.respond_next(1, 400)
    segment.respond_next(1, 503)
    environ = script_environment(segment.host, sentry.dsn(), SENTRY_SEGMENT_WRITE_KEY=SECRET)
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    output = finished.stdout + finished.stderr
    assert "making request" in output, "the segment logger did not log at DEBUG"
    assert "[sentry] DEBUG" in output, "sentry-sdk did not log at DEBUG"
    assert "ConfigurationError" in output
    assert "'delivered': 5" in output
    assert {batch.write_key for batch in segment.batches()} == {SECRET}
    encoded = base64.b64encode(f"{SECRET}:".encode()).decode()
    for form in (SECRET, encoded, SECRET[:-4]):
        assert form not in output
