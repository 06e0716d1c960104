"""Median capture_exception latency with and without SegmentIntegration, interleaved.

Three Sentry clients live in one process, each with a transport that drops envelopes (so the
numbers are the capturing thread's own cost, not Sentry's network): one with the integration,
two without. They take turns in blocks of 50 captures, in rotating order, so all see the same
machine noise. Blocks rather than single calls: the integration's worker runs when the
capturing thread yields the GIL, which is during the captures that follow a forwarded one;
call-by-call turns would bill that work to the clients without the integration. The second
client without the integration gives the noise floor (1.000 on a quiet machine). Segment's
collector runs in another process.

    .venv/bin/python benchmarks/latency.py [--captures 4000] [--storage redis://...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional

import sentry_sdk
from common import external_collector
from sentry_sdk.transport import Transport

from sentry_segment import SegmentIntegration

WRITE_KEY = "bench_write_key_0123456789"
DSN = "http://public@127.0.0.1:9/1"
BLOCK = 50


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
    """Nanoseconds one capture_exception takes on this client."""
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


@dataclass(frozen=True)
class LatencyRow:
    path: str
    with_us: float
    without_us: float
    noise_us: float

    @property
    def ratio(self) -> float:
        return self.with_us / self.without_us

    @property
    def noise_ratio(self) -> float:
        return self.noise_us / self.without_us


def interleaved(path: str, integration: SegmentIntegration, user: Any, captures: int) -> LatencyRow:
    clients = {
        "with": make_client([integration]),
        "without": make_client([]),
        "noise": make_client([]),
    }
    timings: dict[str, list[int]] = {name: [] for name in clients}
    for _ in range(100):
        for client in clients.values():
            capture_once(client, user)
    order = list(clients.items())
    for index in range(captures // BLOCK):
        rotation = order[index % 3 :] + order[: index % 3]
        for name, client in rotation if index % 2 else reversed(rotation):
            timings[name].extend(capture_once(client, user) for _ in range(BLOCK))
    clients["with"].flush(timeout=10)
    for client in clients.values():
        client.close(timeout=5)
    median = {name: statistics.median(values) / 1000 for name, values in timings.items()}
    return LatencyRow(path, median["with"], median["without"], median["noise"])


def latency_rows(captures: int, host: str, storage: Optional[str] = None) -> list[LatencyRow]:
    def integration(rate_limit: str) -> SegmentIntegration:
        return SegmentIntegration(
            write_key=WRITE_KEY,
            host=host,
            rate_limit=rate_limit,
            rate_limit_storage=storage,
        )

    suffix = f" ({storage.split('://')[0]})" if storage else ""
    return [
        interleaved(f"forwarded{suffix}", integration("1000000/second"), {"id": 42}, captures),
        interleaved(f"skipped, no user{suffix}", integration("1000000/second"), None, captures),
        interleaved(f"rate-limited{suffix}", integration("1/hour"), {"id": 42}, captures),
    ]


def print_rows(rows: list[LatencyRow]) -> None:
    print(f"{'path':<28} {'with':>9} {'without':>9} {'ratio':>7} {'noise floor':>12}")
    for row in rows:
        print(
            f"{row.path:<28} {row.with_us:>7.1f}us {row.without_us:>7.1f}us "
            f"{row.ratio:>7.3f} {row.noise_ratio:>12.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=4000)
    parser.add_argument("--storage", default=None, help="a limits storage URI, e.g. redis://")
    arguments = parser.parse_args()
    with external_collector() as host:
        print_rows(latency_rows(arguments.captures, host, arguments.storage))


if __name__ == "__main__":
    main()
