"""Python 3.12+ warns (DeprecationWarning) when a process with threads forks. The integration
starts no thread until it forwards an event, so a gunicorn --preload master that initialised
Sentry and captured nothing forks its workers without the warning."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import ROOT, free_port, http_status, script_environment, wait_until_listening

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="Python warns about fork() with threads from 3.12"
)

FORK_WARNING = "is multi-threaded, use of fork() may lead to deadlocks in the child"


def gunicorn_stderr(segment: SegmentCollector, sentry: SentryRecorder, capture: bool) -> str:
    """What a gunicorn --preload master with two workers printed, deprecation warnings shown."""
    port = free_port()
    environment = script_environment(
        segment.host,
        sentry.dsn(),
        PYTHONWARNINGS="default::DeprecationWarning",
        TEST_CAPTURE="1" if capture else "0",
    )
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        "tests.apps.gunicorn_idle_app:app",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(port, server)
        assert http_status(f"http://127.0.0.1:{port}/") == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    return stderr


def test_a_preload_master_that_captured_nothing_forks_without_the_warning(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    assert FORK_WARNING not in gunicorn_stderr(segment, sentry, capture=False)


def test_the_warning_is_seen_once_the_master_has_forwarded_an_error(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # The control: once the master captured an error, Sentry's transport thread runs there
    # (the warning is the same without the integration), and so do ours.
    assert FORK_WARNING in gunicorn_stderr(segment, sentry, capture=True)
    assert [m["userId"] for m in segment.wait_for_messages(1)] == ["master"]
