"""Loopback Segment and Sentry endpoints that record what arrives, for tests and development.

They need the ``testing`` extra (``pip install sentry-segment[testing]``), which brings
pytest-httpserver. The pytest fixtures built on them are in ``sentry_segment.pytest_plugin``.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from sentry_sdk.envelope import Envelope

if TYPE_CHECKING:
    from werkzeug import Request, Response

    from .integration import SegmentIntegration

LOOPBACK = "127.0.0.1"
TEST_WRITE_KEY = "sentry_segment_test_write_key"
_ENVELOPE_PATH = re.compile(r"^/api/[0-9]+/envelope/$")


@dataclass(frozen=True)
class ReceivedBatch:
    """One POST /v1/batch as it arrived: the Basic-auth user (write key), JSON body, headers."""

    write_key: Optional[str]
    body: dict[str, Any]
    status: int
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        batch = self.body.get("batch")
        return list(batch) if isinstance(batch, list) else []


class _Loopback:
    def __init__(self, port: int = 0) -> None:
        from pytest_httpserver import HTTPServer

        self.server = HTTPServer(LOOPBACK, port, threaded=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def start(self) -> None:
        if not self.server.is_running():
            self.server.start()

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.port}"

    def _wait(self, ready: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


def _body(request: Request) -> bytes:
    data = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip":
        return gzip.decompress(data)
    return data


class SegmentCollector(_Loopback):
    """A Segment-compatible ``POST /v1/batch`` endpoint on 127.0.0.1.

    Answers 200 unless told otherwise with :meth:`respond_next`; ``on_message`` is called with
    each message of each accepted batch, as it arrives.
    """

    def __init__(
        self, port: int = 0, on_message: Optional[Callable[[dict[str, Any]], Any]] = None
    ) -> None:
        super().__init__(port)
        self._on_message = on_message
        self._batches: list[ReceivedBatch] = []
        self._in_progress = 0
        self._scripted: deque[tuple[int, dict[str, str], float]] = deque()
        self.server.expect_request("/v1/batch", method="POST").respond_with_handler(self._handle)

    @property
    def host(self) -> str:
        """What to pass as SegmentIntegration(host=...)."""
        return self.url

    def respond_next(
        self,
        count: int,
        status: int,
        headers: Optional[dict[str, str]] = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` batches with ``status`` (and headers) after ``delay``
        seconds, then 200 again. A refused batch is recorded but not in :meth:`messages`."""
        with self._lock:
            self._scripted.extend([(status, dict(headers or {}), delay)] * count)

    @property
    def delayed_requests_in_progress(self) -> int:
        """How many requests are being held by a ``respond_next(..., delay=...)`` right now."""
        with self._lock:
            return self._in_progress

    def batches(self) -> list[ReceivedBatch]:
        """Every batch received so far, refused ones included (see ``status``)."""
        with self._lock:
            return list(self._batches)

    def messages(self) -> list[dict[str, Any]]:
        """Every message of every batch that was answered 2xx, in arrival order."""
        return [m for b in self.batches() if 200 <= b.status < 300 for m in b.messages]

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages were accepted; return all of them."""
        self._wait(lambda: len(self._accepted_locked()) >= count, timeout)
        return self.messages()

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()
            self._scripted.clear()

    def integration(self, **options: Any) -> SegmentIntegration:
        """A SegmentIntegration that sends here (with a test write key unless given)."""
        from .integration import SegmentIntegration

        options.setdefault("write_key", TEST_WRITE_KEY)
        return SegmentIntegration(host=self.host, **options)

    def environment(self) -> dict[str, str]:
        """Environment variables that point ``SegmentIntegration()`` here."""
        return {"SENTRY_SEGMENT_HOST": self.host, "SENTRY_SEGMENT_WRITE_KEY": TEST_WRITE_KEY}

    def tracked(self, event: Optional[str] = None, **fields: Any) -> list[dict[str, Any]]:
        """Accepted track messages whose top-level fields (userId=..., ...) match."""
        return [
            message
            for message in self.messages()
            if message.get("type") == "track"
            and (event is None or message.get("event") == event)
            and all(message.get(key) == value for key, value in fields.items())
        ]

    def _accepted_locked(self) -> list[dict[str, Any]]:
        return [m for b in self._batches if 200 <= b.status < 300 for m in b.messages]

    def _handle(self, request: Request) -> Response:
        from werkzeug import Response

        raw = _body(request)
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError:
            return Response('{"error": "invalid JSON"}', status=400)
        with self._lock:
            status, headers, delay = self._scripted.popleft() if self._scripted else (200, {}, 0.0)
        if delay:
            with self._lock:
                self._in_progress += 1
            time.sleep(delay)
            with self._lock:
                self._in_progress -= 1
        with self._changed:
            self._batches.append(
                ReceivedBatch(
                    _basic_auth_user(request), body, status, raw, dict(request.headers.items())
                )
            )
            self._changed.notify_all()
        if self._on_message is not None and status < 300:
            for message in ReceivedBatch(None, body, status, raw).messages:
                self._on_message(message)
        return Response(
            json.dumps({"success": status < 300}),
            status=status,
            headers=headers,
            content_type="application/json",
        )


class SentryRecorder(_Loopback):
    """A Sentry envelope endpoint on 127.0.0.1 that records every event (errors and messages),
    transaction and streamed span (sentry-sdk 3) it receives; ``on_event`` is called with each
    event as it arrives."""

    def __init__(
        self, port: int = 0, on_event: Optional[Callable[[dict[str, Any]], Any]] = None
    ) -> None:
        super().__init__(port)
        self._on_event = on_event
        self._events: list[dict[str, Any]] = []
        self._transactions: list[dict[str, Any]] = []
        self._spans: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        # (status, headers) to answer with: a 2xx receives the envelope, anything else refuses
        # it, as Sentry's 429 does for an organization over its quota.
        self.answer: tuple[int, dict[str, str]] = (200, {})
        self.server.expect_request(_ENVELOPE_PATH, method="POST").respond_with_handler(self._handle)

    def dsn(self, project: int = 1, public_key: str = "public") -> str:
        """A DSN whose events arrive here."""
        return f"http://{public_key}@{LOOPBACK}:{self.server.port}/{project}"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def transactions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._transactions)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received: those of transactions, and those streamed on their own."""
        with self._lock:
            inside = [span for t in self._transactions for span in t.get("spans") or []]
            return [*inside, *self._spans]

    def logs(self) -> list[dict[str, Any]]:
        """Every Sentry Log received (``enable_logs``)."""
        with self._lock:
            return list(self._logs)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        self._wait(lambda: len(self._events) >= count, timeout)
        return self.events()

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self._transactions.clear()
            self._spans.clear()
            self._logs.clear()
            self.answer = (200, {})

    def _handle(self, request: Request) -> Response:
        from werkzeug import Response

        status, headers = self.answer
        if status >= 300:
            return Response("{}", status=status, headers=headers)
        envelope = Envelope.deserialize(_body(request))
        arrived = []
        with self._changed:
            for item in envelope.items:
                if item.type in ("span", "log"):  # batches: {"items": [...]}
                    batch = json.loads(item.payload.get_bytes())
                    kept_items = self._spans if item.type == "span" else self._logs
                    kept_items.extend(batch.get("items") or [])
                    continue
                payload = item.payload.json
                if isinstance(payload, dict) and item.type in ("event", "transaction"):
                    kept = self._events if item.type == "event" else self._transactions
                    kept.append(payload)
                    if item.type == "event":
                        arrived.append(payload)
            self._changed.notify_all()
        if self._on_event is not None:
            for event in arrived:
                self._on_event(event)
        return Response("{}", status=status, headers=headers, content_type="application/json")


def _refuse_constant(name: str) -> Any:
    """Segment's API refuses NaN and Infinity, which Python's json would accept."""
    raise ValueError(f"{name} is not JSON")


def _basic_auth_user(request: Request) -> Optional[str]:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, _password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user
