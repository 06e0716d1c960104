"""A flood of errors while Segment is unreachable: bounded memory, counted drops, no blocking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .support import free_port, script_environment

FLOOD_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import DroppingTransport, capture_error as capture

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    THREADS, PER_THREAD = 8, int(sys.argv[1]) // 8
    keep = (lambda message, event: message) if os.environ.get("TEST_BEFORE_FORWARD") else None
    integration = SegmentIntegration(
        rate_limit="1000000/second", max_queue_size=2000, before_forward=keep
    )

    sentry_sdk.init(
        dsn=os.environ["TEST_DSN"], transport=DroppingTransport, integrations=[integration]
    )

    for number in range(3000):
        capture(number)
    warm = rss_mb()
    slowest = [0.0] * THREADS

    def flood(index):
        for number in range(PER_THREAD):
            started = time.perf_counter()
            capture(number)
            slowest[index] = max(slowest[index], time.perf_counter() - started)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    integration.flush(timeout=3)  # our queue drains into Segment's, which stays full
    print(json.dumps({
        "warm_mb": warm, "end_mb": rss_mb(), "stats": integration.stats(),
        "slowest_capture_s": max(slowest), "captured": THREADS * PER_THREAD + 3000,
    }))
    sys.stdout.flush()
    os._exit(0)
    """
)


# The suite's 120 s timeout failed the 103,000 captures whenever other work shared the 2 cores
# (tests-3.9, 3.10 and 3.11 of one make matrix run, and two lowest runs, here).
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("errors", "before_forward"),
    [(100_000, ""), (40_000, "1")],
    ids=["fields queued", "whole events queued for before_forward"],
)
def test_a_flood_with_segment_unreachable_stays_bounded_and_counted(
    errors: int, before_forward: str
) -> None:
    environ = script_environment(
        f"http://127.0.0.1:{free_port()}",
        f"http://public@127.0.0.1:{free_port()}/1",
        TEST_BEFORE_FORWARD=before_forward,
    )
    finished = subprocess.run(
        [sys.executable, "-c", FLOOD_SCRIPT, str(errors)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    stats = report["stats"]
    assert report["captured"] == errors + 3000
    # Every captured error is accounted for: forwarded to the client, or dropped and counted;
    # while delivery fails, the client drops its oldest to keep the newest.
    assert stats["forwarded"] + stats["dropped_queue_full"] == report["captured"]
    assert stats["dropped_queue_full"] + stats["dropped_oldest"] > errors // 2
    assert stats["delivered"] == 0
    # Two queues of 2,000 small items, not 100,000 events, are all the growth allowed.
    assert report["end_mb"] - report["warm_mb"] < 40
    # No line per event: Segment's client may log per failed batch, never per message.
    assert len(finished.stderr.splitlines()) < 200
