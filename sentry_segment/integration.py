"""The sentry-sdk integration: hooks that hand every error event Sentry sends to the forwarder,
and that make Sentry's flush and close wait for Segment too."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import sentry_sdk
import wrapt
from sentry_sdk.client import _Client
from sentry_sdk.integrations import Integration
from sentry_sdk.scope import add_global_event_processor
from sentry_sdk.utils import capture_internal_exceptions

from . import _compat, config, contract, payload
from .delivery import LOGGER_NAME, SEGMENT_LOGGER
from .forwarder import Forwarder

# How often flush_async() looks whether Segment has answered, without blocking the loop.
ASYNC_FLUSH_POLL_SECONDS = 0.002


class SegmentIntegration(Integration):
    """Forward every error event with a user ID that Sentry sends to Segment as a track call.

    Every option falls back to its SENTRY_SEGMENT_* environment variable; see the README.
    Without a write key anywhere it forwards nothing, as sentry-sdk sends nothing without a
    DSN; an invalid option raises ConfigurationError here, naming it and its variable.
    """

    identifier = "segment"

    def __init__(
        self,
        *,
        write_key: Optional[str] = None,
        host: Optional[str] = None,
        region: Optional[str] = None,
        rate_limit: Optional[str] = None,
        rate_limit_storage: Optional[str] = None,
        projects: Optional[Union[str, Mapping[str, Mapping[str, Any]]]] = None,
        enabled: Optional[bool] = None,
        event_name: Optional[str] = None,
        include: Optional[Union[str, list[str], tuple[str, ...]]] = None,
        sentry_org: Optional[str] = None,
        sentry_web_url: Optional[str] = None,
        before_forward: Optional[
            Callable[[dict[str, Any], dict[str, Any]], Optional[dict[str, Any]]]
        ] = None,
        max_queue_size: Optional[int] = None,
        timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
        scrub: Optional[bool] = None,
        sensitive_fields: Optional[Union[str, list[str], tuple[str, ...]]] = None,
        ip: Optional[str] = None,
        anonymous_id: Optional[Union[str, list[str], tuple[str, ...]]] = None,
        event_types: Optional[Union[str, list[str], tuple[str, ...]]] = None,
        profile_url: Optional[str] = None,
    ) -> None:
        given = dict(locals())
        del given["self"]
        self._start(config.resolve(**given))

    @classmethod
    def from_options(cls, options: config.Options) -> SegmentIntegration:
        """An integration with options already resolved (what pickling rebuilds from)."""
        integration = cls.__new__(cls)
        integration._start(options)
        return integration

    def _start(self, options: config.Options) -> None:
        self.options = options
        self._forwarder = Forwarder(options)
        self._unknown_variables = config.unknown_variables()
        self._client: Any = None
        if options.profile_url is not None:
            _add_profile_urls_from_now_on()

    def __reduce__(self) -> tuple[Any, ...]:
        # A client is pickled with its options, integrations included; locks and threads are
        # not picklable, so the copy is rebuilt from the resolved options.
        return (SegmentIntegration.from_options, (self.options,))

    def __repr__(self) -> str:
        described = self.options.describe()
        return (
            f"SegmentIntegration(write_key={described['write_key']!r}, host={self.options.host!r})"
        )

    def stats(self) -> dict[str, int]:
        """Counters since this integration was created (see the README for each one)."""
        return self._forwarder.stats.snapshot()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait at most timeout seconds for the errors captured so far to reach Segment; True
        if all did. Sentry's transport is flushed first: an error is forwarded once Sentry
        received it."""
        deadline = time.monotonic() + timeout
        transport = getattr(self._client, "transport", None)
        if transport is not None:
            with capture_internal_exceptions(), self._forwarder.urgent():
                # The transport's own flush, not the client's (which would wait for Segment
                # too, and report nothing); the async transport's returns without waiting.
                transport.flush(timeout)
        return self._forwarder.flush(deadline)

    @staticmethod
    def setup_once() -> None:
        missing = contract.gaps()
        if missing:
            # Inert rather than DidNotEnable, which sentry-sdk re-raises into init() for an
            # integration the application names.
            contract.report(missing)
            return
        # Segment's client logs failed uploads at ERROR: as Sentry events they would loop back.
        # Neither may the integration's own lines (an outage, the missing user ID hint).
        for name in (SEGMENT_LOGGER, LOGGER_NAME):
            _compat.ignore_logger(name)
        # This runs on every capture: a plain function costs it ~20 ns where wrapt's per-call
        # bound wrapper costs ~700 ns (see the benchmarks). Flushing is rare.
        _Client.capture_event = _forward_sent_events(_Client.capture_event)  # type: ignore[method-assign]
        for name, wrapper in _FLUSHING.items():
            if hasattr(_Client, name):
                wrapt.wrap_function_wrapper(_Client, name, wrapper)

    def _bind(self, client: Any) -> None:
        """Note the client now using this integration; say once what it should know."""
        self._client = client
        forwarder = self._forwarder
        forwarder.watch(getattr(client, "transport", None), client.options.get("dsn"))
        forwarder.quiet.follow_debug(bool(client.options.get("debug")))
        for line in self._unknown_variables:
            forwarder.report_once(line, "warning", "sentry-segment: %s", line)
        if _uwsgi_without_threads():
            forwarder.report_once(
                "uwsgi",
                "warning",
                "sentry-segment: uWSGI runs Python threads here only while a request runs, so "
                "errors reach Segment during later requests and at flush or exit; run uWSGI "
                "with --enable-threads",
            )
        if not self.options.has_write_key:
            forwarder.report_once(
                "no_write_key",
                "warning",
                f"sentry-segment: no write key ({config.ENV['write_key']}), so nothing is "
                "forwarded (counted in skipped_no_write_key)",
            )

    def _skipped_not_sent(self, client: Any) -> None:
        self._forwarder.stats.add("skipped_not_sent")
        if getattr(client, "transport", None) is None:
            self._forwarder.report_once(
                "no_dsn",
                "debug",
                "sentry-segment: Sentry has no DSN here and sends nothing, so nothing is "
                "forwarded (counted in skipped_not_sent); set SENTRY_DSN or init(dsn=...)",
            )


@functools.cache
def _add_profile_urls_from_now_on() -> None:
    """Register the event processor that links Sentry's events to Segment's profiles, once per
    process and only once an integration has profile_url: without it, events never meet it."""
    add_global_event_processor(_add_profile_url)


def _add_profile_url(event: Any, hint: Any) -> Any:
    """Sentry's event processor: a ``segment`` context with the profile URL, for an event with
    a user or anonymous ID, when the client's integration has profile_url. It runs before
    before_send, which sees (and may remove) it."""
    integration = sentry_sdk.get_client().get_integration(SegmentIntegration)
    if integration is None:
        return event
    options = integration.options
    if options.profile_url is not None and isinstance(event, dict):
        context = payload.profile_context(event, options.profile_url, options.anonymous_id)
        if context is not None:
            contexts = event.get("contexts")
            if not isinstance(contexts, dict):
                contexts = event["contexts"] = {}
            contexts["segment"] = context
    return event


def _uwsgi_without_threads() -> bool:
    """A uWSGI worker that lets Python threads run only during requests (older uWSGI without
    --enable-threads; uwsgi.opt does not tell, uWSGI 2.0.22+ runs threads without the flag)."""
    try:
        import uwsgi
    except ImportError:
        return False
    return getattr(uwsgi, "has_threads", 1) == 0


def _forward_sent_events(capture_event: Callable[..., Any]) -> Callable[..., Any]:
    # Any arguments, passed on as given: a release that adds or renames one keeps working.
    def sentry_segment_capture_event(self: _Client, *args: Any, **kwargs: Any) -> Any:
        # Hidden from the stack traces Sentry attaches (attach_stacktrace): this frame's locals
        # hold the client and its options.
        __tracebackhide__ = True
        integration = self.get_integration(SegmentIntegration)
        if integration is None:
            return capture_event(self, *args, **kwargs)
        if integration._client is not self:
            # Before the event reaches the transport, which hands it over from now on.
            with capture_internal_exceptions():
                integration._bind(self)
        event_id = capture_event(self, *args, **kwargs)
        if event_id is None:
            # An error Sentry did not send: before_send, sampling, ignore_errors, no DSN.
            with capture_internal_exceptions():
                event = kwargs.get("event", args[0] if args else None)
                if isinstance(event, dict) and payload.is_error(event):
                    integration._skipped_not_sent(self)
        return event_id

    return functools.wraps(capture_event)(sentry_segment_capture_event)


def _deadline(client: Any, args: Any, kwargs: Any) -> float:
    timeout = kwargs.get("timeout", args[0] if args else None)
    if timeout is None:
        timeout = client.options.get("shutdown_timeout", 2.0)
    return time.monotonic() + float(timeout)


def _forwarder_of(client: Any) -> Optional[Forwarder]:
    """The forwarder of the client's SegmentIntegration, bound to the client; None without."""
    integration = client.get_integration(SegmentIntegration)
    if integration is None:
        return None
    with capture_internal_exceptions():
        if integration._client is not client:
            integration._bind(client)
    return integration._forwarder  # type: ignore[no-any-return]


def _flush(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    forwarder = _forwarder_of(instance)
    if forwarder is None:
        return wrapped(*args, **kwargs)
    deadline = _deadline(instance, args, kwargs)
    # Segment's part starts now, beside Sentry's own, not after it.
    with forwarder.urgent():
        result = wrapped(*args, **kwargs)
        with capture_internal_exceptions():
            forwarder.flush(deadline)
    return result


def _flush_async(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    forwarder = _forwarder_of(instance)
    if forwarder is None:
        return wrapped(*args, **kwargs)
    return _after_async(wrapped(*args, **kwargs), forwarder, _deadline(instance, args, kwargs))


async def _after_async(sentry_part: Any, forwarder: Forwarder, deadline: float) -> Any:
    with forwarder.urgent():
        result = await sentry_part
        with capture_internal_exceptions():
            while not forwarder.settled() and time.monotonic() < deadline:
                await asyncio.sleep(ASYNC_FLUSH_POLL_SECONDS)
    return result


# close() flushes through flush() with a synchronous transport; with sentry-sdk's async
# transport it does not, and close_async() flushes through flush_async(): each waits for
# Segment itself, and does nothing more where the flush it ran already waited.
_FLUSHING = {
    "flush": _flush,
    "close": _flush,
    "flush_async": _flush_async,
    "close_async": _flush_async,
}


__all__ = ["SegmentIntegration"]
