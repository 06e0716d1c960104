"""What happens when the application exits: delivery of what is queued, and a bounded wait."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import WRITE_KEY
from .support import ROOT, assert_each_delivered_once, script_environment, sentry_received

SCRIPT = textwrap.dedent(
    """
    import os, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    sentry_sdk.init(
        dsn=os.environ["TEST_DSN"],
        shutdown_timeout=float(os.environ["TEST_SHUTDOWN_TIMEOUT"]),
        # Room for every error: Segment gets only what Sentry's transport sends.
        transport_queue_size=1000,
        integrations=[SegmentIntegration()],
    )
    for number in range(int(os.environ["TEST_ERRORS"])):
        capture_error(number)
    """
)


def run_script(host: str, dsn: str, errors: int, shutdown_timeout: float) -> float:
    environ = script_environment(
        host,
        dsn,
        SENTRY_SEGMENT_RATE_LIMIT="off",
        TEST_ERRORS=str(errors),
        TEST_SHUTDOWN_TIMEOUT=str(shutdown_timeout),
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", SCRIPT], env=environ, check=True, timeout=60)
    return time.monotonic() - started


def test_a_normal_exit_delivers_every_forwarded_event(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    run_script(segment.host, sentry.dsn(), errors=250, shutdown_timeout=10)
    messages = segment.messages()
    received = sentry_received(sentry, Counter(str(n) for n in range(250)))
    assert_each_delivered_once(messages, received)
    assert {m["userId"] for m in messages} == {str(n) for n in range(250)}
    assert len({m["messageId"] for m in messages}) == 250
    assert {b.write_key for b in segment.batches()} == {WRITE_KEY}


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A TCP server on loopback that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stopping.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    listener.close()


def baseline_exit_seconds(dsn: str) -> float:
    """How long the same script takes with forwarding disabled, imports included."""
    environ = {**os.environ, "SENTRY_SEGMENT_ENABLED": "false", "TEST_DSN": dsn, "PYTHONPATH": ROOT}
    environ.update(TEST_ERRORS="5", TEST_SHUTDOWN_TIMEOUT="2")
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", SCRIPT], env=environ, check=True, timeout=60)
    return time.monotonic() - started


def test_a_segment_host_that_never_answers_delays_exit_by_at_most_shutdown_timeout(
    silent_host: str, sentry: SentryRecorder
) -> None:
    # Segment's client would wait its 15 s request timeout (then retry) without the bound.
    baseline = baseline_exit_seconds(sentry.dsn())
    sentry.clear()
    elapsed = run_script(silent_host, sentry.dsn(), errors=5, shutdown_timeout=2)
    assert elapsed - baseline < 2 + 1.5
    assert len(sentry.wait_for_events(5)) == 5


KILLED_SCRIPT = textwrap.dedent(
    """
    import os, signal, time, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
    for number in range(20):
        capture_error(number)
    time.sleep(0.3)
    # No atexit handler, no flush: what was not posted by now is lost.
    os.kill(os.getpid(), getattr(signal, os.environ["TEST_SIGNAL"]))
    time.sleep(10)
    """
)


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_events_forwarded_before_the_process_is_killed_reach_segment(
    signal_name: str, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # Killed 0.3 s after the captures (SIGTERM unhandled, as Python leaves it): Sentry's
    # transport has posted every event by then, so Segment must have them too.
    environ = script_environment(segment.host, sentry.dsn(), TEST_SIGNAL=signal_name)
    command = [sys.executable, "-c", KILLED_SCRIPT]
    killed = subprocess.run(command, env=environ, check=False, timeout=60)
    assert killed.returncode == -getattr(signal, signal_name)
    received = sentry_received(sentry, Counter(str(n) for n in range(20)))
    assert_each_delivered_once(segment.wait_for_messages(20, timeout=2), received)
