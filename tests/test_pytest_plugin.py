"""The pytest plugin, as an application's own test suite would use it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USERS_TEST = """
import sentry_sdk
from sentry_segment import SegmentIntegration


def test_a_failing_request_forwards_error_captured_for_user_42(
    segment_environment, sentry_recorder
):
    # Configured from the environment, as in production: SENTRY_DSN and SENTRY_SEGMENT_*.
    sentry_sdk.init(integrations=[SegmentIntegration()])
    sentry_sdk.set_user({"id": 42})
    try:
        raise KeyError("cart")
    except KeyError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
    [event] = sentry_recorder.events()
    [message] = segment_environment.tracked("Error Captured", userId="42")
    assert message["properties"]["exceptionType"] == "KeyError"
    assert message["messageId"] == event["event_id"]


def test_an_explicit_integration(segment_collector, sentry_recorder):
    # Segment gets what Sentry received: a DSN that answers, not a dead one.
    integration = segment_collector.integration(event_name="Backend Error")
    sentry_sdk.init(integrations=[integration], dsn=sentry_recorder.dsn())
    sentry_sdk.set_user({"id": 7})
    try:
        raise ValueError("x")
    except ValueError:
        sentry_sdk.capture_exception()
    assert integration.flush(timeout=5)
    assert [m["userId"] for m in segment_collector.tracked("Backend Error")] == ["7"]
    assert segment_collector.tracked("Error Captured") == []
"""


# What sentry-python's own tests/__init__.py checks, and what a gevent app's conftest needs.
IMPORT_ORDER_CONFTEST = """
import sys

assert "sentry_sdk" not in sys.modules, "sentry_sdk was imported before the first conftest"
assert "sentry_segment.integration" not in sys.modules
"""


def test_the_plugin_is_registered_and_its_fixtures_work(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(IMPORT_ORDER_CONFTEST)
    pytester.makepyfile(test_users_app=USERS_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
