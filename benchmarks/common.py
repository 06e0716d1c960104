"""Helpers shared by the benchmarks: a Segment collector in its own process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SERVE = """
import logging, sys
from sentry_segment.testing import SegmentCollector
logging.getLogger("werkzeug").setLevel(logging.WARNING)
collector = SegmentCollector()
collector.start()
print(collector.host, flush=True)
sys.stdin.read()
collector.stop()
"""


@contextmanager
def external_collector() -> Iterator[str]:
    """A loopback Segment collector in another process, so its CPU is not counted here."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        process.wait(timeout=10)
