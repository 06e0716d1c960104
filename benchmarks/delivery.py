"""How promptly events leave the process: flush latency and idle capture-to-POST latency.

1. ``sentry_sdk.flush()`` right after one captured error, on a client with Sentry's real HTTP
   transport posting to a loopback Sentry endpoint: with the integration (the error is also
   forwarded to a loopback Segment collector, and flush waits for Segment's answer) and
   without it. Rounds alternate between the two clients; medians.
2. From ``capture_exception()`` to the POST's arrival at the loopback endpoint, when the
   process is idle (nothing in flight, the worker asleep): Segment's collector for the
   integration, Sentry's endpoint for Sentry's own transport, the same captures.

3. The same flush while Segment answers every post with 503 (an outage): with the integration
   it does not wait for Segment (it returns once Sentry's own flush has), after one error and
   after none (a serverless invocation that captured nothing).

Both endpoints run in this process (their arrival callbacks take the time), on 127.0.0.1.

    .venv/bin/python benchmarks/delivery.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from typing import Any

import sentry_sdk

from sentry_segment import SegmentIntegration
from sentry_segment.testing import SegmentCollector, SentryRecorder

WRITE_KEY = "bench_write_key_0123456789"
# Long enough for the worker and Segment's consumer to be asleep again, not to have retired.
IDLE_GAP_SECONDS = 0.3


def _capture(client: sentry_sdk.Client, user_id: str) -> None:
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        scope.set_user({"id": user_id})
        try:
            raise ValueError("benchmark")
        except ValueError:
            sentry_sdk.capture_exception()


logging.getLogger("werkzeug").setLevel(logging.WARNING)


def flush_latency(rounds: int) -> tuple[float, float]:
    """(median ms with the integration, median ms without) of flush after one error."""
    with SegmentCollector() as segment, SentryRecorder() as sentry:
        integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
        with_client = sentry_sdk.Client(dsn=sentry.dsn(), integrations=[integration])
        without_client = sentry_sdk.Client(dsn=sentry.dsn())
        timings: dict[Any, list[float]] = {with_client: [], without_client: []}
        for number in range(rounds + 2):
            for client in (with_client, without_client)[:: 1 if number % 2 else -1]:
                _capture(client, str(number))
                started = time.perf_counter()
                client.flush(timeout=10)
                if number >= 2:  # the first rounds start threads and connections
                    timings[client].append((time.perf_counter() - started) * 1000)
                time.sleep(IDLE_GAP_SECONDS / 3)
        assert len(segment.messages()) == rounds + 2, "the integration's flush lost an event"
        with_client.close(timeout=5)
        without_client.close(timeout=5)
    return statistics.median(timings[with_client]), statistics.median(timings[without_client])


def flush_during_outage(rounds: int) -> tuple[float, float, float]:
    """Median ms of flush while Segment answers 503: (with the integration, after one error),
    (without it, after one error), (with it, after no error)."""
    with SegmentCollector() as segment, SentryRecorder() as sentry:
        segment.respond_next(1_000_000, 503)
        integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
        with_client = sentry_sdk.Client(dsn=sentry.dsn(), integrations=[integration])
        without_client = sentry_sdk.Client(dsn=sentry.dsn())
        timings: dict[str, list[float]] = {"with": [], "without": [], "idle": []}
        # The first post and its first retry fail before the outage is known.
        _capture(with_client, "0")
        time.sleep(1.5)
        for number in range(rounds):
            for name, client, captures in (
                ("with", with_client, True),
                ("without", without_client, True),
                ("idle", with_client, False),
            ):
                if captures:
                    _capture(client, str(number))
                started = time.perf_counter()
                client.flush(timeout=10)
                timings[name].append((time.perf_counter() - started) * 1000)
                time.sleep(IDLE_GAP_SECONDS / 3)
        segment.clear()  # the outage ends; what was queued is delivered
        deadline = time.monotonic() + 30
        while not integration.flush(timeout=1) and time.monotonic() < deadline:
            time.sleep(0.1)
        with_client.close(timeout=5)
        without_client.close(timeout=5)
    return (
        statistics.median(timings["with"]),
        statistics.median(timings["without"]),
        statistics.median(timings["idle"]),
    )


class _Arrivals:
    """perf_counter() of each POST's arrival, by the endpoint that took it."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.arrived = threading.Event()

    def note(self, *_args: Any) -> None:
        self.times.append(time.perf_counter())
        self.arrived.set()


def idle_capture_to_post(rounds: int) -> tuple[list[float], list[float]]:
    """(Segment, Sentry) milliseconds from capture to the POST's arrival, each round idle."""
    to_segment, to_sentry = _Arrivals(), _Arrivals()
    with (
        SegmentCollector(on_message=to_segment.note) as segment,
        SentryRecorder(on_event=to_sentry.note) as sentry,
    ):
        integration = SegmentIntegration(write_key=WRITE_KEY, host=segment.host, rate_limit="off")
        client = sentry_sdk.Client(dsn=sentry.dsn(), integrations=[integration])
        segment_ms, sentry_ms = [], []
        for number in range(rounds + 2):
            time.sleep(IDLE_GAP_SECONDS)
            to_segment.arrived.clear()
            to_sentry.arrived.clear()
            started = time.perf_counter()
            _capture(client, str(number))
            assert to_segment.arrived.wait(10), "Segment's POST did not arrive"
            assert to_sentry.arrived.wait(10), "Sentry's POST did not arrive"
            if number >= 2:
                segment_ms.append((to_segment.times[-1] - started) * 1000)
                sentry_ms.append((to_sentry.times[-1] - started) * 1000)
        client.close(timeout=5)
    return segment_ms, sentry_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    rounds = parser.parse_args().rounds
    with_ms, without_ms = flush_latency(rounds)
    print(f"flush after one error: {with_ms:.1f} ms with, {without_ms:.1f} ms without")
    outage_ms, outage_without_ms, outage_idle_ms = flush_during_outage(rounds)
    print(
        f"flush during a Segment outage: {outage_ms:.1f} ms with, {outage_without_ms:.1f} ms "
        f"without; with and no error: {outage_idle_ms:.1f} ms"
    )
    segment_ms, sentry_ms = idle_capture_to_post(rounds)
    print(
        f"idle capture to POST: Segment median {statistics.median(segment_ms):.1f} ms, "
        f"max {max(segment_ms):.1f} ms; Sentry median {statistics.median(sentry_ms):.1f} ms"
    )


if __name__ == "__main__":
    main()
