"""What the subprocess scripts of the tests capture: an error raised by a signed-in user."""

from __future__ import annotations

from typing import Any

import sentry_sdk


def capture_error(user_id: Any) -> None:
    """Raise, catch and capture a ValueError on a fresh scope whose user is ``user_id``."""
    with sentry_sdk.new_scope() as scope:
        scope.set_user({"id": user_id})
        try:
            raise ValueError(user_id)
        except ValueError:
            sentry_sdk.capture_exception()
