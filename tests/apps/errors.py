"""What the subprocess scripts of the tests capture: an error raised by a signed-in user."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.transport import Transport


def capture_error(user_id: Any) -> None:
    """Raise, catch and capture a ValueError on a fresh scope whose user is ``user_id``."""
    with sentry_sdk.new_scope() as scope:
        scope.set_user({"id": user_id})
        try:
            raise ValueError(user_id)
        except ValueError:
            sentry_sdk.capture_exception()


class DroppingTransport(Transport):
    """An application's own transport that drops what it is handed. It cannot be watched, so
    the integration forwards every error it is handed: what a test of the integration's own
    queues and limits needs, where Sentry's transport would drop a flood at its queue of 100."""

    def capture_envelope(self, envelope: Any) -> None:
        return None
