"""Every example runs as its own process against the loopback collector, the way its header
says, and forwards "Error Captured" for the signed-in user."""

from __future__ import annotations

import http.cookiejar
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def running(command: list[str], environment: dict[str, str], port: Optional[int]) -> Iterator[str]:
    process = subprocess.Popen(command, env={**os.environ, **environment}, cwd=EXAMPLES.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        if port is not None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert process.poll() is None, f"{command} exited with {process.returncode}"
                    assert time.monotonic() < deadline, f"{command} never listened"
                    time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def status_of(opener: urllib.request.OpenerDirector, url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def app_environment(
    collector: SegmentCollector, sentry: SentryRecorder, port: int
) -> dict[str, str]:
    return {**collector.environment(), "SENTRY_DSN": sentry.dsn(), "PORT": str(port)}


def test_flask_example(segment_environment: SegmentCollector, sentry: SentryRecorder) -> None:
    port = free_port()
    environment = app_environment(segment_environment, sentry, port)
    command = [sys.executable, str(EXAMPLES / "flask_app.py")]
    with running(command, environment, port) as base:
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        assert status_of(browser, f"{base}/checkout") == 500
        assert status_of(browser, f"{base}/login?user=42") == 200
        assert status_of(browser, f"{base}/checkout") == 500
        segment_environment.wait_for_messages(1)
        sentry.wait_for_events(2)
    [message] = segment_environment.tracked("Error Captured")
    assert message["userId"] == "42"
    assert message["context"]["page"]["path"] == "/checkout"


def test_django_example(segment_environment: SegmentCollector, sentry: SentryRecorder) -> None:
    port = free_port()
    environment = app_environment(segment_environment, sentry, port)
    command = [sys.executable, str(EXAMPLES / "django_app.py")]
    with running(command, environment, port) as base:
        browser = urllib.request.build_opener()
        assert status_of(browser, f"{base}/checkout", **{"X-Remote-User": "alice"}) == 500
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
        browser = urllib.request.build_opener()
        assert status_of(browser, f"{base}/checkout") == 401
        checkout = status_of(browser, f"{base}/checkout", Authorization="Bearer token-of-42")
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
