"""Feature detection for the sentry-sdk releases we support (2.x and the 3.0 beta): no versions."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable, Optional

import wrapt
from sentry_sdk.integrations import logging as sentry_logging

FlushWrapper = Callable[[Callable[..., Any], Any, Any, Any], Any]

# Set while a wrapped Client.flush runs: the components it flushes are not flushed twice.
_in_flush: ContextVar[bool] = ContextVar("sentry_segment_in_flush", default=False)


def ignore_logger(name: str) -> None:
    """Keep a logger's records out of Sentry: events, breadcrumbs and Sentry Logs.

    From sentry-sdk 3, ignore_logger hides a logger from Sentry Logs only, and
    ignore_logger_for_events does what ignore_logger did before (events and breadcrumbs).
    """
    sentry_logging.ignore_logger(name)
    for_events: Optional[Callable[[str], None]] = getattr(
        sentry_logging, "ignore_logger_for_events", None
    )
    if for_events is not None:
        for_events(name)


def wrap_flush(client_class: type, wrapper: FlushWrapper) -> None:
    """Run ``wrapper`` (a wrapt wrapper) around every flush of a client, however it is reached.

    Client.flush is wrapped. Where the client has ``_flush_components`` (later 2.x and 3.x),
    that is wrapped too, for the paths that flush without Client.flush: close() and
    flush_async() with the async transport. There ``wrapper`` sees no timeout (it uses
    shutdown_timeout); inside Client.flush it passes straight through.
    """

    def flush(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        token = _in_flush.set(True)
        try:
            return wrapper(wrapped, instance, args, kwargs)
        finally:
            _in_flush.reset(token)

    def flush_components(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if _in_flush.get():
            return wrapped(*args, **kwargs)
        return wrapper(lambda: wrapped(*args, **kwargs), instance, (), {})

    wrapt.wrap_function_wrapper(client_class, "flush", flush)
    if hasattr(client_class, "_flush_components"):
        wrapt.wrap_function_wrapper(client_class, "_flush_components", flush_components)
