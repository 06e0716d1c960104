"""The moving-window limit: never more than the limit in any window, per organization."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import sentry_sdk
from limits import parse_many
from sentry_sdk.scope import Scope

from sentry_segment.ratelimit import STORAGE_RETRY_SECONDS, RateLimit
from sentry_segment.stats import Stats
from sentry_segment.testing import SegmentCollector

from .support import free_port


def limit_of(text: str) -> RateLimit:
    return RateLimit(tuple(parse_many(text)), Stats())


def test_allows_the_limit_then_refuses_until_the_window_moves() -> None:
    limit = limit_of("3/second")
    started = time.monotonic()
    assert [limit.allow("org") for _ in range(5)] == [True, True, True, False, False]
    time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    assert not limit.allow("org")
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert limit.allow("org")


def test_organizations_have_separate_budgets() -> None:
    limit = limit_of("1/second")
    assert limit.allow("a")
    assert limit.allow("b")
    assert not limit.allow("a")


def test_every_limit_of_several_must_allow_and_a_refusal_spends_nothing() -> None:
    limit = limit_of("2/second;3/minute")
    assert [limit.allow("org") for _ in range(3)] == [True, True, False]
    time.sleep(1.05)
    assert [limit.allow("org") for _ in range(3)] == [True, False, False]


def test_no_limits_allows_everything() -> None:
    limit = RateLimit((), Stats())
    assert all(limit.allow("org") for _ in range(10_000))


def test_a_steady_flood_never_exceeds_the_limit_in_any_one_second_span() -> None:
    limit = limit_of("20/second")
    allowed_at: list[float] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        if limit.allow("org"):
            allowed_at.append(time.monotonic())
        time.sleep(0.001)
    assert len(allowed_at) >= 40
    for index, start in enumerate(allowed_at):
        in_span = [t for t in allowed_at[index:] if t < start + 0.99]
        assert len(in_span) <= 20


def test_a_shared_storage_is_one_limit_for_every_limiter_using_it(redis_server: Any) -> None:
    items = tuple(parse_many("5/second"))
    first = RateLimit(items, Stats(), redis_server.uri)
    second = RateLimit(items, Stats(), redis_server.uri)
    decisions = [limiter.allow("org") for _ in range(5) for limiter in (first, second)]
    assert decisions.count(True) == 5


def test_an_unreachable_storage_falls_back_to_this_process_and_comes_back(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    limit = RateLimit(tuple(parse_many("3/second")), stats, redis_server.uri)
    sentry_sdk.init(debug=True)
    try:
        with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
            assert [limit.allow("org") for _ in range(4)] == [True, True, True, False]
            assert stats.snapshot()["rate_limit_fallback"] == 0

            redis_server.stop()
            time.sleep(1.05)
            assert [limit.allow("org") for _ in range(4)] == [True, True, True, False]
            assert stats.snapshot()["rate_limit_fallback"] == 4

            redis_server.start()
            time.sleep(STORAGE_RETRY_SECONDS + 0.1)
            assert limit.allow("org")
            assert stats.snapshot()["rate_limit_fallback"] == 4
    finally:
        sentry_sdk.get_client().close()
        Scope.get_global_scope().set_client(None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sentry-segment")]
    assert len([line for line in lines if "unreachable" in line]) == 1
    assert len([line for line in lines if "is back" in line]) == 1


FLEET_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, sentry_sdk
    from sentry_segment import SegmentIntegration

    integration = SegmentIntegration(rate_limit="50/second")
    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[integration])
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    number = 0
    while time.time() < start_at + 2.5:
        with sentry_sdk.new_scope() as scope:
            scope.set_user({"id": f"{os.getpid()}-{number}"})
            try:
                raise ValueError(number)
            except ValueError:
                sentry_sdk.capture_exception()
        number += 1
    integration.flush(timeout=10)
    print(json.dumps(integration.stats()))
    """
)


def test_four_processes_share_one_limit_through_redis(
    redis_server: Any, segment: SegmentCollector
) -> None:
    environ = {
        **os.environ,
        "SENTRY_SEGMENT_WRITE_KEY": "wk_FleetTest_0123456789",
        "SENTRY_SEGMENT_HOST": segment.host,
        "SENTRY_SEGMENT_RATE_LIMIT_STORAGE": redis_server.uri,
        "TEST_DSN": f"http://public@127.0.0.1:{free_port()}/1",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_SCRIPT],
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    # All four start together once all are ready: a start fixed in advance was missed when
    # imports and init took seconds on a loaded machine (each then captured nothing).
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    start_at = time.time() + 0.5
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(f"{start_at}\n")
        process.stdin.flush()
    # Captures for 2.5 s: the limit's moving window lets 50 through at the start, 50 one second
    # later and 50 at two seconds, never a fourth 50 (the worker decides a little after each
    # capture: a capture period of exactly 3 s let a lagging worker's decisions reach a fourth
    # window). Fewer when the first 50 were spread out (a slow start on a loaded machine) and
    # the captures ended before the third window's share: 135 seen. Without a shared limit
    # each process would forward 150 of its own.
    reports = [json.loads(process.communicate(timeout=60)[0]) for process in processes]
    forwarded = sum(report["forwarded"] for report in reports)
    assert sum(report["rate_limited"] for report in reports) > 150
    assert all(report["rate_limit_fallback"] == 0 for report in reports)
    assert 100 < forwarded <= 150
    assert len(segment.wait_for_messages(forwarded)) == forwarded
