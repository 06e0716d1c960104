"""Why Segment's consumer waits 0.1 s between posts: rows 2 and 3 of `make bench` for several
values of delivery.POST_INTERVAL_SECONDS, side by side in one run.

Each value runs in a fresh process, the values in turn, round after round, so drift in the
machine's speed falls on all of them; medians over the rounds. 0 posts whenever a message
waits (only what queues while a post is in flight batches); 0.5 is Segment's own interval.

    .venv/bin/python benchmarks/post_interval.py [--rounds 3] [--intervals 0 0.1 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap

from common import external_collector
from run import start_script

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from sentry_segment import delivery
    delivery.POST_INTERVAL_SECONDS = float(os.environ["BENCH_INTERVAL"])
    from latency import capture_once
    from run import cpu_per_forwarded_event, forwarded_per_second
    bare, extra = cpu_per_forwarded_event(os.environ["BENCH_HOST"], 500, 8, capture_once)
    end_to_end, capturing_alone, _ = forwarded_per_second(os.environ["BENCH_HOST"], 3000)
    print(json.dumps([extra / bare * 100, end_to_end / capturing_alone]))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.0, 0.1, 0.5])
    arguments = parser.parse_args()
    results: dict[float, list[tuple[float, float]]] = {value: [] for value in arguments.intervals}
    with external_collector() as host:
        for _ in range(arguments.rounds):
            for value in arguments.intervals:
                run = start_script(SCRIPT, host, interval=value)
                output = run.communicate(timeout=900)[0]
                assert run.returncode == 0, f"interval {value}: exited with {run.returncode}"
                cpu, throughput = json.loads(output.strip().splitlines()[-1])
                results[value].append((cpu, throughput))
    print("| POST_INTERVAL_SECONDS | 2. CPU per forwarded event | 3. of capturing alone |")
    print("|---|---|---|")
    for value, rounds in results.items():
        cpu = statistics.median(row[0] for row in rounds)
        throughput = statistics.median(row[1] for row in rounds)
        spread = ", ".join(f"{row[0]:.1f}%" for row in rounds)
        print(f"| {value:g} s | **{cpu:.1f}%** ({spread}) | {throughput:.2f} |")


if __name__ == "__main__":
    main()
