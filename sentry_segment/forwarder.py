"""Per-integration state: filters what Sentry sent; off the capturing thread, shapes, limits and
hands each message to Segment's client."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, Optional

from sentry_sdk.utils import capture_internal_exception, capture_internal_exceptions, logger

from . import delivery, hints, payload, receipts, threads
from .config import Options
from .quiet import QuietClient, quiet_scopes
from .ratelimit import RateLimit
from .routing import Route, route
from .stats import Stats

# After the first event of a quiet spell the worker gathers for this long, so that a burst
# costs one wake-up, not one per event. flush() cuts it short.
LINGER_SECONDS = 0.02
# Events the worker takes off the queue at once, and decides with one rate-limit round trip.
BATCH_SIZE = 1000


class Forwarder:
    """Everything one SegmentIntegration remembers: routes, limits, queue, worker and counters.

    Nothing that starts a thread or that a thread blocks on is made before it is needed: the
    worker, its wake-up event and the rate limit's storage (limits' memory storage starts a
    timer thread) are made when the first event arrives, in the process and under the
    threading (gevent's, once patched) that will use them.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stats = Stats()
        self.shape = options.shape
        self.quiet = QuietClient()
        self._extras = self.shape if self.shape.needs_extras else False
        self._keep_events = options.before_forward is not None
        # Which events are forwarded: forwardable() decides it for the events Sentry's
        # transport drops, and offer() the same in two steps (each skip counted apart),
        # inlining the checks of the default options and asking these only when event_types
        # or anonymous_id are set.
        self._messages = "message" in options.event_types
        self._anonymous = bool(options.anonymous_id)
        self._forwarded_type = payload.is_error_or_message if self._messages else payload.is_error
        self._identified = (
            functools.partial(payload.identified, sources=options.anonymous_id)
            if self._anonymous
            else payload.has_user_id
        )
        self._routes: dict[Optional[str], Route] = {}
        self._reported: set[str] = set()
        self._hinted_no_user = False
        self._reset()
        _live_forwarders.add(self)

    def _reset(self) -> None:
        # A deque: append and popleft are atomic and cost the capturing thread no lock and no
        # wake-up; the bound is checked before appending, so it may be passed by at most one
        # event per thread racing on it.
        self._pending: deque[tuple[Any, Route]] = deque()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._worker: Optional[threading.Thread] = None
        self._wake: Optional[threads.Bell] = None
        self._settled: Optional[threading.Condition] = None
        self._asleep = False
        self._busy = False
        self._hurry = False
        self._end_when_idle = False
        self._rate_limit: Optional[RateLimit] = None
        self._sinks: set[delivery.Sink] = set()

    def route_for(self, dsn: Optional[str]) -> Route:
        found = self._routes.get(dsn)
        if found is None:
            found = self._routes[dsn] = route(self.options, dsn)
        return found

    def watch(self, transport: Any, dsn: Optional[str]) -> None:
        """Be handed each event this client's transport sends (or, a transport that cannot be
        watched, is handed), and told of each it drops."""
        if transport is not None:
            receipts.watch(
                transport,
                functools.partial(self.offer, dsn=dsn),
                self.dropped_by_sentry,
            )

    def forwardable(self, event: Mapping[str, Any]) -> bool:
        """Whether offer() would queue this event, routing and limits aside."""
        return self._forwarded_type(event) and self._identified(event)

    def dropped_by_sentry(self, event: Mapping[str, Any]) -> None:
        """Sentry's transport dropped an event after capture_event returned its ID."""
        if self.forwardable(event):
            self.stats.add("skipped_dropped_by_sentry")

    def offer(self, event: Mapping[str, Any], dsn: Optional[str]) -> None:
        """Consider an event Sentry has sent; queue it for forwarding or count why not.

        On Sentry's transport thread once it sent the event (on the capturing thread, for a
        transport that cannot be watched), for every event: lookups, and a C call to wake the
        worker.
        """
        if self._pid != os.getpid():
            # Forked without Python's fork hooks (uWSGI, a fork() from C): as the hook would.
            self._after_fork()
        # payload.is_error and a first look for a user, inlined: this runs for every event.
        exception = event.get("exception")
        values = exception.get("values") if isinstance(exception, dict) else None
        if not (isinstance(values, list) and values) and not (
            self._messages and self._forwarded_type(event)
        ):
            self.stats.add("skipped_not_error")
            return
        destination = self._routes.get(dsn) or self.route_for(dsn)
        if not destination.enabled:
            self.stats.add(destination.skipped_as)
            return
        user = event.get("user")
        if (
            not isinstance(user, dict) or user.get("id") is None or payload.user_id(event) is None
        ) and not (self._anonymous and self._identified(event)):
            self.stats.add("skipped_no_user")
            if not self._hinted_no_user:
                self._hint_no_user()
            return
        pending = self._pending
        if len(pending) >= self.options.max_queue_size:
            self.stats.add("dropped_queue_full")
            return
        if self._keep_events:
            pending.append((event, destination))
        else:
            pending.append((payload.error_fields(event, self._extras), destination))
        if self._asleep:
            self._asleep = False
            wake = self._wake
            if wake is not None:
                wake.ring()
        elif self._worker is None:
            self._wake_worker()

    def _hint_no_user(self) -> None:
        """Say once, visibly, why errors are not forwarded and what to do."""
        self._hinted_no_user = True
        delivery.log.warning("sentry-segment: %s", hints.no_user_id())

    def flush(self, deadline: float) -> bool:
        """Hand every queued event to Segment and wait until Segment has answered for each
        (or given up on it), at most until deadline. True if it all happened in time."""
        if self._pid != os.getpid():
            self._after_fork()
        with self.urgent():
            settled = self._settled
            if settled is not None:
                with settled:
                    while self._unsettled():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        settled.wait(remaining)
            done = True
            for sink in list(self._sinks):
                done = sink.wait_until_sent(deadline) and done
        if done:
            self._end_idle_threads(deadline)
        return done

    def _end_idle_threads(self, deadline: float) -> None:
        """End the worker, Segment's consumers and the rate limit's timer, unless new events
        keep them busy.

        A server that forks from C (uWSGI's master) right after the application's import
        flushed hangs the child for good if one of these threads holds the GIL at that moment;
        a thread that has ended holds nothing. The next event starts them again.
        """
        worker, wake = self._worker, self._wake
        if worker is not None and wake is not None and worker is not threading.current_thread():
            self._end_when_idle = True
            wake.ring()
            threads.join_unless(worker, lambda: bool(self._pending) or self._busy, deadline)
        for sink in list(self._sinks):
            sink.end_idle_consumer(deadline)
        rate_limit = self._rate_limit
        if rate_limit is not None:
            rate_limit.end_timer(deadline)

    def settled(self) -> bool:
        """Whether every queued event was handed to Segment, which answered for each."""
        return not self._unsettled() and all(
            sink.queue.unfinished_tasks == 0 for sink in list(self._sinks)
        )

    def _unsettled(self) -> bool:
        return bool(self._pending or self._busy)

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """While the block runs (a flush), the worker forwards what is queued and Segment's
        consumers post it, without gathering more first."""
        self._hurry = True
        wake = self._wake
        if wake is not None:
            wake.ring()
        with contextlib.ExitStack() as sinks:
            for sink in list(self._sinks):
                sinks.enter_context(sink.urgent())
            yield

    def report_once(self, key: str, level: str, message: str, *args: Any) -> None:
        """Log through sentry-sdk's logger, once per integration for each key."""
        if key not in self._reported:
            self._reported.add(key)
            getattr(logger, level)(message, *args)

    def _wake_worker(self) -> None:
        start = wake = None
        with self._lock:
            if self._worker is None:
                if self._wake is None:
                    self._wake = threads.Bell()
                    self._settled = threading.Condition(threading.Lock())
                start = self._worker = threading.Thread(
                    target=self._work, name="sentry-segment", daemon=True
                )
            else:
                self._asleep = False
                wake = self._wake
        # Outside the lock: under gevent, starting a thread or setting an event may switch.
        if start is not None:
            start.start()
        elif wake is not None:
            wake.ring()

    def _work(self) -> None:
        with quiet_scopes(self.quiet):
            pending, wake = self._pending, self._wake
            assert wake is not None
            while True:
                if not pending:
                    if self._end_when_idle and self._retire():
                        return
                    woken = self._sleep(wake)
                    if not pending:
                        # Timed out, or woken by a flush with nothing left to do: a worker
                        # that runs now for nothing could hold the GIL when a server forks.
                        if not woken and self._retire():
                            return
                        continue
                    if not self._hurry:
                        wake.wait(LINGER_SECONDS)
                        wake.silence()
                self._busy = True
                try:
                    while pending:
                        batch = [pending.popleft() for _ in range(min(BATCH_SIZE, len(pending)))]
                        with capture_internal_exceptions():
                            self._forward(batch)
                finally:
                    self._hurry = self._busy = False
                    settled = self._settled
                    if settled is not None:
                        with settled:
                            settled.notify_all()

    def _sleep(self, wake: threads.Bell) -> bool:
        self._asleep = True
        # An event appended before the flag was set saw no sleeping worker: look again.
        woken = bool(self._pending) or wake.wait(threads.IDLE_SECONDS)
        self._asleep = False
        wake.silence()
        return woken

    def _retire(self) -> bool:
        """End this worker unless an event arrived meanwhile, which no other worker will see."""
        with self._lock:
            self._worker = None
            self._end_when_idle = False
        if not self._pending:
            return True
        with self._lock:
            if self._worker is None:
                self._worker = threading.current_thread()
                return False
        return True

    def _forward(self, batch: list[tuple[Any, Route]]) -> None:
        """Decide a whole batch per organization in one round trip, then queue the allowed."""
        by_organization: dict[str, list[tuple[Any, Route]]] = {}
        for item in batch:
            by_organization.setdefault(item[1].organization, []).append(item)
        for organization, waiting in by_organization.items():
            if self._keep_events:
                # The user's hook decides first, so that what it drops uses no budget.
                ready = [entry for entry in map(self._message, waiting) if entry is not None]
                ready = ready[: self._allow(organization, len(ready))]
            else:
                allowed = waiting[: self._allow(organization, len(waiting))]
                ready = [entry for entry in map(self._message, allowed) if entry is not None]
            by_sink: dict[delivery.Sink, list[dict[str, Any]]] = {}
            for sink, message in ready:
                by_sink.setdefault(sink, []).append(message)
            for sink, messages in by_sink.items():
                with capture_internal_exceptions():
                    sink.put_many(messages, self.stats, self.quiet.options["debug"])

    def _allow(self, organization: str, count: int) -> int:
        allowed = count
        with capture_internal_exceptions():
            if self._rate_limit is None:
                self._rate_limit = RateLimit(
                    self.options.rate_limit, self.stats, self.options.rate_limit_storage
                )
            allowed = self._rate_limit.allow_many(organization, count)
        if allowed < count:
            self.stats.add("rate_limited", count - allowed)
        return allowed

    def _message(self, item: tuple[Any, Route]) -> Optional[tuple[delivery.Sink, dict[str, Any]]]:
        """The Segment message for one queued event and its sink, or None (counted or logged)."""
        # A plain try, not capture_internal_exceptions(), per event: one bad event must not
        # stop the others, and this runs for every forwarded one.
        try:
            queued, destination = item
            event = copy.deepcopy(queued) if self._keep_events else None
            fields = queued if event is None else payload.error_fields(event, self._extras)
            track = payload.track_from_fields(fields, self.shape, destination.project)
            if not (track.user_id or track.anonymous_id):
                # Sentry's scrubbing filters these IDs: there is no one to attribute it to.
                self.stats.add("skipped_no_user")
                return None
            message = delivery.segment_message(track)
            if not message["messageId"]:
                # Sentry always sets event_id; without one Segment could not de-duplicate.
                message["messageId"] = uuid.uuid4().hex
            shaped = message if event is None else self._before_forward(message, event)
            return None if shaped is None else (self._sink(destination), shaped)
        except Exception:
            capture_internal_exception(sys.exc_info())
            return None

    def _before_forward(
        self, message: dict[str, Any], event: dict[str, Any]
    ) -> Optional[dict[str, Any]]:
        hook = self.options.before_forward
        assert hook is not None
        try:
            shaped = hook(message, event)
        except Exception:
            self.stats.add("before_forward_errors")
            if "before_forward" not in self._reported:
                self._reported.add("before_forward")
                logger.error(
                    "sentry-segment: before_forward raised; that event is not forwarded "
                    "(counted in before_forward_errors, logged once)",
                    exc_info=sys.exc_info(),
                )
            return None
        if shaped is None:
            self.stats.add("dropped_by_before_forward")
            return None
        problem = payload.message_problem(shaped)
        if problem is not None:
            self.stats.add("dropped_invalid_message")
            self.report_once(
                "invalid_message",
                "warning",
                "sentry-segment: before_forward returned a message Segment would refuse (%s); "
                "not forwarded (counted in dropped_invalid_message, logged once)",
                problem,
            )
            return None
        return dict(shaped)

    def _sink(self, destination: Route) -> delivery.Sink:
        assert destination.write_key is not None
        sink = delivery.sink_for(destination.write_key, destination.host, self.options)
        self._sinks.add(sink)
        return sink

    def _after_fork(self) -> None:
        self.stats.after_fork()
        self._reset()


_live_forwarders: weakref.WeakSet[Forwarder] = weakref.WeakSet()


def _reset_forwarders_after_fork() -> None:
    """fork() copies queues and locks but not the worker thread that owns them."""
    for forwarder in list(_live_forwarders):
        forwarder._after_fork()


os.register_at_fork(after_in_child=_reset_forwarders_after_fork)
