"""Captures from many threads while another thread re-runs sentry_sdk.init."""

from __future__ import annotations

import threading
import time
from collections import Counter

import sentry_sdk
from sentry_sdk.scope import Scope

from sentry_segment import SegmentIntegration
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .conftest import raise_and_capture

KEYS = {"A": "wk_ReleaseA_000000000000", "B": "wk_ReleaseB_111111111111"}


def test_no_event_is_lost_duplicated_or_misrouted_across_reinits(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    integrations: list[SegmentIntegration] = []

    def init(name: str) -> None:
        integration = SegmentIntegration(write_key=KEYS[name], host=segment.host, rate_limit="off")
        integrations.append(integration)
        sentry_sdk.init(dsn=sentry.dsn(), integrations=[integration], release=name)

    init("A")
    sent: list[str] = []
    reinits_done = threading.Event()

    def capture(thread: int) -> None:
        number = 0
        while not reinits_done.is_set() or number < 50:
            event_id = raise_and_capture(user={"id": f"{thread}-{number}"})
            assert event_id is not None
            sent.append(event_id)
            number += 1
            time.sleep(0.001)

    def reinit() -> None:
        for turn in range(12):
            init("AB"[turn % 2])
            time.sleep(0.01)
        reinits_done.set()

    capturers = [threading.Thread(target=capture, args=(n,)) for n in range(8)]
    reiniter = threading.Thread(target=reinit)
    for thread in [*capturers, reiniter]:
        thread.start()
    reiniter.join()
    for thread in capturers:
        thread.join()
    try:
        for integration in integrations:
            assert integration.flush(timeout=20)
    finally:
        sentry_sdk.get_client().close(timeout=2)
        Scope.get_global_scope().set_client(None)

    assert len(integrations) == 13
    assert len(sent) >= 400
    # Sentry's transports drop some of this flood (their queues overflow): Segment must get
    # exactly what Sentry received, and count the rest.
    received = {str(event["event_id"]) for event in sentry.events()}
    assert received <= set(sent)
    delivered = Counter(m["messageId"] for m in segment.messages())
    assert sorted(delivered) == sorted(received)
    dropped = sum(i.stats()["skipped_dropped_by_sentry"] for i in integrations)
    assert dropped == len(sent) - len(received)
    assert set(delivered.values()) == {1}
    for batch in segment.batches():
        for message in batch.messages:
            assert batch.write_key == KEYS[message["properties"]["release"]]
    assert sum(i.stats()["delivered"] for i in integrations) == len(received)
