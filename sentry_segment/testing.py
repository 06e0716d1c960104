"""Loopback Segment and Sentry endpoints that record what arrives, for tests and development.

Standard library only (``http.server``), so ``sentry-segment listen`` and the demo run on a
plain install. The pytest fixtures built on them are in ``sentry_segment.pytest_plugin``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import socket
import socketserver
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .integration import SegmentIntegration

LOOPBACK = "127.0.0.1"
TEST_WRITE_KEY = "sentry_segment_test_write_key"
_ENVELOPE_PATH = re.compile(r"^/api/[0-9]+/envelope/$")
# How often a server's accept loop looks whether stop() was called.
_POLL_SECONDS = 0.05


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


@dataclass(frozen=True)
class _Request:
    path: str
    headers: Message
    body: bytes  # decompressed


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json_answer(status: int, content: Any, headers: Optional[dict[str, str]] = None) -> _Answer:
    return _Answer(status, json.dumps(content).encode(), dict(headers or {}))


class _Handler(BaseHTTPRequestHandler):
    # One request per connection (Connection: close), as werkzeug's server that this replaced:
    # a process forked from C (uWSGI) shares its parent's pooled connections, which a
    # keep-alive server would then answer interleaved.
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: with Nagle's algorithm the body would wait for
    # the client's delayed ACK, 40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        answer = self.server.answer(_Request(self.path, self.headers, body))
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.body)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        return None  # no access log: the owner records what matters


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can end its keep-alive connections when stopped, so that
    a stopped endpoint answers nobody, as a host that went away."""

    daemon_threads = True

    def __init__(self, port: int, answer: Callable[[_Request], _Answer]) -> None:
        self.answer = answer
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = LOOPBACK, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up waiting (its timeout) leaves a broken pipe here: no error.
        return None


class _Loopback:
    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def start(self) -> None:
        """Listen on 127.0.0.1 (the port given, or a free one) and answer in threads."""
        if self._server is not None:
            return
        server = _Server(self._port, self._answer)
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name=f"loopback-{type(self).__name__}",
            daemon=True,
        )
        self._server = server
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and end open connections; start() listens again on the same port."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.end_connections()
        server.server_close()
        thread.join()

    def is_running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port: the one given, or once started the free one picked."""
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    def _answer(self, request: _Request) -> _Answer:
        raise NotImplementedError

    def _wait(self, ready: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


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

    def _answer(self, request: _Request) -> _Answer:
        if request.path != "/v1/batch":
            return _json_answer(404, {"error": "not found"})
        raw = request.body
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError:
            return _json_answer(400, {"error": "invalid JSON"})
        if not isinstance(body, dict):
            return _json_answer(400, {"error": "not a JSON object"})
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
        return _json_answer(status, {"success": status < 300}, headers)


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

    def dsn(self, project: int = 1, public_key: str = "public") -> str:
        """A DSN whose events arrive here."""
        return f"http://{public_key}@{LOOPBACK}:{self.port}/{project}"

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

    def _answer(self, request: _Request) -> _Answer:
        # Imported here: the pytest plugin may start this before a conftest imports sentry_sdk.
        from sentry_sdk.envelope import Envelope

        if not _ENVELOPE_PATH.match(request.path.partition("?")[0]):
            return _json_answer(404, {"error": "not found"})
        status, headers = self.answer
        if status >= 300:
            return _json_answer(status, {}, headers)
        envelope = Envelope.deserialize(request.body)
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
        return _json_answer(status, {}, headers)


def _refuse_constant(name: str) -> Any:
    """Segment's API refuses NaN and Infinity, which Python's json would accept."""
    raise ValueError(f"{name} is not JSON")


def _basic_auth_user(request: _Request) -> Optional[str]:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, _password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user
