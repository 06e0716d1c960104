"""Per-integration state: filters sent events; off the capturing thread, builds, limits, queues."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Optional

from sentry_sdk.scope import Scope, ScopeType, use_isolation_scope, use_scope
from sentry_sdk.utils import capture_internal_exception, capture_internal_exceptions

from . import delivery, payload
from .config import Options
from .ratelimit import RateLimit
from .routing import Route, route
from .stats import Stats

# An idle worker thread exits after this long; the next event starts a new one.
IDLE_SECONDS = 30.0
# The worker takes what has queued once per this interval: a few long turns at the GIL
# instead of a wake-up per event, and nothing on the capturing thread but an append
# (see the README's benchmarks). Events wait for it at most this long.
LINGER_SECONDS = 0.1
# How often flush() looks whether the worker is done.
FLUSH_POLL_SECONDS = 0.005
# Events the worker takes off the queue at once, and decides with one rate-limit round trip.
BATCH_SIZE = 1000


class Forwarder:
    """Everything one SegmentIntegration remembers: routes, limits, queue, worker and counters."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stats = Stats()
        self._routes: dict[Optional[str], Route] = {}
        self._sinks: set[delivery.Sink] = set()
        self._reset()
        _live_forwarders.add(self)

    def _reset(self) -> None:
        # A deque, not a queue.Queue: append and popleft are atomic and cost the capturing
        # thread no lock and no wake-up; the bound is checked before appending, so it may be
        # passed by at most one event per thread racing on it.
        self._pending: deque[tuple[payload.ErrorFields, Route]] = deque()
        self._busy = False
        self._lock = threading.Lock()
        self._worker_running = False
        self._rate_limit = RateLimit(
            self.options.rate_limits, self.stats, self.options.rate_limit_storage
        )

    def route_for(self, dsn: Optional[str]) -> Route:
        found = self._routes.get(dsn)
        if found is None:
            found = self._routes[dsn] = route(self.options, dsn)
        return found

    def offer(self, event: Mapping[str, Any], dsn: Optional[str]) -> None:
        """Consider an event Sentry has sent; queue it for forwarding or count why not."""
        if not payload.is_error(event):
            self.stats.add("skipped_not_error")
            return
        destination = self.route_for(dsn)
        if not destination.enabled:
            self.stats.add("skipped_disabled")
            return
        if payload.user_id(event) is None:
            self.stats.add("skipped_no_user")
            return
        if len(self._pending) >= self.options.max_queue_size:
            self.stats.add("dropped_queue_full")
            return
        self._pending.append((payload.error_fields(event), destination))
        if not self._worker_running:
            self._start_worker()

    def flush(self, deadline: float) -> bool:
        """Wait until queued events reached Segment (or failed), at most until deadline."""
        # _busy is set before the worker takes events off the deque and cleared once they are
        # handed to Segment's client, so "empty and not busy" means all were handed over.
        while self._pending or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(FLUSH_POLL_SECONDS)
        done = True
        for sink in list(self._sinks):
            done = sink.wait_until_sent(deadline) and done
        return done

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker_running:
                return
            self._worker_running = True
            # Started during a capture, the thread would inherit that capture's scope through
            # sentry-sdk's threading integration (its user, breadcrumbs and open span, and so
            # would Segment's consumer thread, started from it): Segment's posts would join
            # the application's trace. It starts from empty scopes instead.
            isolation, current = Scope(ty=ScopeType.ISOLATION), Scope(ty=ScopeType.CURRENT)
            with use_isolation_scope(isolation), use_scope(current):
                threading.Thread(target=self._work, name="sentry-segment", daemon=True).start()

    def _work(self) -> None:
        pending = self._pending
        idle_since = time.monotonic()
        while True:
            time.sleep(LINGER_SECONDS)
            if not pending:
                if time.monotonic() - idle_since < IDLE_SECONDS:
                    continue
                with self._lock:
                    if not pending:
                        self._worker_running = False
                        return
            self._busy = True
            try:
                while pending:
                    batch = [pending.popleft() for _ in range(min(BATCH_SIZE, len(pending)))]
                    with capture_internal_exceptions():
                        self._forward(batch)
            finally:
                self._busy = False
            idle_since = time.monotonic()

    def _forward(self, batch: list[tuple[payload.ErrorFields, Route]]) -> None:
        """Decide a whole batch per organization in one round trip, then queue the allowed."""
        by_organization: dict[str, list[tuple[payload.ErrorFields, Route]]] = {}
        for fields, destination in batch:
            by_organization.setdefault(destination.organization, []).append((fields, destination))
        for organization, waiting in by_organization.items():
            allowed = len(waiting)
            with capture_internal_exceptions():
                allowed = self._rate_limit.allow_many(organization, len(waiting))
            if allowed < len(waiting):
                self.stats.add("rate_limited", len(waiting) - allowed)
            by_sink: dict[delivery.Sink, list[payload.Track]] = {}
            for fields, destination in waiting[:allowed]:
                # A plain try, not capture_internal_exceptions(), per event: one bad event
                # must not stop the others, and this loop runs for every forwarded one.
                try:
                    by_sink.setdefault(self._sink(destination), []).append(self._track(fields))
                except Exception:
                    capture_internal_exception(sys.exc_info())
            for sink, tracks in by_sink.items():
                with capture_internal_exceptions():
                    sink.track_many(tracks, self.stats)

    def _track(self, fields: payload.ErrorFields) -> payload.Track:
        track = payload.track_from_fields(fields, self.options.event_name)
        if not track.message_id:
            # Sentry always sets event_id; without one Segment could not de-duplicate retries.
            track = dataclasses.replace(track, message_id=uuid.uuid4().hex)
        return track

    def _sink(self, destination: Route) -> delivery.Sink:
        assert destination.write_key is not None
        sink = delivery.sink_for(destination.write_key, destination.host, self.options)
        self._sinks.add(sink)
        return sink

    def _after_fork(self) -> None:
        self.stats.after_fork()
        self._sinks = set()
        self._reset()


_live_forwarders: weakref.WeakSet[Forwarder] = weakref.WeakSet()


def _reset_forwarders_after_fork() -> None:
    """fork() copies queues and locks but not the worker thread that owns them."""
    for forwarder in list(_live_forwarders):
        forwarder._after_fork()


os.register_at_fork(after_in_child=_reset_forwarders_after_fork)
