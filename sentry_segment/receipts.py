"""Hands the forwarder each event Sentry received, as sentry-sdk's transport reports it sent.

sentry-sdk's ``capture_event`` returns an event ID once the event is queued for its transport,
which may still drop it: its queue is full, a rate limit (the organization's quota included)
holds, or the request fails or is refused. Each loss goes through the transport's
``on_dropped_event`` and ``record_lost_event``; a send that reports none was received. So the
forwarder is handed an event once its send succeeded, on the transport's own thread: the
capturing thread does nothing for it. A transport without these methods (a custom one) hands
over events as sentry-sdk gives them to it. Only the watched client's transport instance is
changed, never a class.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Callable, Optional

from sentry_sdk.utils import capture_internal_exceptions

# Called with an event sentry-sdk sent (or, for a transport that cannot be watched, handed to
# its transport), or dropped.
Listener = Callable[[dict[str, Any]], None]


class _Send:
    """One envelope with an event under way: whether the transport reported its loss."""

    __slots__ = ("lost",)

    def __init__(self) -> None:
        self.lost = False


_sending: ContextVar[Optional[_Send]] = ContextVar("sentry_segment_sending", default=None)


class Watch:
    """What one transport reports, handed to whoever listens now."""

    def __init__(self, sent: Listener, lost: Listener) -> None:
        self.sent = sent
        self.lost = lost

    def report(self, event: dict[str, Any], received: bool) -> None:
        with capture_internal_exceptions():
            (self.sent if received else self.lost)(event)


# What a transport must have for its sends to be watched (HttpTransport and its async twin).
WATCHED = ("_send_envelope", "record_lost_event", "on_dropped_event")


def watch(transport: Any, sent: Listener, lost: Listener) -> bool:
    """Hand every event the transport sends to sent, each it drops to lost; True if its sends
    are watched, False if events go to sent as they are handed to it."""
    existing = getattr(transport, "_sentry_segment_watch", None)
    if isinstance(existing, Watch):
        existing.sent, existing.lost = sent, lost
        return "_send_envelope" in vars(transport)
    receipts = Watch(sent, lost)
    transport._sentry_segment_watch = receipts
    if not all(callable(getattr(type(transport), name, None)) for name in WATCHED):
        transport.capture_envelope = _hand_over(transport.capture_envelope, receipts)
        return False
    send = transport._send_envelope
    wrapper = _watch_async_send if inspect.iscoroutinefunction(send) else _watch_send
    transport._send_envelope = wrapper(send, receipts)
    transport.record_lost_event = _watch_losses(transport.record_lost_event, receipts)
    transport.on_dropped_event = _watch_drops(transport.on_dropped_event)
    return True


def event_of(envelope: Any) -> Optional[dict[str, Any]]:
    """The envelope's event (an error or a message), if it carries one."""
    for item in getattr(envelope, "items", ()):
        event = _item_event(item)
        if event is not None:
            return event
    return None


def _item_event(item: Any) -> Optional[dict[str, Any]]:
    if getattr(item, "type", None) != "event":
        return None
    event = item.get_event()
    return event if isinstance(event, dict) else None


def _safe_event_of(envelope: Any) -> Optional[dict[str, Any]]:
    """event_of, or None if that failed: Sentry's send goes on regardless."""
    with capture_internal_exceptions():
        return event_of(envelope)
    return None


def _hand_over(capture_envelope: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(capture_envelope)
    def sentry_segment_capture_envelope(envelope: Any, *args: Any, **kwargs: Any) -> Any:
        result = capture_envelope(envelope, *args, **kwargs)
        event = _safe_event_of(envelope)
        if event is not None:
            receipts.report(event, True)
        return result

    return sentry_segment_capture_envelope


@contextlib.contextmanager
def _reporting(event: dict[str, Any], receipts: Watch) -> Iterator[None]:
    """Around one send of an envelope with this event: report it received, or lost if the
    transport reported a loss (or the send raised)."""
    sending = _Send()
    token = _sending.set(sending)
    try:
        yield
    except BaseException:
        sending.lost = True
        raise
    finally:
        _sending.reset(token)
        receipts.report(event, not sending.lost)


def _watch_send(send: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(send)
    def sentry_segment_send_envelope(envelope: Any, *args: Any, **kwargs: Any) -> Any:
        event = _safe_event_of(envelope)
        if event is None:
            return send(envelope, *args, **kwargs)
        with _reporting(event, receipts):
            return send(envelope, *args, **kwargs)

    return sentry_segment_send_envelope


def _watch_async_send(send: Callable[..., Any], receipts: Watch) -> Callable[..., Any]:
    @functools.wraps(send)
    async def sentry_segment_send_envelope(envelope: Any, *args: Any, **kwargs: Any) -> Any:
        event = _safe_event_of(envelope)
        if event is None:
            return await send(envelope, *args, **kwargs)
        with _reporting(event, receipts):
            return await send(envelope, *args, **kwargs)

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
                event = _item_event(item)
                if event is not None:
                    receipts.report(event, False)
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
