"""The moving-window limit: never more than the limit in any window, per organization."""

from __future__ import annotations

import time

from limits import parse_many

from sentry_segment.ratelimit import RateLimit


def test_allows_the_limit_then_refuses_until_the_window_moves() -> None:
    limit = RateLimit(tuple(parse_many("3/second")))
    started = time.monotonic()
    assert [limit.allow("org") for _ in range(5)] == [True, True, True, False, False]
    time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    assert not limit.allow("org")
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert limit.allow("org")


def test_organizations_have_separate_budgets() -> None:
    limit = RateLimit(tuple(parse_many("1/second")))
    assert limit.allow("a")
    assert limit.allow("b")
    assert not limit.allow("a")


def test_every_limit_of_several_must_allow_and_a_refusal_spends_nothing() -> None:
    limit = RateLimit(tuple(parse_many("2/second;3/minute")))
    assert [limit.allow("org") for _ in range(3)] == [True, True, False]
    time.sleep(1.05)
    assert [limit.allow("org") for _ in range(3)] == [True, False, False]


def test_no_limits_allows_everything() -> None:
    limit = RateLimit(())
    assert all(limit.allow("org") for _ in range(10_000))


def test_a_steady_flood_never_exceeds_the_limit_in_any_one_second_span() -> None:
    limit = RateLimit(tuple(parse_many("20/second")))
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
