"""All the benchmarks in one run, printed as one Markdown table (`make bench`).

1. median capture_exception latency with / without the integration (benchmarks/latency.py),
   for the smallest error event and for a typical web-request error
2. CPU per forwarded event end to end (Segment client and HTTP post included) vs a bare
   capture, for both kinds of error
3. forwarded events per second one process sustains to a loopback collector, limit off
4. peak RSS after 100,000 captured errors, with / without the integration
5. with Redis storage: the latency ratios of (1), and the fleet's accuracy
6. instructions per capture on the capturing thread, with / without (callgrind, repeatable)
7. flush latency after one error with / without, the same during a Segment outage, and idle
   capture-to-POST latency
   (benchmarks/delivery.py)

    .venv/bin/python benchmarks/run.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

from common import external_collector
from delivery import flush_during_outage, flush_latency, idle_capture_to_post
from instructions import per_capture, per_forwarded_event, segment_client_per_message
from latency import (
    WRITE_KEY,
    LatencyRow,
    capture_once,
    latency_rows,
    make_client,
    typical_latency_rows,
)

from sentry_segment import SegmentIntegration

ROOT = Path(__file__).resolve().parent.parent


def cpu_per_forwarded_event(
    host: str, block: int, rounds: int, capture: Callable[[Any, Any], int] = capture_once
) -> tuple[float, float]:
    """(bare capture CPU, extra CPU per forwarded event), in microseconds, medians of rounds.

    Process CPU time (every thread) over a block of captures with the integration, flushed to
    the collector, against the same block on a client without it; the two alternate in order
    round after round, so drift in the machine's speed falls on both.
    """
    integration = SegmentIntegration(write_key=WRITE_KEY, host=host, rate_limit="off")
    with_client, without_client = make_client([integration]), make_client([])
    for _ in range(200):
        capture(with_client, {"id": 1})
        capture(without_client, {"id": 1})
    assert integration.flush(timeout=20)

    def cpu_of(client: Any) -> float:
        started = time.process_time()
        for _ in range(block):
            capture(client, {"id": 1})
        if client is with_client:
            assert integration.flush(timeout=60)
        return (time.process_time() - started) / block * 1e6

    bare, extra = [], []
    for round_number in range(rounds):
        if round_number % 2:
            with_us, without_us = cpu_of(with_client), cpu_of(without_client)
        else:
            without_us, with_us = cpu_of(without_client), cpu_of(with_client)
        bare.append(without_us)
        extra.append(with_us - without_us)
    with_client.close(timeout=5)
    return statistics.median(bare), statistics.median(extra)


def start_script(script: str, host: str, **settings: object) -> subprocess.Popen[str]:
    """Run a benchmark script with python -c, its output piped: the benchmarks' directory in
    BENCH_DIR, the collector in BENCH_HOST, each setting as BENCH_<NAME>."""
    environ = {**os.environ, "BENCH_DIR": str(Path(__file__).parent), "BENCH_HOST": host}
    environ.update({f"BENCH_{name.upper()}": str(value) for name, value in settings.items()})
    return subprocess.Popen(
        [sys.executable, "-c", script], env=environ, stdout=subprocess.PIPE, text=True
    )


CPU_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["BENCH_DIR"])
    import latency
    from run import cpu_per_forwarded_event
    capture = getattr(latency, os.environ["BENCH_CAPTURE"])
    block, rounds = int(os.environ["BENCH_BLOCK"]), int(os.environ["BENCH_ROUNDS"])
    print(json.dumps(cpu_per_forwarded_event(os.environ["BENCH_HOST"], block, rounds, capture)))
    """
)


def cpu_in_fresh_process(host: str, block: int, rounds: int, capture: str) -> tuple[float, float]:
    """cpu_per_forwarded_event in a process of its own: no threads, clients or garbage left
    over from the benchmarks before it."""
    run = start_script(CPU_SCRIPT, host, capture=capture, block=block, rounds=rounds)
    output = run.communicate(timeout=1800)[0]
    assert run.returncode == 0, f"the CPU benchmark exited with {run.returncode}"
    bare, extra = json.loads(output)
    return float(bare), float(extra)


def forwarded_per_second(host: str, events: int) -> tuple[float, float, float]:
    """(end to end: capture, forward, deliver; the same captures on a client without the
    integration; the pipeline alone: offer to delivered), each in events per second."""
    integration = SegmentIntegration(write_key=WRITE_KEY, host=host, rate_limit="off")
    client = make_client([integration])
    capture_once(client, {"id": 1})
    integration.flush(timeout=20)
    started = time.perf_counter()
    for _ in range(events):
        capture_once(client, {"id": 1})
    assert integration.flush(timeout=120)
    end_to_end = events / (time.perf_counter() - started)

    recorded: list[dict[str, Any]] = []
    recorder = make_client([])
    recorder.options["before_send"] = lambda event, hint: recorded.append(event) or event
    started = time.perf_counter()
    for _ in range(events):
        capture_once(recorder, {"id": 1})
    capturing_alone = events / (time.perf_counter() - started)
    forwarder = integration._forwarder
    started = time.perf_counter()
    for event in recorded:
        forwarder.offer(event, client.options["dsn"])
    assert integration.flush(timeout=120)
    pipeline = events / (time.perf_counter() - started)
    client.close(timeout=5)
    return end_to_end, capturing_alone, pipeline


RSS_SCRIPT = textwrap.dedent(
    """
    import os, resource, sys
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from latency import capture_once, make_client, WRITE_KEY
    from sentry_segment import SegmentIntegration
    integrations = []
    if os.environ["BENCH_INTEGRATED"] == "1":
        integrations = [SegmentIntegration(write_key=WRITE_KEY, host=os.environ["BENCH_HOST"],
                                           rate_limit="off")]
    client = make_client(integrations)
    for number in range(int(os.environ["BENCH_EVENTS"])):
        capture_once(client, {"id": number})
    if integrations:
        integrations[0].flush(timeout=60)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """
)


def peak_rss_mb(host: str, events: int) -> tuple[float, float]:
    """(without, with) peak RSS in MB of a process that captured ``events`` errors."""
    runs = [start_script(RSS_SCRIPT, host, events=events, integrated=flag) for flag in ("0", "1")]
    without, with_ = (float(run.communicate(timeout=1800)[0]) for run in runs)
    return without, with_


FLEET_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from latency import capture_once, make_client, WRITE_KEY
    from sentry_segment import SegmentIntegration
    integration = SegmentIntegration(write_key=WRITE_KEY, host=os.environ["BENCH_HOST"],
        rate_limit="50/second", rate_limit_storage=os.environ["BENCH_STORAGE"])
    client = make_client([integration])
    start_at = float(os.environ["BENCH_START_AT"])
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < start_at + 3.0:
        capture_once(client, {"id": 1})
    integration.flush(timeout=20)
    print(json.dumps(integration.stats()))
    """
)


def fleet_accuracy(host: str, storage: str, processes: int = 4) -> float:
    start_at = time.time() + 4
    runs = [
        start_script(FLEET_SCRIPT, host, storage=storage, start_at=start_at)
        for _ in range(processes)
    ]
    forwarded = sum(json.loads(run.communicate(timeout=120)[0])["forwarded"] for run in runs)
    return float(forwarded) / (50 * 3)


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.uri: Optional[str] = None
        if binary is None:
            return
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        self.uri = f"redis://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def instruction_rows(host: str) -> list[tuple[str, str, str]]:
    counted = per_forwarded_event(host)
    segment_alone = segment_client_per_message(host)
    if counted is None or segment_alone is None:
        return [("2. instructions per forwarded event", "skipped: no valgrind", "")]
    bare, extra = counted
    return [
        (
            "2. instructions per forwarded event, all threads",
            f"+{extra:,.0f} on a {bare:,.0f} capture: **{extra / bare * 100:.1f}%**",
            "callgrind, repeatable: the work of the CPU row, counted",
        ),
        (
            "2. of which Segment's client, per message",
            f"{segment_alone['queue']:,.0f}: **{segment_alone['queue'] / bare * 100:.1f}%**"
            " of that capture",
            "its queue, consumer and HTTP post, for the message the package builds",
        ),
        (
            "2. Segment's client through its track(), per message",
            f"{segment_alone['track']:,.0f}: {segment_alone['track'] / bare * 100:.1f}%"
            " of that capture",
            "for comparison: what the package no longer runs per message (see below)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer captures, for a smoke run")
    quick = parser.parse_args().quick
    captures, rss_events = (600, 5_000) if quick else (4_000, 100_000)

    rows: list[tuple[str, str, str]] = []
    with external_collector() as host:
        latency: list[LatencyRow] = latency_rows(captures, host)
        latency += typical_latency_rows(captures, host)
        for row in latency:
            rows.append(
                (
                    f"1. median latency, {row.path}",
                    f"{row.with_us:.0f} us vs {row.without_us:.0f} us: **x{row.ratio:.3f}**",
                    f"noise floor x{row.noise_ratio:.3f}",
                )
            )
        for kind, capture, block in (
            ("", "capture_once", 500),
            (", typical", "capture_typical", 100),
        ):
            bare, extra = cpu_in_fresh_process(host, block, 4 if quick else 30, capture)
            rows.append(
                (
                    f"2. CPU per forwarded event{kind}",
                    f"+{extra:.0f} us on a {bare:.0f} us capture: **{extra / bare * 100:.1f}%**",
                    "all threads, Segment client and HTTP post included",
                )
            )
        rows.extend(instruction_rows(host))
        end_to_end, capturing_alone, pipeline = forwarded_per_second(host, captures)
        rows.append(
            (
                "3. forwarded events/s, one process, limit off",
                f"**{end_to_end:,.0f}/s** capturing and forwarding: "
                f"**{end_to_end / capturing_alone:.2f}** of capturing alone",
                f"capturing alone: {capturing_alone:,.0f}/s; forwarding pipeline alone: "
                f"{pipeline:,.0f}/s",
            )
        )
        without_mb, with_mb = peak_rss_mb(host, rss_events)
        rows.append(
            (
                f"4. peak RSS after {rss_events:,} captured errors",
                f"{with_mb:.0f} MB vs {without_mb:.0f} MB: **+{with_mb - without_mb:.0f} MB**",
                "max_queue_size 10,000",
            )
        )
        redis = Redis()
        try:
            if redis.uri is None:
                rows.append(("5. Redis storage", "skipped: no redis-server", ""))
            else:
                for row in latency_rows(captures, host, redis.uri):
                    rows.append(
                        (
                            f"5. median latency, {row.path}",
                            f"{row.with_us:.0f} us vs {row.without_us:.0f} us: "
                            f"**x{row.ratio:.3f}**",
                            f"noise floor x{row.noise_ratio:.3f}",
                        )
                    )
                accuracy = fleet_accuracy(host, redis.uri)
                rows.append(
                    (
                        "5. fleet accuracy, 4 processes, 50/s for 3 s",
                        f"forwarded / (limit x seconds) = **{accuracy:.3f}**",
                        "one limit shared through Redis",
                    )
                )
        finally:
            redis.stop()

    counts = per_capture(50 if quick else 200)
    if counts is None:
        rows.append(("6. instructions per capture", "skipped: no valgrind", ""))
    else:
        paths = (
            "forwarded, one at a time",
            "skipped, one at a time",
            "forwarded",
            "skipped",
            "forwarded, typical",
            "skipped, typical",
        )
        for path in paths:
            without = counts[f"{path}, baseline"]
            floor = counts.get(f"{path}, inert integration")
            own = (
                "" if floor is None else f"; own cost over the floor: +{counts[path] - floor:,.0f}"
            )
            for case, note in (
                (path, f"callgrind, repeatable; the worker's threads not included{own}"),
                (f"{path}, inert integration", "an integration hooking nothing: the floor"),
            ):
                if case in counts:
                    rows.append(
                        (
                            f"6. capturing-thread instructions, {case}",
                            f"{counts[case]:,.0f} vs {without:,.0f}: "
                            f"**x{counts[case] / without:.4f}**",
                            note,
                        )
                    )

    rounds = 10 if quick else 40
    with_ms, without_ms = flush_latency(rounds)
    rows.append(
        (
            "7. sentry_sdk.flush() after one error",
            f"{with_ms:.1f} ms vs {without_ms:.1f} ms: **+{with_ms - without_ms:.1f} ms**",
            "Sentry's real transport to loopback; with: Segment has answered too",
        )
    )
    outage_ms, outage_without_ms, outage_idle_ms = flush_during_outage(rounds)
    rows.append(
        (
            "7. sentry_sdk.flush() during a Segment outage (503)",
            f"{outage_ms:.1f} ms vs {outage_without_ms:.1f} ms: "
            f"**+{outage_ms - outage_without_ms:.1f} ms**; no error: {outage_idle_ms:.1f} ms",
            "after one error, with vs without; the integration does not wait for Segment",
        )
    )
    segment_ms, sentry_ms = idle_capture_to_post(rounds)
    rows.append(
        (
            "7. idle capture to POST, median (max)",
            f"Segment **{statistics.median(segment_ms):.1f} ms** ({max(segment_ms):.1f} ms)",
            f"Sentry's own transport: {statistics.median(sentry_ms):.1f} ms",
        )
    )

    print(f"Machine: {machine()}\n")
    print("| measure | result | note |")
    print("|---|---|---|")
    for measure, result, note in rows:
        print(f"| {measure} | {result} | {note} |")


if __name__ == "__main__":
    main()
