"""Segment outages against loopback servers that misbehave: nothing reaches the application,
flushes do not wait for an outage, delivery resumes within seconds of its end, every event is
delivered exactly once after it, and what is lost is counted and logged in one line.

The issue's outages last 20 s at 50 errors/s; here they last 2-3 s, scaled down to keep the
suite fast: what is measured (the resume after the heal, the log lines, the losses) does not
depend on the outage's length, since back-off is capped at BACKOFF_CAP_SECONDS (4 s).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import sentry_sdk
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from sentry_segment import delivery
from sentry_segment import stats as stats_module
from sentry_segment.config import resolve
from sentry_segment.testing import LOOPBACK, SegmentCollector, SentryRecorder

from .conftest import InitSentry, raise_and_capture
from .support import free_port, script_environment

# The bound: while Segment is down, a flush costs at most this over Sentry's own.
FLUSH_OVERHEAD_SECONDS = 0.1


def capture_errors(count: int, interval: float = 0.0, first: int = 0) -> list[str]:
    event_ids = []
    for number in range(first, first + count):
        event_ids.append(raise_and_capture(ValueError(number), user={"id": number}))
        if interval:
            time.sleep(interval)
    assert all(event_ids)
    return [event_id for event_id in event_ids if event_id]


def assert_delivered_exactly_once(collector: SegmentCollector, event_ids: list[str]) -> None:
    accepted = Counter(message["messageId"] for message in collector.messages())
    assert sorted(accepted) == sorted(event_ids)
    assert sum(accepted.values()) == len(event_ids)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


def wait_delivered(integration: Any, count: int, timeout: float = 15) -> None:
    """Wait until the client has Segment's answer for count messages: a collector that
    received them has not answered yet, and a flush does not wait while delivery fails."""
    wait_for(lambda: integration.stats()["delivered"] >= count, timeout, f"{count} delivered")


def timed_flush(integration: Any, timeout: float = 2.0) -> tuple[bool, float]:
    """(done, seconds) of the integration's flush beyond Sentry's own: Sentry's transport is
    flushed first, as integration.flush() would flush it, and not timed."""
    sentry_sdk.get_client().transport.flush(timeout)
    started = time.monotonic()
    done = integration.flush(timeout=timeout)
    return done, time.monotonic() - started


@pytest.fixture
def late_collector() -> Iterator[SegmentCollector]:
    """A collector on a port where nothing listens until the test starts it."""
    collector = SegmentCollector(port=free_port())
    yield collector
    collector.stop()


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at WARNING or above, of any logger, as an application logging at WARNING
    sees them, with sentry-sdk's debug off."""
    with caplog.at_level(logging.WARNING):
        yield caplog


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == delivery.LOGGER_NAME]


def test_connection_refused_then_recovery_delivers_everything_once(
    init_sentry: InitSentry, late_collector: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry(host=late_collector.host)
    event_ids = capture_errors(5)
    assert not integration.flush(timeout=1.0)

    late_collector.start()
    wait_delivered(integration, 5, timeout=20)
    assert integration.flush(timeout=5)
    assert_delivered_exactly_once(late_collector, event_ids)
    assert integration.stats()["delivered"] == 5
    assert integration.stats()["failed"] == 0
    assert len(sentry.wait_for_events(5)) == 5


def test_server_errors_for_a_while_then_success(
    init_sentry: InitSentry, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integration = init_sentry()
    segment.respond_next(3, 503)
    event_ids = capture_errors(5)
    wait_delivered(integration, 5, timeout=15)
    assert integration.flush(timeout=5)
    assert [batch.status for batch in segment.batches()][:3] == [503, 503, 503]
    assert_delivered_exactly_once(segment, event_ids)
    assert integration.stats()["delivered"] == 5
    # Segment's client logs each refusal at ERROR; none may come back as a Sentry event.
    sentry_sdk.flush(timeout=5)
    assert [e["exception"]["values"][0]["type"] for e in sentry.events()] == ["ValueError"] * 5


def test_retry_after_is_waited_exactly(init_sentry: InitSentry, segment: SegmentCollector) -> None:
    integration = init_sentry()
    segment.respond_next(1, 429, {"Retry-After": "2"})
    started = time.monotonic()
    event_ids = capture_errors(5)
    wait_delivered(integration, 5)
    # Not retried before the 2 s it asked for (a capped back-off would retry within 0.5 s).
    assert time.monotonic() - started >= 2
    assert integration.flush(timeout=5)
    assert segment.batches()[0].status == 429
    assert_delivered_exactly_once(segment, event_ids)


def test_a_request_that_hangs_is_retried_after_the_timeout(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(timeout=0.5)
    segment.respond_next(1, 504, delay=1.5)
    event_ids = capture_errors(5)
    wait_delivered(integration, 5, timeout=15)
    assert integration.flush(timeout=5)
    assert_delivered_exactly_once(segment, event_ids)
    assert integration.stats()["delivered"] == 5


def test_given_up_batches_are_counted_and_logged_once_per_incident(
    init_sentry: InitSentry,
    late_collector: SegmentCollector,
    warnings_logged: pytest.LogCaptureFixture,
) -> None:
    integration = init_sentry(host=late_collector.host, max_retries=0)
    for expected in (4, 8, 12):
        capture_errors(4)
        wait_for(lambda: integration.stats()["failed"] == expected, 10, "failed")  # noqa: B023
        # Nothing is left to wait for: those failed.
        done, took = timed_flush(integration)
        assert (done, took < FLUSH_OVERHEAD_SECONDS) == (True, True)
    assert integration.stats()["delivered"] == 0

    late_collector.start()
    event_ids = capture_errors(2)
    wait_delivered(integration, 2, timeout=10)
    assert integration.flush(timeout=10)
    assert_delivered_exactly_once(late_collector, event_ids)
    [failing, recovered] = ours(warnings_logged)
    assert f"could not reach {late_collector.host}: connection refused" in failing
    assert "SENTRY_SEGMENT_HOST" in failing
    assert f"delivery to {late_collector.host} recovered" in recovered


def test_a_failing_error_callback_never_kills_segments_consumer(
    init_sentry: InitSentry, segment: SegmentCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    integration = init_sentry(max_retries=0)
    original_add = stats_module.Stats.add

    def add_or_explode(self: stats_module.Stats, name: str, amount: int = 1) -> None:
        if name == "failed":
            raise RuntimeError("bookkeeping bug")
        original_add(self, name, amount)

    monkeypatch.setattr(stats_module.Stats, "add", add_or_explode)
    segment.respond_next(1, 400)
    capture_errors(1)
    assert integration.flush(timeout=10)
    assert segment.batches()[0].status == 400

    monkeypatch.setattr(stats_module.Stats, "add", original_add)
    later = capture_errors(3)
    assert integration.flush(timeout=10)
    assert sorted(m["messageId"] for m in segment.messages()) == sorted(later)


def test_the_application_never_waits_for_segment(
    init_sentry: InitSentry, segment: SegmentCollector
) -> None:
    integration = init_sentry(timeout=10)
    segment.respond_next(1, 504, delay=3)
    capture_errors(1)
    deadline = time.monotonic() + 5
    while segment.delayed_requests_in_progress == 0:
        assert time.monotonic() < deadline, "the first batch never reached the collector"
        time.sleep(0.01)

    later = capture_errors(20)
    assert segment.delayed_requests_in_progress == 1, "capturing waited for the hung request"
    wait_delivered(integration, 21, timeout=15)
    assert integration.flush(timeout=5)
    assert set(later) <= {m["messageId"] for m in segment.messages()}


@pytest.fixture
def own_collector(request: pytest.FixtureRequest) -> Iterator[SegmentCollector]:
    """A collector of the test's own, so a Segment client (one per host) of its own, that
    records when the first message was accepted."""
    accepted_at: list[float] = []
    collector = SegmentCollector(on_message=lambda _: accepted_at.append(time.monotonic()))
    collector.accepted_at = accepted_at  # type: ignore[attr-defined]
    with collector:
        yield collector


def test_a_503_storm_then_heal_resumes_within_seconds_and_keeps_what_came_after(
    init_sentry: InitSentry,
    own_collector: SegmentCollector,
    warnings_logged: pytest.LogCaptureFixture,
) -> None:
    # The 20 s storm with max_queue_size=500 at 50 errors/s, scaled to 3 s and 100.
    integration = init_sentry(host=own_collector.host, max_queue_size=100)
    own_collector.respond_next(100_000, 503)
    during = capture_errors(75, interval=0.02)
    done, took = timed_flush(integration)
    assert not done
    assert took < FLUSH_OVERHEAD_SECONDS, "a flush waited for Segment during its outage"
    during += capture_errors(75, interval=0.02, first=75)
    assert integration.stats()["dropped_oldest"] > 0, "the storm never filled the queue"

    own_collector.clear()  # the storm ends: 200 from now on
    healed = time.monotonic()
    # 1 s of errors: with the queue's 100 they fit beside the storm's newest 50 for the up
    # to 4 s before the next retry (the 500 hold 10 s of them).
    after = capture_errors(50, interval=0.02, first=150)
    wait_for(lambda: set(after) <= {m["messageId"] for m in own_collector.messages()}, 15, "")
    accepted_at: list[float] = own_collector.accepted_at  # type: ignore[attr-defined]
    assert accepted_at[0] - healed < 5, "delivery resumed more than 5 s after the heal"
    wait_for(lambda: integration.flush(timeout=1), 10, "a flush that waited for everything")

    delivered = Counter(m["messageId"] for m in own_collector.messages())
    assert max(delivered.values()) == 1
    # The newest errors of the storm were kept, the oldest dropped.
    assert during[-1] in delivered
    assert during[0] not in delivered or during[1] not in delivered
    assert integration.stats()["failed"] == 0
    failing, full, recovered = ours(warnings_logged)
    assert "answered HTTP 503" in failing
    assert "dropping the oldest" in full
    assert "messages were dropped meanwhile" in recovered
    assert [r for r in warnings_logged.records if r.name == delivery.SEGMENT_LOGGER] == []


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A listening socket that never accepts: connections are made, and never answered."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, 0))
    listener.listen(64)
    yield listener
    listener.close()


def test_a_black_hole_then_heal(
    init_sentry: InitSentry,
    black_hole: socket.socket,
    warnings_logged: pytest.LogCaptureFixture,
) -> None:
    port = black_hole.getsockname()[1]
    integration = init_sentry(host=f"http://{LOOPBACK}:{port}", timeout=1)
    before = capture_errors(10)
    # The first post is in flight, not yet known to fail: the flush waits for its timeout.
    assert not integration.flush(timeout=3)
    during = capture_errors(10, first=10)
    done, took = timed_flush(integration)
    assert not done
    assert took < FLUSH_OVERHEAD_SECONDS

    time.sleep(1)
    black_hole.close()  # what waited in its backlog is reset
    with SegmentCollector(port=port) as collector:
        healed = time.monotonic()
        after = capture_errors(10, first=20)
        wait_delivered(integration, 30, timeout=15)
        assert integration.flush(timeout=5)
        assert time.monotonic() - healed < 5 + 1, "resumed later than back-off and a timeout"
        assert_delivered_exactly_once(collector, before + during + after)
    [failing, recovered] = ours(warnings_logged)
    assert "no answer within 1 s (timeout)" in failing
    assert "recovered" in recovered


def test_a_refused_write_key_stops_posting_and_logs_one_line(
    init_sentry: InitSentry,
    own_collector: SegmentCollector,
    warnings_logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The 5 s of 401 at 50 errors/s, with posts paused 0.5 s (a minute by default).
    monkeypatch.setattr(delivery, "REFUSED_PAUSE_SECONDS", 0.5)
    integration = init_sentry(host=own_collector.host, debug=False)
    own_collector.respond_next(100_000, 401)
    started = time.monotonic()
    refused = capture_errors(100, interval=0.02)
    wait_for(lambda: integration.stats()["failed"] == len(refused), 5, "all failed")
    posts_refused = len(own_collector.batches())
    pauses = (time.monotonic() - started) / delivery.REFUSED_PAUSE_SECONDS
    assert 1 <= posts_refused <= pauses + 1, "posted more often than once per pause"

    own_collector.clear()
    time.sleep(0.6)
    after = capture_errors(10, first=100)
    wait_delivered(integration, 10, timeout=10)
    assert integration.flush(timeout=5)
    assert_delivered_exactly_once(own_collector, after)

    records = [r for r in warnings_logged.records if not r.name.startswith("werkzeug")]
    assert len(records) <= 3, [r.getMessage() for r in records]
    [refusal] = [r.getMessage() for r in records if "HTTP 401" in r.getMessage()]
    assert "check the write key (SENTRY_SEGMENT_WRITE_KEY)" in refusal
    assert "****cdef" in refusal
    assert "recovered" in records[-1].getMessage()


def self_signed_context(directory: Path) -> Any:
    import ssl

    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(certificate), "-subj", f"/CN={LOOPBACK}",
         "-addext", f"subjectAltName=IP:{LOOPBACK}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


def test_a_self_signed_certificate_fails_at_once_and_says_so(
    init_sentry: InitSentry, tmp_path: Path, warnings_logged: pytest.LogCaptureFixture
) -> None:
    server = HTTPServer(LOOPBACK, 0, ssl_context=self_signed_context(tmp_path))
    server.expect_request("/v1/batch").respond_with_json({})
    with server:
        host = f"https://{LOOPBACK}:{server.port}"
        integration = init_sentry(host=host)
        started = time.monotonic()
        capture_errors(3)
        wait_for(lambda: bool(ours(warnings_logged)), 5, "a line about the certificate")
        wait_for(lambda: integration.stats()["failed"] == 3, 15 - 5, "failed")
        assert time.monotonic() - started < 15
        [line] = ours(warnings_logged)
        assert f"certificate verification failed for {LOOPBACK}:{server.port}" in line
        assert "not retried" in line
        assert server.log == [], "a request went through an unverified connection"
        capture_errors(2, first=3)
        wait_for(lambda: integration.stats()["failed"] == 5, 5, "failed without a post")
        assert len(ours(warnings_logged)) == 1


def refusing_collector(refused_user: str, status: int) -> HTTPServer:
    """A Segment endpoint that refuses (status) any batch holding refused_user's message."""
    server = HTTPServer(LOOPBACK, 0, threaded=True)

    def handle(request: Request) -> Response:
        batch = json.loads(request.get_data())["batch"]
        refused = any(message["userId"] == refused_user for message in batch)
        return Response("{}", status=status if refused else 200)

    server.expect_request("/v1/batch", method="POST").respond_with_handler(handle)
    return server


def accepted_messages(server: HTTPServer) -> list[dict[str, Any]]:
    return [
        message
        for request, response in server.log
        if response.status_code == 200
        for message in json.loads(request.get_data())["batch"]
    ]


@pytest.mark.parametrize("status", [400, 413])
def test_one_refused_message_fails_alone(
    init_sentry: InitSentry, status: int, warnings_logged: pytest.LogCaptureFixture
) -> None:
    with refusing_collector("refuse me", status) as server:
        host = f"http://{LOOPBACK}:{server.port}"
        integration = init_sentry(host=host)
        good = capture_errors(10)
        raise_and_capture(ValueError("refused"), user={"id": "refuse me"})
        good += capture_errors(10, first=10)
        wait_for(lambda: integration.stats()["delivered"] == 20, 10, "20 delivered")
        assert integration.flush(timeout=5)
        assert integration.stats()["failed"] == 1
        assert sorted(m["messageId"] for m in accepted_messages(server)) == sorted(good)
        batches = [json.loads(request.get_data())["batch"] for request, _ in server.log]
        refused_batch = max(len(batch) for batch in batches)
        posts = len(batches)
        splits = 2 * math.ceil(math.log2(refused_batch))
        assert posts <= 21 - refused_batch + 1 + splits
    [line] = ours(warnings_logged)
    assert f"answered HTTP {status} to 1 of {refused_batch} messages" in line


EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    sentry_sdk.init(
        dsn=os.environ["TEST_DSN"], shutdown_timeout=1, integrations=[SegmentIntegration()]
    )
    for number in range(20):
        capture_error(number)
    """
)


def test_exit_during_a_hang_says_how_many_were_not_delivered(
    black_hole: socket.socket, sentry: SentryRecorder
) -> None:
    host = f"http://{LOOPBACK}:{black_hole.getsockname()[1]}"
    environ = script_environment(host, sentry.dsn(), SENTRY_SEGMENT_TIMEOUT="30")
    finished = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = [line for line in finished.stderr.splitlines() if "sentry-segment" in line]
    assert line.startswith("sentry-segment: exiting with 20 messages not delivered to Segment")
    assert "dropped_at_exit" in line


def test_what_exit_counts_as_dropped_is_not_counted_again(
    late_collector: SegmentCollector,
) -> None:
    options = resolve(write_key="wk_ExitReport_0123456789abcdef", environ={})
    sink = delivery.sink_for(options.write_key or "", late_collector.host, options)
    mine = stats_module.Stats()
    sink.put_many([exit_message(number) for number in range(7)], mine, False)
    wait_for(lambda: sink.failing_since is not None, 10, "the first post failed")
    assert sink.abandon() == 7
    assert mine.snapshot()["dropped_at_exit"] == 7
    assert sink.abandon() == 0
    late_collector.start()
    wait_for(lambda: sink.failing_since is None, 10, "recovered")
    # Delivered after all: not counted twice.
    assert mine.snapshot()["delivered"] + mine.snapshot()["failed"] == 0


def exit_message(number: int) -> dict[str, Any]:
    return {"type": "track", "event": "Error Captured", "userId": str(number),
            "messageId": f"exit-{number}-{threading.get_ident()}", "properties": {}}  # fmt: skip


def test_a_host_that_never_answers_costs_one_flush_not_every_one(
    init_sentry: InitSentry, black_hole: socket.socket
) -> None:
    port = black_hole.getsockname()[1]
    integration = init_sentry(host=f"http://{LOOPBACK}:{port}", timeout=30)
    before = capture_errors(3)
    # Nothing says yet that the post in flight will never be answered: this flush waits.
    done, took = timed_flush(integration, timeout=0.5)
    assert not done
    assert took >= 0.5
    # It hung through a whole flush: the next ones do not wait for it.
    for _ in range(3):
        capture_errors(1)
        done, took = timed_flush(integration)
        assert (done, took < FLUSH_OVERHEAD_SECONDS) == (False, True)

    black_hole.close()
    with SegmentCollector(port=port) as collector:
        wait_delivered(integration, 6)
        assert integration.flush(timeout=5)
        assert set(before) <= {m["messageId"] for m in collector.messages()}
