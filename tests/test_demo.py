"""The demo runs the main job on loopback and shows what arrived."""

from __future__ import annotations

import io
import json

from sentry_sdk.scope import Scope

from sentry_segment import demo


def test_demo_says_in_one_line_per_request_what_became_of_its_event() -> None:
    out = io.StringIO()
    try:
        stats = demo.run(out)
    finally:
        Scope.get_global_scope().set_client(None)
    text = out.getvalue()
    assert stats["forwarded"] == stats["delivered"] == 2
    assert stats["skipped_no_user"] == 1
    assert stats["skipped_not_error"] == 1
    requests = [line.strip() for line in text.splitlines() if line.startswith("  GET ")]
    assert len(requests) == 4
    assert requests[0].endswith("-> 500  forwarded: Segment has it")
    assert "user 7" in requests[1]
    assert requests[1].endswith("forwarded: Segment has it")
    assert requests[2].endswith("skipped: no user ID on the event (skipped_no_user)")
    assert requests[3].endswith("-> 200  skipped: a message, not an error (skipped_not_error)")
    assert "Sentry received 4 events; Segment received 2 messages" in text
    assert "forwarded=2 delivered=2 skipped_not_error=1 skipped_no_user=1" in text
    first = json.loads(text.split("as Segment received it:")[1])
    assert first["userId"] == "42"
    assert first["event"] == "Error Captured"
    assert len(text.splitlines()) < 50
    assert demo.DEMO_WRITE_KEY not in text
