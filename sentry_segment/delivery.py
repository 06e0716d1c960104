"""Segment's client, one per write key and host per process: its queue, a consumer thread that
posts promptly and batches under load, and what became of every message."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from requests import sessions
from segment.analytics import consumer as segment_consumer
from segment.analytics import request as segment_request
from segment.analytics.request import APIError, DatetimeSerializer, parse_retry_after
from segment.analytics.version import VERSION as SEGMENT_VERSION

from . import threads
from .config import Options
from .failures import describe_failure, is_permanent
from .payload import MAX_MESSAGE_BYTES, Track
from .quiet import QuietClient, quiet_scopes
from .secrets import RedactWriteKeys, mask, mask_uri
from .stats import Stats

SEGMENT_LOGGER = "segment"
LIBRARY = {"name": "analytics-python", "version": SEGMENT_VERSION}
# Messages per post. Segment's API takes up to 2,500 and 500 KB per batch, and its client keeps
# a batch under 475 KB (MAX_BATCH_BYTES): an error message is 1 to 2 KB, so about 300 of them
# fill the bytes first, and 500 is never the bound that binds for real messages.
UPLOAD_SIZE = 500
# Read with a default (Segment's 2.4 value): a release that renames it must not stop the
# application from importing; contract.py then leaves the integration inert.
MAX_BATCH_BYTES: int = getattr(segment_consumer, "BATCH_SIZE_LIMIT", 475_000)

# Posts start at least this far apart. A message that finds the last post older is posted at
# once; one that finds it younger waits for the interval to end, and what queues meanwhile goes
# with it, up to a full batch: under load, one post per interval, so the per-post cost does not
# dominate. A flush or a full batch cuts the wait short. Short enough that a process killed
# 0.3 s after its last capture has posted it.
POST_INTERVAL_SECONDS = 0.1
# Between retries of a batch Segment did not take: half to all of 0.5, 1, 2, 4, 4 ... seconds,
# so that delivery resumes within about 5 s of the end of an outage (Segment's own back-off
# reaches 60 s, and the queue behind it filled meanwhile), and a fleet does not retry in step.
# A Retry-After is waited exactly, and does not count as a retry.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 4.0
# Flushes stop waiting once a batch failed this often in a row: a single failed post (a blip)
# is retried within 0.5 s, and a flush (at exit, say) waits for that retry; an outage is not.
STALLED_AFTER_FAILURES = 2
# Retry-After waits of one batch, in all, before it counts as failed (Segment's own budget).
RATE_LIMITED_BUDGET_SECONDS = float(
    getattr(segment_consumer, "DEFAULT_MAX_RATE_LIMIT_DURATION", 1800)
)
# After an answer no retry can change (401, 403, 404, a certificate that does not verify), no
# post for this long: what arrives meanwhile counts as failed at once; then one post tries again.
REFUSED_PAUSE_SECONDS = 60.0
# Messages Segment refuses one by one (400, 413 after splitting) are logged at most this often.
REFUSED_MESSAGES_LOG_SECONDS = 300.0
# Statuses that refuse what the batch holds, not the source: the batch is split to find which.
SPLIT_STATUSES = frozenset({400, 413})
# The integration's own lines, at WARNING: one when delivery starts failing, one on recovery.
LOGGER_NAME = "sentry_segment"
log = logging.getLogger(LOGGER_NAME)


def segment_message(track: Track) -> dict[str, Any]:
    """The message Segment's ``Client.track()`` queues for this call, field for field.

    Built here rather than by track(), which re-checks in the caller's thread what payload
    guarantees by construction (string fields, an aware timestamp, under 32 KB): its clean()
    walk and its JSON encoding to measure the size were half of the Segment client's CPU per
    message. test_delivery holds the two messages equal for any event.
    """
    return track.as_message(LIBRARY)


class Consumer(segment_consumer.Consumer):  # type: ignore[misc]
    """Segment's consumer thread, posting promptly, with retries of its own for outages.

    Segment's waits up to its upload interval (0.5 s) for every batch to fill. This one
    posts a message at once when the process is quiet; under load, everything that queued
    while the previous post was in flight or within its interval goes in the next (group
    commit), up to 500 messages and 475 KB. It runs where Sentry records nothing.

    It posts with Segment's ``post()`` and retries as Segment's consumer does not: a capped
    back-off, a pause after an answer no retry changes, and a refused batch split so that only
    the messages Segment refuses fail.
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
        # When the post in flight started (monotonic), None between posts.
        self.posting_since: Optional[float] = None

    def run(self) -> None:
        try:
            with quiet_scopes(self._sink.quiet):
                super().run()
        finally:
            self.finished = True

    def next(self) -> list[dict[str, Any]]:
        """Everything queued now, or the first message to arrive within threads.IDLE_SECONDS."""
        items: list[dict[str, Any]] = []
        total = 0
        if self._held is not None:
            (message, size), self._held = self._held, None
            items.append(message)
            total = size
        while len(items) < self.upload_size:
            try:
                message = self.queue.get(block=not items, timeout=threads.IDLE_SECONDS)
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
            size = _json_size(message)
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

    def upload(self) -> bool:
        """Deliver the next batch, retrying through an outage; each message ends delivered
        or failed, and is marked done on the queue once, whatever happens."""
        batch = self.next()
        if not batch:
            return False
        try:
            return self._deliver(batch)
        except Exception as error:
            # A bug of ours must not end the thread: the queue would fill for good.
            with contextlib.suppress(Exception):
                self._sink.failed(error, batch)
            return False
        finally:
            for _ in batch:
                self.queue.task_done()

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        sink = self._sink
        failures = 0
        limited_for = 0.0
        while True:
            if sink.refusing():
                sink.failed(sink.refused_by or RuntimeError("refused"), batch)
                return False
            problem = self._post_isolating(batch)
            if problem is None:
                return True
            error, batch = problem
            if is_permanent(error):
                sink.refuse(error, batch)
                return False
            retry_after = _retry_after(error)
            if retry_after is not None and limited_for + retry_after <= RATE_LIMITED_BUDGET_SECONDS:
                wait = float(retry_after)
                limited_for += wait
            else:
                failures += 1
                wait = backoff(failures)
            sink.failing(error, self.timeout, stalled=retry_after is not None or failures > 1)
            if failures > self.retries:
                sink.failed(error, batch)
                return False
            time.sleep(wait)

    def _post(self, batch: list[dict[str, Any]]) -> None:
        self._last_post = self.posting_since = time.monotonic()
        try:
            segment_request.post(self.write_key, self.host, timeout=self.timeout, batch=batch)
        finally:
            self.posting_since = None

    def _post_isolating(
        self, batch: list[dict[str, Any]]
    ) -> Optional[tuple[Exception, list[dict[str, Any]]]]:
        """Post the batch; if Segment refuses what it holds (400, 413), post its halves, and
        theirs, so that only the messages it refuses fail: at most 2 extra posts per halving,
        2 * ceil(log2(len(batch))) in all. None once every message is delivered or failed,
        else the error that stopped it and the messages not yet delivered or failed."""
        budget = 2 * math.ceil(math.log2(len(batch))) if len(batch) > 1 else 0
        parts = [batch]
        refused: Optional[APIError] = None
        refused_messages = 0
        while parts:
            part = parts.pop()
            try:
                self._post(part)
            except APIError as error:
                if error.status not in SPLIT_STATUSES:
                    return error, [message for rest in (*parts, part) for message in rest]
                refused = error
                if len(part) == 1 or budget < 2:
                    self._sink.failed(error, part)
                    refused_messages += len(part)
                    continue
                budget -= 2
                middle = len(part) // 2
                parts.extend((part[middle:], part[:middle]))
                continue
            except Exception as error:
                return error, [message for rest in (*parts, part) for message in rest]
            self._sink.delivered(part)
        if refused is not None:
            self._sink.refused_messages(refused, refused_messages, len(batch))
        return None

    def request(self, batch: list[dict[str, Any]]) -> Any:
        """Segment's single post with its retries is not used: see upload()."""
        raise NotImplementedError


def backoff(failures: int) -> float:
    """Seconds to wait after the batch failed this many times in a row: jittered, capped."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(failures - 1, 30))
    return random.uniform(ceiling / 2, ceiling)


def _retry_after(error: Exception) -> Optional[float]:
    response = getattr(error, "response", None)
    if not isinstance(error, APIError) or response is None:
        return None
    delay = parse_retry_after(response)
    return float(delay) if delay else None


# Put on the queue by Sink.end_idle_consumer: not a message, a request to end when idle.
_END_WHEN_IDLE: Any = object()


def _json_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, cls=DatetimeSerializer).encode())


class Sink:
    """One write key and host: Segment's queue and consumer, whose each message is, and
    whether delivery is failing (one log line when it starts, one when it recovers)."""

    def __init__(self, write_key: str, host: str, options: Options) -> None:
        self.host = host
        self.write_key = str(write_key)
        self.options = options
        self.queue: queue.Queue[Any] = queue.Queue(options.max_queue_size)
        self._owners: dict[str, list[Stats]] = {}
        self._lock = threading.Lock()
        self._consumer: Optional[Consumer] = None
        self.quiet = QuietClient()
        # Set to have a waiting consumer post now: by a flush, or a full batch. While flushes
        # are under way (how many: flushing) the consumer posts without waiting at all.
        self.post_now = threading.Event()
        self.flushing = 0
        # Since when delivery fails (monotonic), None while it works; while stalled (failing
        # for more than a blip) flushes do not wait.
        self.failing_since: Optional[float] = None
        self.stalled = False
        self.refused_by: Optional[Exception] = None
        self._refused_until = 0.0
        self._dropped_while_failing = 0
        self._refused_messages_logged = -math.inf

    def __repr__(self) -> str:
        return f"Sink(write_key={mask(self.write_key)!r}, host={mask_uri(self.host)!r})"

    def put_many(self, messages: Sequence[dict[str, Any]], owner: Stats, debug: bool) -> None:
        """Queue the messages; count them forwarded, or dropped once Segment's queue is full.

        While delivery fails, a full queue keeps the newest messages: each new one takes the
        place of the oldest queued, counted in dropped_oldest. Those are the errors users see
        now, and what is captured after an outage ends must not find the queue full of what
        Segment refused during it. While delivery works a full queue is a flood that drains
        within seconds; the new messages are dropped.
        """
        self.quiet.follow_debug(debug)
        queued = 0
        start: Optional[Consumer] = None
        evicted: dict[Stats, int] = {}
        # Under the lock the consumer settles with, so a delivery never precedes its count.
        with self._lock:
            for message in messages:
                try:
                    self.queue.put_nowait(message)
                except queue.Full:
                    if self.failing_since is None or not self._evict_oldest(evicted):
                        break
                    self.queue.put_nowait(message)
                self._owners.setdefault(message["messageId"], []).append(owner)
                queued += 1
            if queued:
                owner.add("forwarded", queued)
                consumer = self._consumer
                # A consumer that died (it never should) would leave the queue to fill for good.
                if consumer is None or consumer.finished:
                    start = self._consumer = Consumer(self, self.queue)
        dropped = len(messages) - queued
        if dropped:
            owner.add("dropped_queue_full", dropped)
        for evicted_owner, count in evicted.items():
            evicted_owner.add("dropped_oldest", count)
        if evicted or (dropped and self.failing_since is not None):
            self._dropped(dropped + sum(evicted.values()))
        if self.queue.qsize() >= UPLOAD_SIZE:
            self.post_now.set()
        # Started outside the lock: under gevent, starting a thread yields to other greenlets.
        if start is not None:
            start.start()

    def _evict_oldest(self, evicted: dict[Stats, int]) -> bool:
        """Take the oldest queued message off the queue, to be counted as dropped."""
        while True:
            try:
                oldest = self.queue.get_nowait()
            except queue.Empty:
                return False
            self.queue.task_done()
            if oldest is _END_WHEN_IDLE:
                continue
            owner = self._take_owner(oldest.get("messageId"))
            if owner is not None:
                evicted[owner] = evicted.get(owner, 0) + 1
            return True

    def _dropped(self, count: int) -> None:
        first = self._dropped_while_failing == 0
        self._dropped_while_failing += count
        if first:
            log.warning(
                "sentry-segment: Segment's queue for %s is full while delivery fails: keeping "
                "the newest %d messages, dropping the oldest (counted in dropped_oldest; "
                "logged once per outage)",
                mask_uri(self.host),
                self.options.max_queue_size,
            )

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
        threads.join_unless(consumer, lambda: consumer.declined_to_end, deadline)

    def wait_until_sent(self, deadline: float) -> bool:
        """Wait until every queued message was posted or given up on, at most until deadline.

        Not while delivery is stalled (failing beyond a blip, or a post hung through a whole
        flush): what is queued stays queued for the next attempt, and the wait returns False
        at once (when it stalls, if it started before)."""
        started = time.monotonic()
        if threads.drain(self.queue, deadline, lambda: self.stalled):
            return True
        consumer = self._consumer
        posting_since = consumer.posting_since if consumer is not None else None
        if posting_since is not None and posting_since <= started:
            # A post that hung through a whole flush: Segment does not answer (a black hole,
            # until the post's timeout says so). The next flushes do not wait for it either.
            self._stall()
        return False

    def delivered(self, batch: list[dict[str, Any]]) -> None:
        self._settle(batch, "delivered")
        since = self.failing_since
        if since is not None:
            self.failing_since = self.refused_by = None
            self.stalled = False
            dropped, self._dropped_while_failing = self._dropped_while_failing, 0
            log.warning(
                "sentry-segment: delivery to %s recovered after %.1f s%s",
                mask_uri(self.host),
                time.monotonic() - since,
                f"; {dropped} messages were dropped meanwhile (dropped_oldest, dropped_queue_full)"
                if dropped
                else "",
            )

    def failed(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        """Count the batch failed. Runs on the consumer thread, which must never die of it."""
        with contextlib.suppress(Exception):
            self._settle(batch, "failed")

    def failing(
        self, error: Exception, timeout: Optional[float] = None, stalled: bool = True
    ) -> None:
        """Delivery failed and will be retried: log it if it was working; stalled, flushes
        stop waiting."""
        self._start_failing(
            f"{describe_failure(error, self.host, timeout)}; "
            + (
                f"retrying every few seconds, up to {self.options.max_retries} times a batch "
                "before it counts as failed"
                if self.options.max_retries
                else "not retried (max_retries=0): counted as failed"
            )
        )
        if stalled:
            self._stall()

    def refuse(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        """An answer no retry can change: fail the batch, and post nothing for a while."""
        self.failed(error, batch)
        self.refused_by = error
        self._refused_until = time.monotonic() + REFUSED_PAUSE_SECONDS
        self._start_failing(
            f"{describe_failure(error, self.host, self.options.timeout)} (write key "
            f"{mask(self.write_key)}); not retried: no post for {REFUSED_PAUSE_SECONDS:g} s, "
            "what is forwarded meanwhile counts as failed"
        )
        self._stall()

    def refusing(self) -> bool:
        """Whether posts are paused after an answer no retry can change."""
        return self.refused_by is not None and time.monotonic() < self._refused_until

    def refused_messages(self, error: APIError, count: int, of: int) -> None:
        """Segment refused some messages of a batch it took the rest of: log, not too often."""
        now = time.monotonic()
        if count and now - self._refused_messages_logged >= REFUSED_MESSAGES_LOG_SECONDS:
            self._refused_messages_logged = now
            log.warning(
                "sentry-segment: %s answered HTTP %d to %d of %d messages, which count as "
                "failed; the others were delivered (logged at most every %.0f s)",
                mask_uri(self.host),
                error.status,
                count,
                of,
                REFUSED_MESSAGES_LOG_SECONDS,
            )

    def _start_failing(self, description: str) -> None:
        if self.failing_since is not None:
            return
        self.failing_since = time.monotonic()
        with contextlib.suppress(Exception):
            log.warning(
                "sentry-segment: delivery failing: %s; flushes do not wait for Segment "
                "until it recovers, which is logged",
                description,
            )

    def _stall(self) -> None:
        if self.stalled:
            return
        self.stalled = True
        # A flush waiting for this post returns now.
        condition = getattr(self.queue, "all_tasks_done", None)
        if condition is not None:
            with condition:
                condition.notify_all()

    def abandon(self) -> int:
        """At exit: count every message not yet delivered or failed as dropped_at_exit."""
        with self._lock:
            owners, self._owners = self._owners, {}
        counts: dict[Stats, int] = {}
        for waiting in owners.values():
            for owner in waiting:
                counts[owner] = counts.get(owner, 0) + 1
        for owner, count in counts.items():
            owner.add("dropped_at_exit", count)
        return sum(counts.values())

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


class _FoldSegmentsLines(logging.Filter):
    """Segment's ``post()`` logs a failed post at ERROR, on every post: from the integration's
    consumers those lines go nowhere, since the integration logs one line per outage. Its
    DEBUG lines pass, for whoever turned them on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.INFO or not isinstance(threading.current_thread(), Consumer)


_sinks: dict[tuple[str, str], Sink] = {}
_sinks_lock = threading.Lock()
_sinks_pid = os.getpid()
_redact = RedactWriteKeys()
logging.getLogger(SEGMENT_LOGGER).addFilter(_redact)
logging.getLogger(SEGMENT_LOGGER).addFilter(_FoldSegmentsLines())


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


def report_undelivered() -> int:
    """At exit: count what Segment did not take by then as dropped_at_exit, in one line."""
    lost = {sink.host: sink.abandon() for sink in list(_sinks.values())}
    total = sum(lost.values())
    if total:
        with contextlib.suppress(Exception):
            log.warning(
                "sentry-segment: exiting with %d messages not delivered to Segment (%s); "
                "counted in dropped_at_exit",
                total,
                ", ".join(f"{mask_uri(host)}: {count}" for host, count in lost.items() if count),
            )
    return total


# Registered on import, before sentry_sdk.init registers its own: atexit runs this after
# Sentry's close, whose flush waited for what Segment could still take.
atexit.register(report_undelivered)
