"""Instructions the capturing thread executes per capture_exception, with and without the
integration, counted by valgrind's callgrind: repeatable where wall-clock ratios on a shared
machine drift by a few percent.

Each case runs in its own process. Callgrind counts only inside one call of functools.reduce
that makes the measured captures (--toggle-collect), after a warm-up, a full collection and
gc.freeze() (so when a collection of the setup's objects happens does not land on one case
and not another), and only on that thread (the worker and Segment's consumer run on theirs).
A third case registers an integration that hooks nothing: the floor any integration pays,
because Sentry lists every integration's name in every event it serializes.

    .venv/bin/python benchmarks/instructions.py [--captures 200]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

SCRIPT = textwrap.dedent(
    """
    import functools, gc, os, sys
    sys.path.insert(0, {bench!r})
    import latency
    from latency import WRITE_KEY, make_client
    from sentry_segment import SegmentIntegration

    integration, with_user, captures = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
    capture_once = getattr(latency, sys.argv[4])
    if integration == "inert":
        SegmentIntegration.setup_once = staticmethod(lambda: None)
    integrations = []
    if integration != "none":
        integrations = [SegmentIntegration(write_key=WRITE_KEY, host="http://127.0.0.1:9",
                                           rate_limit="off")]
    client = make_client(integrations)
    user = {{"id": 1}} if with_user else None
    for _ in range(50):
        capture_once(client, user)
    gc.collect()
    gc.freeze()
    functools.reduce(lambda _, __: capture_once(client, user), range(captures), None)
    os._exit(0)
    """
)

# case: (integration, with a user, the function of latency.py that raises and captures)
CASES = {
    "forwarded": ("segment", True, "capture_once"),
    "forwarded, baseline": ("none", True, "capture_once"),
    "forwarded, inert integration": ("inert", True, "capture_once"),
    "skipped": ("segment", False, "capture_once"),
    "skipped, baseline": ("none", False, "capture_once"),
    "skipped, inert integration": ("inert", False, "capture_once"),
    "forwarded, one at a time": ("segment", True, "capture_spaced"),
    "forwarded, one at a time, baseline": ("none", True, "capture_spaced"),
    "forwarded, one at a time, inert integration": ("inert", True, "capture_spaced"),
    "skipped, one at a time": ("segment", False, "capture_spaced"),
    "skipped, one at a time, baseline": ("none", False, "capture_spaced"),
    "skipped, one at a time, inert integration": ("inert", False, "capture_spaced"),
    "forwarded, typical": ("segment", True, "capture_typical"),
    "forwarded, typical, baseline": ("none", True, "capture_typical"),
    "skipped, typical": ("segment", False, "capture_typical"),
    "skipped, typical, baseline": ("none", False, "capture_typical"),
}
# A typical capture executes about six times the instructions of the smallest one.
TYPICAL_SHARE = 4


def callgrind_instructions(arguments: list[str], *options: str, thread: str = "") -> int:
    """Instructions callgrind counts running this Python script with these arguments.

    thread "-01" reads the main thread's count (with --separate-threads=yes); "" all threads.
    """
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", *options, f"--callgrind-out-file={out}",
            sys.executable, *arguments,
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, capture_output=True, timeout=1800, env=environment)
        summary = re.search(r"^summary: (\d+)", Path(f"{out}{thread}").read_text(), re.MULTILINE)
    assert summary is not None
    return int(summary.group(1))


def measured_instructions(
    script: Path, integration: str, with_user: bool, capture: str, captures: int
) -> int:
    return callgrind_instructions(
        [str(script), integration, "1" if with_user else "0", str(captures), capture],
        "--separate-threads=yes",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        thread="-01",
    )


def per_capture(captures: int) -> Optional[dict[str, float]]:
    """Instructions per capture on the capturing thread for each case; None without valgrind."""
    if shutil.which("valgrind") is None:
        return None

    def count(case: tuple[str, bool, str]) -> int:
        return max(1, captures // TYPICAL_SHARE) if case[2] == "capture_typical" else captures

    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "capture.py"
        script.write_text(SCRIPT.format(bench=str(Path(__file__).resolve().parent)))
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                name: pool.submit(measured_instructions, script, *case, count(case))
                for name, case in CASES.items()
            }
            return {name: future.result() / count(CASES[name]) for name, future in futures.items()}


# Under valgrind the process runs about 50 times slower but its timers do not: the worker
# would drain a few events per turn and Segment's consumer post a few per request, where at
# full speed they take hundreds. So the worker gathers until the flush that ends each phase
# (which then hands all to Segment's queue at once, before its consumer starts), and each
# phase captures exactly one batch of 500: one post each, as at full speed under load.
BATCH = 500

ALL_THREADS_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys
    sys.path.insert(0, {bench!r})
    from latency import WRITE_KEY, capture_once, make_client
    from sentry_segment import SegmentIntegration, forwarder

    integrated, captures, host = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3]
    forwarder.LINGER_SECONDS = 3600.0

    integrations = []
    if integrated:
        integrations = [SegmentIntegration(write_key=WRITE_KEY, host=host, rate_limit="off")]
    client = make_client(integrations)
    for _ in range({batch}):
        capture_once(client, {{"id": 1}})
    if integrated:
        assert integrations[0].flush(timeout=600)
    gc.collect()
    gc.freeze()
    for _ in range(captures):
        capture_once(client, {{"id": 1}})
    if integrated:
        assert integrations[0].flush(timeout=600)
    os._exit(0)
    """
)


def all_threads_instructions(script: Path, integrated: bool, captures: int, host: str) -> int:
    return callgrind_instructions([str(script), "1" if integrated else "0", str(captures), host])


def per_forwarded_event(host: str) -> Optional[tuple[float, float]]:
    """(instructions per bare capture, extra instructions per forwarded event), every thread
    of the process counted: the hooks, the worker, Segment's client and its HTTP post.

    Four runs, with and without the integration, with 0 and with one batch of captures after
    a warm-up batch; the differences cancel start-up. The smallest error only: a typical one
    takes too long under valgrind. None without valgrind.
    """
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "forward.py"
        bench = str(Path(__file__).resolve().parent)
        script.write_text(ALL_THREADS_SCRIPT.format(bench=bench, batch=BATCH))
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                (integrated, count): pool.submit(
                    all_threads_instructions, script, integrated, count, host
                )
                for integrated in (False, True)
                for count in (0, BATCH)
            }
            counts = {key: future.result() for key, future in futures.items()}
    bare = (counts[(False, BATCH)] - counts[(False, 0)]) / BATCH
    with_integration = (counts[(True, BATCH)] - counts[(True, 0)]) / BATCH
    return bare, with_integration - bare


SEGMENT_ALONE_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys, uuid
    from segment.analytics import Client
    from sentry_segment import delivery, payload

    messages, host, way = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    event = {{
        "event_id": None, "timestamp": "2026-11-30T09:00:00.000000Z", "level": "error",
        "environment": "production", "release": "bench", "user": {{"id": 1}},
        "exception": {{"values": [{{"type": "ValueError"}}]}},
    }}
    # As many built in every run, so the difference between runs is the sending alone.
    calls = [
        payload.build_track({{**event, "event_id": uuid.uuid4().hex}})
        for _ in range(2 * {batch})
    ]
    client = Client(
        write_key="bench_write_key_0123456789", host=host, upload_size={batch}, upload_interval=3600
    )
    def send(track):
        if way == "track":
            client.track(**track.track_arguments())
        else:
            client.queue.put_nowait(delivery.segment_message(track))
    for track in calls[:{batch}]:
        send(track)
    client.flush()
    gc.collect()
    gc.freeze()
    for track in calls[{batch} : {batch} + messages]:
        send(track)
    client.flush()
    os._exit(0)
    """
)


def segment_client_per_message(host: str) -> Optional[dict[str, float]]:
    """Instructions Segment's own client spends per message, every thread counted, two ways:

    "track", through its track(), which validates, clean()s and JSON-encodes the message in
    the caller's thread, then its consumer batches, encodes and posts it; "queue", the
    message delivery.segment_message builds put on the same client's queue, as the package
    does. The smallest error's message, nothing else of ours running. None without valgrind.
    """
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "segment_alone.py"
        script.write_text(SEGMENT_ALONE_SCRIPT.format(batch=BATCH))

        def per_message(way: str) -> float:
            counts = [
                callgrind_instructions([str(script), str(count), host, way]) for count in (0, BATCH)
            ]
            return (counts[1] - counts[0]) / BATCH

        with ThreadPoolExecutor(max_workers=2) as pool:
            ways = {way: pool.submit(per_message, way) for way in ("track", "queue")}
            return {way: future.result() for way, future in ways.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=200)
    counts = per_capture(parser.parse_args().captures)
    if counts is None:
        print("valgrind is not installed")
        return
    for path in ("forwarded", "skipped", "forwarded, typical", "skipped, typical"):
        baseline = counts[f"{path}, baseline"]
        for case in (path, f"{path}, inert integration"):
            if case not in counts:
                continue
            print(
                f"{case:<30} {counts[case]:>12,.0f} vs {baseline:>12,.0f} instructions: "
                f"x{counts[case] / baseline:.4f}"
            )


if __name__ == "__main__":
    main()
