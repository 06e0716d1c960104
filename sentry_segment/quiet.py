"""The Sentry scopes the integration's own threads run in: sentry-sdk records nothing there.

sentry-sdk's integrations look up the current client and do nothing where it has none of
them: its stdlib integration adds no trace headers, spans or breadcrumbs to Segment's posts,
its Redis integration leaves the rate limit's calls alone, its logging integration turns no
log line of these threads into a breadcrumb or an event. The scopes hold a client that is
active (so that it shadows the application's) and has no integrations, no transport and no
DSN: it sends nothing. It keeps the application's `debug` option, so sentry-sdk's logger
still prints the integration's own diagnostics with ``debug=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sentry_sdk.client import NonRecordingClient
from sentry_sdk.consts import DEFAULT_OPTIONS
from sentry_sdk.scope import Scope, ScopeType, use_isolation_scope, use_scope


class QuietClient(NonRecordingClient):
    """Records nothing; active, so that sentry-sdk finds it before the application's client."""

    def __init__(self) -> None:
        super().__init__(options={**DEFAULT_OPTIONS, "debug": False})

    def is_active(self) -> bool:
        return True

    def follow_debug(self, debug: bool) -> None:
        """Print sentry-sdk's log lines from these threads when the application's client does."""
        self.options["debug"] = debug


@contextlib.contextmanager
def quiet_scopes(client: QuietClient) -> Iterator[None]:
    """Run the block, on this thread, where sentry-sdk records nothing."""
    isolation, current = Scope(ty=ScopeType.ISOLATION), Scope(ty=ScopeType.CURRENT)
    isolation.set_client(client)
    current.set_client(client)
    with use_isolation_scope(isolation), use_scope(current):
        yield
