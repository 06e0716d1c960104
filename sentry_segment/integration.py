"""The sentry-sdk integration: hooks that hand every error event Sentry sends to the forwarder."""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Callable, Optional

from sentry_sdk.client import _Client
from sentry_sdk.integrations import Integration
from sentry_sdk.utils import capture_internal_exception, capture_internal_exceptions

from . import _compat, config, payload
from .delivery import SEGMENT_LOGGER
from .forwarder import Forwarder


class SegmentIntegration(Integration):
    """Forward every error event with a user ID that Sentry sends to Segment as a track call.

    Every option falls back to its SENTRY_SEGMENT_* environment variable; see the README.
    """

    identifier = "segment"

    def __init__(
        self,
        *,
        write_key: Optional[str] = None,
        host: Optional[str] = None,
        region: Optional[str] = None,
        rate_limit: Optional[str] = None,
        projects: Optional[Mapping[str, Mapping[str, Any]]] = None,
        enabled: Optional[bool] = None,
        event_name: Optional[str] = None,
        max_queue_size: Optional[int] = None,
        timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
        rate_limit_storage: Optional[str] = None,
    ) -> None:
        self.options = config.resolve(
            write_key=write_key,
            host=host,
            region=region,
            rate_limit=rate_limit,
            projects=projects,
            enabled=enabled,
            event_name=event_name,
            max_queue_size=max_queue_size,
            timeout=timeout,
            max_retries=max_retries,
            rate_limit_storage=rate_limit_storage,
        )
        self._forwarder = Forwarder(self.options)

    def __repr__(self) -> str:
        described = self.options.describe()
        return (
            f"SegmentIntegration(write_key={described['write_key']!r}, host={self.options.host!r})"
        )

    def stats(self) -> dict[str, int]:
        """Counters since this integration was created (see the README for each one)."""
        return self._forwarder.stats.snapshot()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait at most timeout seconds for forwarded events to reach Segment; True if all did."""
        return self._forwarder.flush(time.monotonic() + timeout)

    @staticmethod
    def setup_once() -> None:
        # Segment's client logs failed uploads at ERROR: as Sentry events they would loop back.
        _compat.ignore_logger(SEGMENT_LOGGER)
        # capture_event runs on every capture: a plain function costs it ~20 ns where wrapt's
        # per-call bound wrapper costs ~700 ns (see the README's benchmarks). flush is rare.
        capture_event = _forward_sent_events(_Client.capture_event)
        _Client.capture_event = capture_event  # type: ignore[method-assign]
        _compat.wrap_flush(_Client, _flush)


# The capture under way on this thread: before_send stores what Sentry is about to send in
# the one-item list; the capture_event wrapper reads it once Sentry has sent it.
_sent_event: ContextVar[Optional[list[Any]]] = ContextVar("sentry_segment_sent_event", default=None)
_chain_lock = threading.Lock()


class SentEventRecorder:
    """before_send chained around the user's own: it remembers what the user's hook returned."""

    __slots__ = ("__wrapped__",)

    def __init__(self, user_before_send: Optional[Callable[..., Any]]) -> None:
        self.__wrapped__ = user_before_send

    def __repr__(self) -> str:
        return f"SentEventRecorder({self.__wrapped__!r})"

    def __call__(self, event: Any, hint: Any) -> Any:
        user_before_send = self.__wrapped__
        if user_before_send is not None:
            event = user_before_send(event, hint)
        sent = _sent_event.get()
        if sent is not None:
            sent[0] = event
        return event


def _chain_before_send(options: MutableMapping[str, Any]) -> None:
    with _chain_lock:
        user_before_send = options.get("before_send")
        if type(user_before_send) is not SentEventRecorder:
            options["before_send"] = SentEventRecorder(user_before_send)


def _forward_sent_events(capture_event: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(capture_event)
    def sentry_segment_capture_event(
        self: _Client, event: Any, hint: Any = None, scope: Any = None
    ) -> Any:
        __tracebackhide__ = True  # keeps this frame out of stacktraces attach_stacktrace adds
        integration = self.get_integration(SegmentIntegration)
        if integration is None:
            return capture_event(self, event, hint, scope)
        options = self.options
        if type(options.get("before_send")) is not SentEventRecorder:
            with capture_internal_exceptions():
                _chain_before_send(options)
        sent: list[Any] = [None]
        token = _sent_event.set(sent)
        try:
            event_id = capture_event(self, event, hint, scope)
        finally:
            _sent_event.reset(token)
        # A plain try (not capture_internal_exceptions()) keeps this path lean for every capture.
        try:
            if event_id is not None:
                if isinstance(sent[0], dict):
                    integration._forwarder.offer(sent[0], options.get("dsn"))
            elif isinstance(event, dict) and payload.is_error(event):
                integration._forwarder.stats.add("skipped_not_sent")
        except Exception:
            capture_internal_exception(sys.exc_info())
        return event_id

    return sentry_segment_capture_event


def _flush(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    integration = instance.get_integration(SegmentIntegration)
    if integration is None:
        return wrapped(*args, **kwargs)
    timeout = kwargs.get("timeout", args[0] if args else None)
    if timeout is None:
        timeout = instance.options.get("shutdown_timeout", 2.0)
    deadline = time.monotonic() + float(timeout)
    result = wrapped(*args, **kwargs)
    with capture_internal_exceptions():
        integration._forwarder.flush(deadline)
    return result


__all__ = ["SegmentIntegration", "SentEventRecorder"]
