"""Segment's client, one per write key and host per process: its queue, a consumer thread that
posts promptly and batches under load, and what became of every message."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional

from requests import sessions
from segment.analytics import consumer as segment_consumer
from segment.analytics import request as segment_request
from segment.analytics.request import DatetimeSerializer
from segment.analytics.version import VERSION as SEGMENT_VERSION
from sentry_sdk.utils import logger

from .config import Options, mask
from .payload import Track
from .quiet import QuietClient, quiet_scopes
from .stats import Stats

SEGMENT_LOGGER = "segment"
LIBRARY = {"name": "analytics-python", "version": SEGMENT_VERSION}
# Segment's API takes up to 500 KB and 2,500 messages per batch; its client keeps under 475 KB.
UPLOAD_SIZE = 500
MAX_BATCH_BYTES = segment_consumer.BATCH_SIZE_LIMIT
MAX_MESSAGE_BYTES = segment_consumer.MAX_MSG_SIZE
# A consumer with nothing to post for this long ends; the next message starts another.
IDLE_SECONDS = 2.0
# Posts start at least this far apart. A message that finds the last post older is posted at
# once; one that finds it younger waits for the interval to end, and what queues meanwhile goes
# with it, up to a full batch: under load, one post per interval, so the per-post cost does not
# dominate. A flush or a full batch cuts the wait short. Short enough that a process killed
# 0.3 s after its last capture has posted it.
POST_INTERVAL_SECONDS = 0.1


def segment_message(track: Track) -> dict[str, Any]:
    """The message Segment's ``Client.track()`` queues for this call, field for field.

    Built here rather than by track(), which re-checks in the caller's thread what payload
    guarantees by construction (string fields, an aware timestamp, under 32 KB): its clean()
    walk and its JSON encoding to measure the size were half of the Segment client's CPU per
    message. test_delivery holds the two messages equal for any event.
    """
    return track.as_message(LIBRARY)


class Consumer(segment_consumer.Consumer):  # type: ignore[misc]
    """Segment's consumer thread, with its retries, back-off and HTTP posts, posting promptly.

    Segment's own waits up to its upload interval (0.5 s) for every batch to fill. This one
    posts a message at once when the process is quiet; under load, everything that queued
    while the previous post was in flight or within its interval goes in the next (group
    commit), up to 500 messages and 475 KB. It runs where Sentry records nothing.
    """

    def __init__(self, sink: Sink, work: queue.Queue[Any]) -> None:
        super().__init__(
            work,
            sink.write_key,
            host=sink.host,
            on_error=sink.failed,
            upload_size=UPLOAD_SIZE,
            retries=sink.options.max_retries,
            timeout=sink.options.timeout,
        )
        self.name = "sentry-segment-delivery"
        self._sink = sink
        # Set when a request to end found messages to post, so the flush waits no longer.
        self.declined_to_end = False
        self.finished = False
        self._held: Optional[tuple[dict[str, Any], int]] = None
        self._last_post = 0.0

    def run(self) -> None:
        try:
            with quiet_scopes(self._sink.quiet):
                super().run()
        finally:
            self.finished = True

    def next(self) -> list[dict[str, Any]]:
        """Everything queued now, or the first message to arrive within IDLE_SECONDS."""
        items: list[dict[str, Any]] = []
        total = 0
        if self._held is not None:
            (message, size), self._held = self._held, None
            items.append(message)
            total = size
        while len(items) < self.upload_size:
            try:
                message = self.queue.get(block=not items, timeout=IDLE_SECONDS)
            except queue.Empty:
                if not items and self._sink.retire(self):
                    self.running = False
                break
            if message is _END_WHEN_IDLE:
                self.queue.task_done()
                if not items and self._sink.retire(self):
                    self.running = False
                    break
                self.declined_to_end = True
                continue
            if not items:
                self._gather()
            size = _encoded_size(message)
            if size > MAX_MESSAGE_BYTES:
                # Segment's consumer drops these without marking them done: flush would hang.
                self._sink.failed(ValueError("message over 32 KB"), [message])
                self.queue.task_done()
                continue
            if total + size > MAX_BATCH_BYTES:
                self._held = (message, size)
                break
            items.append(message)
            total += size
        return items

    def _gather(self) -> None:
        """Under load, wait for the next post's time, unless a flush or a full batch calls."""
        since = time.monotonic() - self._last_post
        if since < POST_INTERVAL_SECONDS and not self._sink.flushing:
            self._sink.post_now.wait(POST_INTERVAL_SECONDS - since)
        self._sink.post_now.clear()

    def request(self, batch: list[dict[str, Any]]) -> Any:
        self._last_post = time.monotonic()
        response = super().request(batch)
        self._sink.delivered(batch)
        return response


# Put on the queue by Sink.end_idle_consumer: not a message, a request to end when idle.
_END_WHEN_IDLE: Any = object()


def _encoded_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, cls=DatetimeSerializer).encode())


class Sink:
    """One write key and host: Segment's queue and consumer, and whose each message is."""

    def __init__(self, write_key: str, host: str, options: Options) -> None:
        self.host = host
        self.write_key = str(write_key)
        self.options = options
        self.queue: queue.Queue[Any] = queue.Queue(options.max_queue_size)
        self._owners: dict[str, list[Stats]] = {}
        self._lock = threading.Lock()
        self._consumer: Optional[Consumer] = None
        self._failing = False
        self.quiet = QuietClient()
        # Set to have a waiting consumer post now: by a flush, or a full batch. While flushes
        # are under way (how many: flushing) the consumer posts without waiting at all.
        self.post_now = threading.Event()
        self.flushing = 0

    def __repr__(self) -> str:
        return f"Sink(write_key={mask(self.write_key)!r}, host={self.host!r})"

    def put_many(self, messages: Sequence[dict[str, Any]], owner: Stats, debug: bool) -> None:
        """Queue the messages; count them forwarded, or dropped once Segment's queue is full.

        A forwarded message is later counted exactly once as delivered or failed.
        """
        self.quiet.follow_debug(debug)
        queued = 0
        start: Optional[Consumer] = None
        # Under the lock the consumer settles with, so a delivery never precedes its count.
        with self._lock:
            for message in messages:
                try:
                    self.queue.put_nowait(message)
                except queue.Full:
                    break
                self._owners.setdefault(message["messageId"], []).append(owner)
                queued += 1
            if queued:
                owner.add("forwarded", queued)
                consumer = self._consumer
                # A consumer that died (it never should) would leave the queue to fill for good.
                if consumer is None or consumer.finished:
                    start = self._consumer = Consumer(self, self.queue)
        if queued < len(messages):
            owner.add("dropped_queue_full", len(messages) - queued)
        if self.queue.qsize() >= UPLOAD_SIZE:
            self.post_now.set()
        # Started outside the lock: under gevent, starting a thread yields to other greenlets.
        if start is not None:
            start.start()

    def retire(self, consumer: Consumer) -> bool:
        """Whether an idle consumer may end: not while a message waits for it."""
        with self._lock:
            if self.queue.qsize() or self._consumer is not consumer:
                return self._consumer is not consumer
            self._consumer = None
            return True

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """While the block runs, post what is queued as soon as it is queued."""
        with self._lock:
            self.flushing += 1
        self.post_now.set()
        try:
            yield
        finally:
            with self._lock:
                self.flushing -= 1

    def end_idle_consumer(self, deadline: float) -> None:
        """Have the consumer end, if nothing waits to be posted; wait for it until deadline."""
        consumer = self._consumer
        if consumer is None or consumer is threading.current_thread():
            return
        consumer.declined_to_end = False
        try:
            self.queue.put_nowait(_END_WHEN_IDLE)
        except queue.Full:
            return
        join_unless(consumer, lambda: consumer.declined_to_end, deadline)

    def wait_until_sent(self, deadline: float) -> bool:
        """Wait until every queued message was posted or given up on, at most until deadline."""
        return drain(self.queue, deadline)

    def delivered(self, batch: list[dict[str, Any]]) -> None:
        self._settle(batch, "delivered")
        if self._failing:
            self._failing = False
            logger.warning("sentry-segment: delivery to %s recovered", self.host)

    def failed(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        # Runs on Segment's consumer thread, which dies for good if this raises.
        try:
            self._settle(batch, "failed")
            if not self._failing:
                self._failing = True
                logger.warning(
                    "sentry-segment: delivery failing, logging again on recovery: %s",
                    describe_failure(error, self.host),
                )
        except Exception:
            pass

    def _settle(self, batch: list[dict[str, Any]], outcome: str) -> None:
        settled: dict[Stats, int] = {}
        with self._lock:
            for message in batch:
                owner = self._take_owner(message.get("messageId"))
                if owner is not None:
                    settled[owner] = settled.get(owner, 0) + 1
        for owner, count in settled.items():
            owner.add(outcome, count)

    def _take_owner(self, message_id: Any) -> Optional[Stats]:
        waiting = self._owners.get(message_id)
        if not waiting:
            return None
        owner = waiting.pop(0)
        if not waiting:
            del self._owners[message_id]
        return owner


# What to check when Segment answers with a status, by status.
_HINTS = {
    400: "Segment refused the batch as invalid",
    401: "check the write key (SENTRY_SEGMENT_WRITE_KEY) and that the host or region "
    "(SENTRY_SEGMENT_REGION) is the source's workspace's",
    403: "check the write key (SENTRY_SEGMENT_WRITE_KEY) and that the host or region "
    "(SENTRY_SEGMENT_REGION) is the source's workspace's",
    404: "check the host (SENTRY_SEGMENT_HOST): it is scheme and host only",
    413: "Segment refused the batch as too large",
    429: "Segment is rate-limiting this source",
}


def describe_failure(error: BaseException, host: str) -> str:
    """What went wrong posting to host, with its HTTP status and what to check."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        hint = _HINTS.get(status) or (
            "Segment is failing; the client retried" if status >= 500 else "Segment refused it"
        )
        return f"{host} answered HTTP {status}: {hint}"
    if isinstance(error, OSError) or type(error).__module__.startswith(("requests", "urllib3")):
        return (
            f"could not reach {host} ({type(error).__name__}): check the host "
            "(SENTRY_SEGMENT_HOST, SENTRY_SEGMENT_REGION) and the network"
        )
    return f"posting to {host} failed ({type(error).__name__}: {error})"


# How often drain() looks at a queue that has no condition to wait on, and join_unless()
# whether a thread ended.
POLL_SECONDS = 0.002


def join_unless(thread: threading.Thread, took_work: Callable[[], bool], deadline: float) -> None:
    """Wait until the thread has ended, at most until deadline, or until took_work() says it
    took new work instead of ending."""
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(POLL_SECONDS)
        if thread.is_alive() and took_work():
            return


def drain(work: queue.Queue[Any], deadline: float) -> bool:
    """Wait until every item put on the queue was marked done, or the deadline passes."""
    if not hasattr(work, "all_tasks_done"):
        # gevent's queue, once monkey-patched, has no condition: look, sleeping (a yield).
        while work.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True
    with work.all_tasks_done:
        while work.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            work.all_tasks_done.wait(remaining)
    return True


class _RedactWriteKeys(logging.Filter):
    """Segment's client logs request bodies, write key included, at DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.write_keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = message
        for write_key in self.write_keys:
            redacted = redacted.replace(write_key, mask(write_key))
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_sinks: dict[tuple[str, str], Sink] = {}
_sinks_lock = threading.Lock()
_sinks_pid = os.getpid()
_redact = _RedactWriteKeys()
logging.getLogger(SEGMENT_LOGGER).addFilter(_redact)


def redact(write_key: str) -> None:
    """Mask this write key in everything Segment's client logs."""
    _redact.write_keys.add(str(write_key))


def sink_for(write_key: str, host: str, options: Options) -> Sink:
    """The process's Segment client for this write key and host, created on first use.

    Its queue size, timeout and retries are those of the options that created it. A process
    forked without Python's fork hooks (uWSGI's workers, a fork() from C) is noticed here by
    its PID and starts afresh, as the hook would have made it.
    """
    if _sinks_pid != os.getpid():
        forget_sinks()
    key = (str(write_key), host)
    found: Optional[Sink] = _sinks.get(key)
    if found is not None:
        return found
    with _sinks_lock:
        found = _sinks.get(key)
        if found is None:
            redact(write_key)
            found = _sinks[key] = Sink(write_key, host, options)
    return found


def forget_sinks() -> None:
    """A client copied by fork() has no consumer thread; the child builds its own."""
    global _sinks_lock, _sinks_pid  # noqa: PLW0603
    _sinks_pid = os.getpid()
    _sinks_lock = threading.Lock()
    _sinks.clear()
    # Connections pooled by the parent must not be shared with the child.
    segment_request._session = sessions.Session()


os.register_at_fork(after_in_child=forget_sinks)
