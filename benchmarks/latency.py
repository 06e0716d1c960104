"""Median capture_exception latency with and without SegmentIntegration, interleaved.

Two Sentry clients live in one process, each with a transport that drops envelopes (so the
numbers are the capturing thread's own cost, not Sentry's network). Captures alternate between
them, in alternating order, so both see the same machine noise and the same background work of
the integration's worker and Segment's consumer, which post to a loopback collector.

    .venv/bin/python benchmarks/latency.py [--captures 3000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any, Callable, Optional

import sentry_sdk
from sentry_sdk.transport import Transport

from sentry_segment import SegmentIntegration
from sentry_segment.testing import SegmentCollector

WRITE_KEY = "bench_write_key_0123456789"
DSN = "http://public@127.0.0.1:9/1"


class DroppingTransport(Transport):
    def capture_envelope(self, envelope: Any) -> None:
        return None

    def flush(self, timeout: float, callback: Optional[Any] = None) -> None:
        return None


def make_client(integrations: list[Any]) -> sentry_sdk.Client:
    return sentry_sdk.Client(
        dsn=DSN, transport=DroppingTransport, integrations=integrations, release="bench"
    )


def capture_once(client: sentry_sdk.Client, user: Optional[dict[str, Any]]) -> int:
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        if user is not None:
            scope.set_user(user)
        try:
            raise ValueError("benchmark")
        except ValueError:
            started = time.perf_counter_ns()
            sentry_sdk.capture_exception()
            return time.perf_counter_ns() - started


def interleaved_medians(
    with_integration: sentry_sdk.Client,
    without: sentry_sdk.Client,
    user: Optional[dict[str, Any]],
    captures: int,
    between: Callable[[], None] = lambda: None,
) -> tuple[float, float, float]:
    timed_with: list[int] = []
    timed_without: list[int] = []
    for index in range(captures):
        pair = [(with_integration, timed_with), (without, timed_without)]
        for client, timings in pair if index % 2 == 0 else reversed(pair):
            timings.append(capture_once(client, user))
        between()
    paired = [w - wo for w, wo in zip(timed_with, timed_without)]
    return (
        statistics.median(timed_with) / 1000,
        statistics.median(timed_without) / 1000,
        statistics.median(paired) / 1000,
    )


def scenarios(collector: SegmentCollector) -> dict[str, tuple[SegmentIntegration, Any]]:
    return {
        "forwarded": (
            SegmentIntegration(write_key=WRITE_KEY, host=collector.host, rate_limit="off"),
            {"id": 42},
        ),
        "skipped (no user)": (
            SegmentIntegration(write_key=WRITE_KEY, host=collector.host, rate_limit="off"),
            None,
        ),
        "rate-limited": (
            SegmentIntegration(write_key=WRITE_KEY, host=collector.host, rate_limit="1/hour"),
            {"id": 42},
        ),
    }


def run(captures: int) -> list[tuple[str, float, float, float]]:
    rows = []
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with SegmentCollector() as collector:
        baseline = make_client([])
        for _ in range(200):  # warm up imports, caches and the Segment client
            capture_once(baseline, {"id": 1})
        for name, (integration, user) in scenarios(collector).items():
            client = make_client([integration])
            for _ in range(50):
                capture_once(client, user)
            client.flush(timeout=5)
            medians = interleaved_medians(client, baseline, user, captures)
            client.flush(timeout=10)
            rows.append((name, *medians))
            client.close(timeout=5)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=3000)
    arguments = parser.parse_args()
    print(
        f"{'path':<20} {'with (us)':>10} {'without (us)':>13} {'ratio':>7} "
        f"{'paired diff (us)':>17} {'overhead':>9}"
    )
    for name, with_us, without_us, paired_us in run(arguments.captures):
        print(
            f"{name:<20} {with_us:>10.1f} {without_us:>13.1f} {with_us / without_us:>7.3f} "
            f"{paired_us:>17.2f} {paired_us / without_us * 100:>8.2f}%"
        )


if __name__ == "__main__":
    main()
