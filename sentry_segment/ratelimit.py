"""The per-organization moving-window limit on forwarded events (strategy from `limits`)."""

from __future__ import annotations

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

NAMESPACE = "sentry-segment"


class RateLimit:
    """Allows at most each item's amount of events in any window of its length."""

    def __init__(self, items: tuple[RateLimitItem, ...]) -> None:
        self.items = items
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, organization: str) -> bool:
        """Take one unit from every limit of the organization, or none when any is spent."""
        if not self.items:
            return True
        if not all(self._limiter.test(item, NAMESPACE, organization) for item in self.items):
            return False
        taken = [self._limiter.hit(item, NAMESPACE, organization) for item in self.items]
        return all(taken)
