"""Every example runs as its own process against the loopback collector, the way its header
says, and forwards "Error Captured" for the signed-in user."""

from __future__ import annotations

import http.cookiejar
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest
import sentry_sdk

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import free_port, http_status, wait_until_listening

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def running(command: list[str], environment: dict[str, str], port: Optional[int]) -> Iterator[str]:
    process = subprocess.Popen(command, env={**os.environ, **environment}, cwd=EXAMPLES.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        if port is not None:
            wait_until_listening(port, process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def app_environment(
    collector: SegmentCollector, sentry: SentryRecorder, port: int
) -> dict[str, str]:
    return {**collector.environment(), "SENTRY_DSN": sentry.dsn(), "PORT": str(port)}


@pytest.mark.parametrize("dsn", ["recorder", "dead"])
def test_flask_example(
    segment_environment: SegmentCollector, sentry: SentryRecorder, dsn: str
) -> None:
    """As its header says; with a DSN where nothing listens, Sentry receives nothing and so
    nothing is forwarded."""
    port = free_port()
    environment = app_environment(segment_environment, sentry, port)
    if dsn == "dead":
        environment["SENTRY_DSN"] = f"http://public@127.0.0.1:{free_port()}/1"
    command = [sys.executable, str(EXAMPLES / "flask_app.py")]
    with running(command, environment, port) as base:
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        assert http_status(f"{base}/checkout", browser) == 500
        assert http_status(f"{base}/login?user=42", browser) == 200
        assert http_status(f"{base}/checkout", browser) == 500
        if dsn == "recorder":
            segment_environment.wait_for_messages(1)
            sentry.wait_for_events(2)
    if dsn == "dead":
        assert segment_environment.tracked("Error Captured") == []
        assert sentry.events() == []
        return
    [message] = segment_environment.tracked("Error Captured")
    assert message["userId"] == "42"
    assert message["context"]["page"]["path"] == "/checkout"
    assert len(sentry.events()) == 2


@pytest.mark.skipif(
    "data_collection" not in sentry_sdk.consts.DEFAULT_OPTIONS,
    reason="examples/django_app.py passes data_collection, an option from sentry-sdk 2.65",
)
def test_django_example(segment_environment: SegmentCollector, sentry: SentryRecorder) -> None:
    port = free_port()
    environment = app_environment(segment_environment, sentry, port)
    command = [sys.executable, str(EXAMPLES / "django_app.py")]
    with running(command, environment, port) as base:
        assert http_status(f"{base}/checkout", **{"X-Remote-User": "alice"}) == 500
        segment_environment.wait_for_messages(1)
        [sent] = sentry.wait_for_events(1)
    [message] = segment_environment.tracked("Error Captured")
    assert message["userId"] == str(sent["user"]["id"])
    assert sent["user"]["username"] == "alice"
    assert message["properties"]["page"]["method"] == "GET"


def test_fastapi_example(segment_environment: SegmentCollector, sentry: SentryRecorder) -> None:
    port = free_port()
    environment = app_environment(segment_environment, sentry, port)
    command = [sys.executable, str(EXAMPLES / "fastapi_app.py")]
    with running(command, environment, port) as base:
        assert http_status(f"{base}/checkout") == 401
        checkout = http_status(f"{base}/checkout", Authorization="Bearer token-of-42")
        assert checkout == 500
        segment_environment.wait_for_messages(1)
    [message] = segment_environment.tracked("Error Captured")
    assert message["userId"] == "42"
    assert message["properties"]["exceptionType"] == "ValueError"


def test_celery_example(
    segment_environment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> None:
    environment = {
        **segment_environment.environment(),
        "SENTRY_DSN": sentry.dsn(),
        "BROKER_FOLDER": str(tmp_path),
    }
    worker = [
        sys.executable, "-m", "celery", "--workdir", "examples", "-A", "celery_app", "worker",
        "--pool", "prefork", "--concurrency", "2", "--loglevel", "warning",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with running(worker, environment, None):
        subprocess.run(
            [sys.executable, str(EXAMPLES / "celery_app.py"), "42"],
            env={**os.environ, **environment},
            check=True,
            timeout=60,
        )
        segment_environment.wait_for_messages(1, timeout=30)
    [message] = segment_environment.tracked("Error Captured")
    assert message["userId"] == "42"
