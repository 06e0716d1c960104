"""The demo runs the main job on loopback and shows what arrived."""

from __future__ import annotations

import io
import json

from sentry_sdk.scope import Scope

from sentry_segment import demo


def test_demo_forwards_the_signed_in_users_errors_only() -> None:
    out = io.StringIO()
    try:
        stats = demo.run(out)
    finally:
        Scope.get_global_scope().set_client(None)
    text = out.getvalue()
    assert stats["forwarded"] == stats["delivered"] == 2
    assert stats["skipped_no_user"] == 1
    assert stats["skipped_not_error"] == 1
    segment_part = text.split("What Segment received")[1].split("integration.stats()")[0]
    assert segment_part.count('"event": "Error Captured"') == 2
    assert '"userId": "42"' in segment_part
    assert '"userId": "7"' in segment_part
    assert json.loads(text.split("integration.stats():")[1]) == stats
    assert demo.DEMO_WRITE_KEY not in text
