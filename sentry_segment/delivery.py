"""Segment clients, one per write key and host per process, and what each delivered or lost."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

import wrapt
from requests import sessions
from segment.analytics import Client
from segment.analytics import request as segment_request
from segment.analytics.version import VERSION as SEGMENT_VERSION
from sentry_sdk.utils import capture_internal_exceptions, logger

from .config import Options, mask
from .payload import Track
from .stats import Stats

SEGMENT_LOGGER = "segment"
_LIBRARY = {"name": "analytics-python", "version": SEGMENT_VERSION}


def segment_message(track: Track) -> dict[str, Any]:
    """The message Segment's ``Client.track()`` queues for this call, field for field.

    Built here rather than by track(), which re-checks in the caller's thread what payload
    guarantees by construction (string fields, an aware timestamp, under 32 KB): its clean()
    walk and its JSON encoding to measure the size were half of the Segment client's CPU per
    message. Its queue, consumer, batching, retries and HTTP posts are still the client's.
    test_delivery holds the two messages equal for any event.
    """
    return track.as_message(_LIBRARY)


class _ClientWithoutAtexitJoin(Client):  # type: ignore[misc]
    """Segment's client, minus the join() its constructor registers with atexit.

    That join stops the consumer before Sentry's atexit flushes us, and waits unbounded on a
    hung request; unregistering it afterwards races with an exit already under way.
    Sentry's close() flushes us instead, within shutdown_timeout.
    """

    def join(self) -> None:
        return None


class Sink:
    """One Segment client; attributes each message's fate to the Stats that sent it."""

    def __init__(self, write_key: str, host: str, options: Options) -> None:
        self.host = host
        self._write_key = write_key
        self._owners: dict[str, list[Stats]] = {}
        self._lock = threading.Lock()
        self._failing = False
        self.client = _ClientWithoutAtexitJoin(
            write_key=str(write_key),
            host=host,
            max_queue_size=options.max_queue_size,
            timeout=options.timeout,
            max_retries=options.max_retries,
            on_error=self._on_error,
            thread=1,
            upload_size=500,
        )
        for consumer in self.client.consumers:
            consumer.request = wrapt.FunctionWrapper(consumer.request, self._count_delivered)

    def __repr__(self) -> str:
        return f"Sink(write_key={mask(self._write_key)!r}, host={self.host!r})"

    def track_many(self, tracks: Sequence[Track], owner: Stats) -> None:
        """Queue the calls; count them forwarded, or dropped once Segment's queue is full.

        A forwarded message is later counted exactly once as delivered or failed.
        """
        messages = [segment_message(track) for track in tracks]
        queued = 0
        # Under the lock the consumer settles with, so a delivery never precedes its count.
        with self._lock:
            for track, message in zip(tracks, messages):
                try:
                    self.client.queue.put_nowait(message)
                except queue.Full:
                    break
                self._owners.setdefault(track.message_id, []).append(owner)
                queued += 1
            if queued:
                owner.add("forwarded", queued)
        if queued < len(tracks):
            owner.add("dropped_queue_full", len(tracks) - queued)

    def wait_until_sent(self, deadline: float) -> bool:
        """Wait until every queued message was posted or given up on, at most until deadline."""
        return drain(self.client.queue, deadline)

    def _count_delivered(
        self, wrapped: Callable[..., Any], _instance: Any, args: Any, kwargs: Any
    ) -> Any:
        response = wrapped(*args, **kwargs)
        with capture_internal_exceptions():
            batch = kwargs.get("batch", args[0] if args else [])
            self._settle([message.get("messageId") for message in batch], "delivered")
            if self._failing:
                self._failing = False
                logger.warning("sentry-segment: delivery to %s recovered", self.host)
        return response

    def _on_error(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        # Runs on Segment's consumer thread, which dies for good if this raises.
        try:
            self._settle([message.get("messageId") for message in batch], "failed")
            if not self._failing:
                self._failing = True
                logger.warning(
                    "sentry-segment: delivery to %s failing (%s); logging again on recovery",
                    self.host,
                    type(error).__name__,
                )
        except Exception:
            pass

    def _settle(self, message_ids: list[Any], outcome: str) -> None:
        settled: dict[Stats, int] = {}
        with self._lock:
            for message_id in message_ids:
                owner = self._take_owner(message_id)
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


def drain(work: queue.Queue[Any], deadline: float) -> bool:
    """Wait until every item put on the queue was marked done, or the deadline passes."""
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
_redact = _RedactWriteKeys()
logging.getLogger(SEGMENT_LOGGER).addFilter(_redact)


def redact(write_key: str) -> None:
    """Mask this write key in everything Segment's client logs."""
    _redact.write_keys.add(str(write_key))


def sink_for(write_key: str, host: str, options: Options) -> Sink:
    """The process's Segment client for this write key and host, created on first use.

    Its queue size, timeout and retries are those of the options that created it.
    """
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


def _forget_sinks_after_fork() -> None:
    """A client copied by fork() has no consumer thread; the child builds its own."""
    global _sinks_lock  # noqa: PLW0603
    _sinks_lock = threading.Lock()
    _sinks.clear()
    # Connections pooled by the parent must not be shared with the child.
    segment_request._session = sessions.Session()


os.register_at_fork(after_in_child=_forget_sinks_after_fork)
