"""Counters of what happened to each event the integration saw, safe to bump from any thread."""

from __future__ import annotations

import threading

COUNTERS = (
    "forwarded",
    "delivered",
    "failed",
    "rate_limited",
    "rate_limit_fallback",
    "skipped_not_sent",
    "skipped_dropped_by_sentry",
    "skipped_not_error",
    "skipped_disabled",
    "skipped_no_write_key",
    "skipped_no_user",
    "dropped_queue_full",
    "dropped_oldest",
    "dropped_at_exit",
    "dropped_by_before_forward",
    "before_forward_errors",
    "dropped_invalid_message",
)


class Stats:
    """Monotonic counters since the integration was created."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def after_fork(self) -> None:
        """A lock held by a thread that fork() did not copy would never be released."""
        self._lock = threading.Lock()
