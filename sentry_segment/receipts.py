"""Learns from sentry-sdk's transport which events to forward Sentry received and which it dropped.

sentry-sdk's ``capture_event`` returns an event ID once the event is queued for its transport,
which may still drop it: its queue is full, a rate limit (the organization's quota included)
holds, or the request fails or is refused. Each loss goes through the transport's
``on_dropped_event`` and ``record_lost_event``; a send that reports none was received. The
transport's instance is watched, never its class, so only the client that has this integration
is affected; a transport without these methods (a custom one) is not watched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Callable, Optional

from sentry_sdk.utils import capture_internal_exceptions

from . import payload

# Called with an event ID and whether Sentry received it, on the transport's thread.
Receipt = Callable[[str, bool], None]
# Whether an event is one the listener forwards, and so wants a receipt for.
Forwardable = Callable[[Mapping[str, Any]], bool]


class _Send:
    """One envelope with an error event under way: whether the transport reported its loss."""

    __slots__ = ("lost",)

    def __init__(self) -> None:
        self.lost = False


_sending: ContextVar[Optional[_Send]] = ContextVar("sentry_segment_sending", default=None)


class Watch:
    """The receipts of one transport, handed to whoever listens now."""

    def __init__(self, listener: Receipt, transport_name: str, forwardable: Forwardable) -> None:
        self.listener = listener
        self.forwardable = forwardable
        self.transport_name = transport_name
        # Whether the transport ever started sending an event: a transport whose internals
        # changed may never call what is watched, and then no receipt can be waited for.
        self.sends_started = 0

    def report(self, event_id: str, received: bool) -> None:
        with capture_internal_exceptions():
            self.listener(event_id, received)


def watch(
    transport: Any, listener: Receipt, forwardable: Forwardable = payload.is_error_with_user
) -> Optional[Watch]:
    """Report every forwardable event (by default an error with a user ID) that the transport
    sends or drops to listener; None when this transport cannot be watched."""
    existing = getattr(transport, "_sentry_segment_watch", None)
    if isinstance(existing, Watch):
        existing.listener = listener
        existing.forwardable = forwardable
        return existing
    methods = ("_send_envelope", "record_lost_event", "on_dropped_event")
    if not all(callable(getattr(type(transport), name, None)) for name in methods):
        return None
    receipts = Watch(listener, type(transport).__name__, forwardable)
    send = transport._send_envelope
    wrapper = _watch_async_send if inspect.iscoroutinefunction(send) else _watch_send
    transport._send_envelope = wrapper(send, receipts)
    transport.record_lost_event = _watch_losses(transport.record_lost_event, receipts)
    transport.on_dropped_event = _watch_drops(transport.on_dropped_event)
    transport._sentry_segment_watch = receipts
    return receipts


def forwardable_event_id(
    envelope: Any, forwardable: Forwardable = payload.is_error_with_user
) -> Optional[str]:
    """The ID of the envelope's event if it is one the forwarder may forward (by default an
    error with a user ID), else None."""
    for item in getattr(envelope, "items", ()):
        event_id = _forwardable_item_event_id(item, forwardable)
        if event_id is not None:
            return event_id
    return None


def _our_event_id(envelope: Any, receipts: Watch) -> Optional[str]:
    """forwardable_event_id, or None if that failed: Sentry's send goes on regardless."""
    with capture_internal_exceptions():
        return forwardable_event_id(envelope, receipts.forwardable)
    return None


def _forwardable_item_event_id(item: Any, forwardable: Forwardable) -> Optional[str]:
    if getattr(item, "type", None) != "event":
        return None
    event = item.get_event()
    if not isinstance(event, dict) or not forwardable(event):
        return None
    event_id = event.get("event_id")
    return event_id if isinstance(event_id, str) else None


def _watch_send(send: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(send)
    def sentry_segment_send_envelope(envelope: Any, *args: Any, **kwargs: Any) -> Any:
        event_id = _our_event_id(envelope, receipts)
        if event_id is None:
            return send(envelope, *args, **kwargs)
        receipts.sends_started += 1
        sending = _Send()
        token = _sending.set(sending)
        try:
            return send(envelope, *args, **kwargs)
        except BaseException:
            sending.lost = True
            raise
        finally:
            _sending.reset(token)
            receipts.report(event_id, not sending.lost)

    return sentry_segment_send_envelope


def _watch_async_send(send: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(send)
    async def sentry_segment_send_envelope(envelope: Any, *args: Any, **kwargs: Any) -> Any:
        event_id = _our_event_id(envelope, receipts)
        if event_id is None:
            return await send(envelope, *args, **kwargs)
        receipts.sends_started += 1
        sending = _Send()
        token = _sending.set(sending)
        try:
            return await send(envelope, *args, **kwargs)
        except BaseException:
            sending.lost = True
            raise
        finally:
            _sending.reset(token)
            receipts.report(event_id, not sending.lost)

    return sentry_segment_send_envelope


def _watch_losses(record_lost_event: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(record_lost_event)
    def sentry_segment_record_lost_event(*args: Any, **kwargs: Any) -> Any:
        with capture_internal_exceptions():
            item = kwargs.get("item", args[2] if len(args) > 2 else None)
            sending = _sending.get()
            if sending is not None:
                # An attachment over its quota is dropped alone: the event still goes.
                if item is None or getattr(item, "type", None) == "event":
                    sending.lost = True
            elif item is not None:
                # Lost before any send: the queue was full, or the event loop is gone.
                event_id = _forwardable_item_event_id(item, receipts.forwardable)
                if event_id is not None:
                    receipts.report(event_id, False)
        return record_lost_event(*args, **kwargs)

    return sentry_segment_record_lost_event


def _watch_drops(on_dropped_event: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(on_dropped_event)
    def sentry_segment_on_dropped_event(*args: Any, **kwargs: Any) -> Any:
        # Inside a send: a 429 (no loss is recorded for it), a rate limit, a refusal.
        sending = _sending.get()
        if sending is not None:
            sending.lost = True
        return on_dropped_event(*args, **kwargs)

    return sentry_segment_on_dropped_event
