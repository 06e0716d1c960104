"""Instructions the capturing thread executes per capture_exception, with and without the
integration, counted by valgrind's callgrind: repeatable where wall-clock ratios on a shared
machine drift by a few percent.

Each case runs in its own process twice, with 0 and with N captures after a warm-up; the
difference divided by N is the cost of one capture on the main thread (callgrind counts each
thread separately, so the integration's worker and Segment's consumer are not included).

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
    import os, sys
    sys.path.insert(0, {bench!r})
    from latency import WRITE_KEY, capture_once, make_client
    from sentry_segment import SegmentIntegration

    integrated, with_user, captures = sys.argv[1] == "1", sys.argv[2] == "1", int(sys.argv[3])
    integrations = []
    if integrated:
        integrations = [SegmentIntegration(write_key=WRITE_KEY, host="http://127.0.0.1:9",
                                           rate_limit="off")]
    client = make_client(integrations)
    user = {{"id": 1}} if with_user else None
    for _ in range(50):
        capture_once(client, user)
    for _ in range(captures):
        capture_once(client, user)
    os._exit(0)
    """
)

CASES = {
    "forwarded": (True, True),
    "forwarded, baseline": (False, True),
    "skipped, no user": (True, False),
    "skipped, baseline": (False, False),
}


def main_thread_instructions(
    script: Path, integrated: bool, with_user: bool, captures: int, out: Path
) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes",
        f"--callgrind-out-file={out}", sys.executable, str(script),
        "1" if integrated else "0", "1" if with_user else "0", str(captures),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(command, check=True, capture_output=True, timeout=1800, env=environment)
    summary = re.search(r"^summary: (\d+)", Path(f"{out}-01").read_text(), re.MULTILINE)
    assert summary is not None
    return int(summary.group(1))


def per_capture(captures: int) -> Optional[dict[str, float]]:
    """Instructions per capture on the capturing thread for each case; None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "capture.py"
        script.write_text(SCRIPT.format(bench=str(Path(__file__).resolve().parent)))
        jobs = {
            (name, count): (integrated, with_user, count, Path(folder) / f"{index}-{count}")
            for index, (name, (integrated, with_user)) in enumerate(CASES.items())
            for count in (0, captures)
        }
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                key: pool.submit(main_thread_instructions, script, *job)
                for key, job in jobs.items()
            }
            counts = {key: future.result() for key, future in futures.items()}
    return {name: (counts[(name, captures)] - counts[(name, 0)]) / captures for name in CASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=200)
    counts = per_capture(parser.parse_args().captures)
    if counts is None:
        print("valgrind is not installed")
        return
    for path in ("forwarded", "skipped"):
        with_ = counts[f"{path}, no user" if path == "skipped" else path]
        without = counts[f"{path}, baseline"]
        print(
            f"{path:<10} {with_:>12,.0f} vs {without:>12,.0f} instructions: x{with_ / without:.4f}"
        )


if __name__ == "__main__":
    main()
