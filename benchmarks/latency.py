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
from typing import Any, Callable, Optional

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
    """Nanoseconds one capture_exception takes on this client: the smallest error event, an
    exception raised one frame deep, with no breadcrumbs and no request (the worst case for a
    fixed cost per event)."""
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


# Errors in production arrive one at a time: the integration's worker is asleep before each.
# Longer than the worker's 20 ms gathering, so every capture finds it asleep again.
SPACING_SECONDS = 0.05


def capture_spaced(client: sentry_sdk.Client, user: Optional[dict[str, Any]]) -> int:
    """capture_once, then a pause: the regime of errors one at a time."""
    elapsed = capture_once(client, user)
    time.sleep(SPACING_SECONDS)
    return elapsed


REQUEST = {
    "url": "https://shop.example.com/api/orders/8812/checkout",
    "method": "POST",
    "query_string": "coupon=SPRING&ref=mail",
    "headers": {
        "Host": "shop.example.com",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Accept": "application/json",
        "Accept-Language": "en-US,en;q=0.5",
        "Content-Type": "application/json",
        "Referer": "https://shop.example.com/cart",
        "X-Request-Id": "5b2f0e52-7f2a-4c1e-9f43-3d1c2a8e7b10",
    },
    "env": {"REMOTE_ADDR": "192.0.2.10"},
}


def _checkout(order: dict[str, Any], depth: int) -> None:
    total = sum(line["price"] * line["quantity"] for line in order["lines"])
    if depth == 0:
        raise KeyError(f"no payment method for order {order['id']} ({total:.2f})")
    _checkout(order, depth - 1)


def capture_typical(client: sentry_sdk.Client, user: Optional[dict[str, Any]]) -> int:
    """Nanoseconds one capture_exception takes for an error as a web request raises it: eight
    frames deep with their locals, 20 breadcrumbs, the request, a few tags."""
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        if user is not None:
            scope.set_user({**user, "email": "jane@example.com", "ip_address": "192.0.2.10"})
        scope.set_transaction_name("/api/orders/{id}/checkout")
        for tag, value in (("region", "eu-west-1"), ("plan", "team"), ("feature", "checkout")):
            scope.set_tag(tag, value)
        for number in range(20):
            scope.add_breadcrumb(
                category="query", message=f"SELECT * FROM lines WHERE id = {number}"
            )
        scope.add_event_processor(lambda event, _hint: {**event, "request": REQUEST})
        order = {
            "id": 8812,
            "lines": [{"sku": f"A{n}", "price": 9.5, "quantity": n} for n in range(5)],
        }
        try:
            _checkout(order, depth=7)
        except KeyError:
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


def interleaved(
    path: str,
    integration: SegmentIntegration,
    user: Any,
    captures: int,
    capture: Callable[[sentry_sdk.Client, Any], int] = capture_once,
) -> LatencyRow:
    clients = {
        "with": make_client([integration]),
        "without": make_client([]),
        "noise": make_client([]),
    }
    timings: dict[str, list[int]] = {name: [] for name in clients}
    for _ in range(100):
        for client in clients.values():
            capture(client, user)
    order = list(clients.items())
    for index in range(captures // BLOCK):
        rotation = order[index % 3 :] + order[: index % 3]
        for name, client in rotation if index % 2 else reversed(rotation):
            timings[name].extend(capture(client, user) for _ in range(BLOCK))
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


def typical_latency_rows(captures: int, host: str) -> list[LatencyRow]:
    """The forwarded and skipped rows again, for the typical web-request error."""

    def integration() -> SegmentIntegration:
        return SegmentIntegration(write_key=WRITE_KEY, host=host, rate_limit="off")

    return [
        interleaved("forwarded, typical", integration(), {"id": 42}, captures, capture_typical),
        interleaved("skipped, typical", integration(), None, captures, capture_typical),
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
        rows = latency_rows(arguments.captures, host, arguments.storage)
        if not arguments.storage:
            rows += typical_latency_rows(arguments.captures, host)
        print_rows(rows)


if __name__ == "__main__":
    main()
