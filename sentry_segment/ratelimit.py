"""The per-organization limit on forwarded events: a `limits` strategy over a shared storage,
with the process's own memory as the fallback while that storage cannot be reached."""

from __future__ import annotations

import threading
import time
from typing import Optional

from limits import RateLimitItem
from limits.storage import MemoryStorage, MovingWindowSupport, Storage, storage_from_string
from limits.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from sentry_sdk.utils import logger

from .config import MEMORY_STORAGE, mask_uri
from .stats import Stats

NAMESPACE = "sentry-segment"
# A shared storage that does not answer this fast is treated as down.
STORAGE_TIMEOUT_SECONDS = 0.25
# While it is down, it is tried again this often; events in between use the fallback.
STORAGE_RETRY_SECONDS = 1.0
# Reads of the remaining budget before giving up on a batch that other processes contend for.
TAKE_ATTEMPTS = 3


def strategy_for(storage: Storage) -> RateLimiter:
    """A moving window where the storage supports one (memory, Redis), else a sliding-window
    counter (memcached), which approximates it."""
    if isinstance(storage, MovingWindowSupport):
        return MovingWindowRateLimiter(storage)
    return SlidingWindowCounterRateLimiter(storage)


def _shared_storage(uri: str) -> Storage:
    timeouts: dict[str, float] = {}
    if uri.startswith(("redis", "rediss")):
        timeouts = {
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        }
    elif uri.startswith("memcached"):
        timeouts = {"connect_timeout": STORAGE_TIMEOUT_SECONDS, "timeout": STORAGE_TIMEOUT_SECONDS}
    storage = storage_from_string(uri, wrap_exceptions=True, **timeouts)
    assert isinstance(storage, Storage)
    return storage


class RateLimit:
    """Allows at most each item's amount of events in any window of its length."""

    def __init__(
        self, items: tuple[RateLimitItem, ...], stats: Stats, storage_uri: str = MEMORY_STORAGE
    ) -> None:
        self.items = items
        self._stats = stats
        self._storage_uri = storage_uri
        self._memory = MemoryStorage()
        self._local = strategy_for(self._memory)
        self._shared: Optional[RateLimiter] = None
        if items and storage_uri != MEMORY_STORAGE:
            self._shared = strategy_for(_shared_storage(storage_uri))
        self._retry_shared_at = 0.0
        self._falling_back = False

    def allow(self, organization: str) -> bool:
        """Take one unit from every limit of the organization, or none when any is spent."""
        return self.allow_many(organization, 1) == 1

    def allow_many(self, organization: str, count: int) -> int:
        """How many of ``count`` events may go now; takes that many units from every limit."""
        if not self.items or count <= 0:
            return max(count, 0)
        if self._shared is not None and time.monotonic() >= self._retry_shared_at:
            try:
                allowed = self._take(self._shared, organization, count)
            except Exception as error:
                self._fall_back(error)
            else:
                if self._falling_back:
                    self._falling_back = False
                    logger.warning("sentry-segment: rate-limit storage %s is back", self._where)
                return allowed
        if self._shared is not None:
            self._stats.add("rate_limit_fallback", count)
        return self._take(self._local, organization, count)

    def end_timer(self, deadline: float) -> None:
        """End the memory storage's expiry timer, a thread it starts 10 ms ahead after each
        use; the next use starts another (and expires what is due then)."""
        timer = getattr(self._memory, "timer", None)
        if isinstance(timer, threading.Timer) and timer is not threading.current_thread():
            timer.cancel()
            timer.join(max(0.0, deadline - time.monotonic()))

    @property
    def _where(self) -> str:
        return mask_uri(self._storage_uri)

    def _fall_back(self, error: Exception) -> None:
        self._retry_shared_at = time.monotonic() + STORAGE_RETRY_SECONDS
        if not self._falling_back:
            self._falling_back = True
            logger.warning(
                "sentry-segment: rate-limit storage %s unreachable (%s); limiting in this "
                "process until it answers again",
                self._where,
                type(error).__name__,
            )

    def _take(self, limiter: RateLimiter, organization: str, count: int) -> int:
        # Another process may take units between reading what is left and taking it: re-read.
        for _ in range(TAKE_ATTEMPTS):
            wanted = min(
                count, *(self._remaining(limiter, item, organization) for item in self.items)
            )
            if wanted <= 0:
                return 0
            if len(self.items) > 1 and not all(
                limiter.test(item, NAMESPACE, organization, cost=wanted) for item in self.items
            ):
                continue
            taken = [limiter.hit(item, NAMESPACE, organization, cost=wanted) for item in self.items]
            if all(taken):
                return wanted
        return 0

    @staticmethod
    def _remaining(limiter: RateLimiter, item: RateLimitItem, organization: str) -> int:
        return int(limiter.get_window_stats(item, NAMESPACE, organization).remaining)
