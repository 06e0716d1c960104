"""A loopback Segment collector in a process of its own, for the injected parity pass.

parity_inject starts it with the harness venv's Python. It serves
``sentry_segment.testing.SegmentCollector`` on 127.0.0.1 and prints one JSON line with its
host. Every ``stats`` line on stdin is answered with one JSON line of what arrived; it stops
when stdin closes, or after ``--max-seconds`` whatever happens.

It runs apart from the tests so that its server thread and werkzeug's request log are not in
the process under test: Segment's API is another machine in production, and sentry-sdk's own
tests count threads and capture log records. What stays in that process is the integration,
its worker thread and Segment's client, which is what the pass is about.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from typing import Any

from sentry_segment.testing import SegmentCollector


def stats(collector: SegmentCollector) -> dict[str, Any]:
    """What the collector received so far, as plain data."""
    batches = collector.batches()
    traced = [
        b for b in batches if any(name.lower() in ("sentry-trace", "baggage") for name in b.headers)
    ]
    return {
        "batches": len(batches),
        "messages": len(collector.messages()),
        "tracked": len(collector.tracked()),
        "user_ids": sorted({str(m.get("userId")) for m in collector.tracked()})[:50],
        "write_keys": sorted({b.write_key or "" for b in batches}),
        "batches_with_sentry_trace_or_baggage": len(traced),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    # werkzeug logs every request at INFO; nobody reads it here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Bounded whatever the parent does: exit after max-seconds even if stdin never closes.
    watchdog = threading.Timer(args.max_seconds, os._exit, args=(3,))
    watchdog.daemon = True
    watchdog.start()
    with SegmentCollector() as collector:
        print(json.dumps({"host": collector.host}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(stats(collector)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
