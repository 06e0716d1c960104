"""The sentry-sdk integration: hooks that hand every error event Sentry sends to the forwarder."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Callable, Optional

import wrapt
from sentry_sdk.client import _Client
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.utils import capture_internal_exception, capture_internal_exceptions

from . import config, payload
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
        ignore_logger(SEGMENT_LOGGER)
        wrapt.wrap_function_wrapper(_Client, "capture_event", _capture_event)
        wrapt.wrap_function_wrapper(_Client, "flush", _flush)


class _SentEvent:
    """What before_send returned for the capture under way on this thread."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Optional[Mapping[str, Any]] = None


_sent_event: ContextVar[Optional[_SentEvent]] = ContextVar(
    "sentry_segment_sent_event", default=None
)
_chain_lock = threading.Lock()


def _unchanged(event: Any, _hint: Any) -> Any:
    return event


def _record_sent_event(wrapped: Callable[..., Any], _instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    slot = _sent_event.get()
    if slot is not None and isinstance(result, dict):
        slot.event = result
    return result


class SentEventRecorder(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """before_send chained around the user's own: it remembers what the user's hook returned."""

    def __init__(self, user_before_send: Optional[Callable[..., Any]]) -> None:
        super().__init__(user_before_send or _unchanged, _record_sent_event)


def _chain_before_send(options: MutableMapping[str, Any]) -> None:
    if isinstance(options.get("before_send"), SentEventRecorder):
        return
    with _chain_lock:
        user_before_send = options.get("before_send")
        if not isinstance(user_before_send, SentEventRecorder):
            options["before_send"] = SentEventRecorder(user_before_send)


def _capture_event(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    integration = instance.get_integration(SegmentIntegration)
    if integration is None:
        return wrapped(*args, **kwargs)
    options = instance.options
    if not isinstance(options.get("before_send"), SentEventRecorder):
        with capture_internal_exceptions():
            _chain_before_send(options)
    slot = _SentEvent()
    token = _sent_event.set(slot)
    try:
        event_id = wrapped(*args, **kwargs)
    finally:
        _sent_event.reset(token)
    # A plain try (not capture_internal_exceptions()) keeps this path lean for every capture.
    try:
        forwarder: Forwarder = integration._forwarder
        if event_id is None:
            event = kwargs.get("event", args[0] if args else None)
            if isinstance(event, dict) and payload.is_error(event):
                forwarder.stats.add("skipped_not_sent")
        elif slot.event is not None:
            forwarder.offer(slot.event, options.get("dsn"))
    except Exception:
        capture_internal_exception(sys.exc_info())
    return event_id


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
