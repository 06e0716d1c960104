"""The pytest plugin, as an application's own test suite would use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sentry_sdk.consts import DEFAULT_OPTIONS

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


DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def documented_files(document: Path) -> dict[str, str]:
    """The blocks of a document whose info string names a file: ```python file=shop/urls.py"""
    text = document.read_text()
    return dict(re.findall(r"^```\w+ file=(\S+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL))


def test_the_documented_django_recipe_passes_two_tests_in_a_row(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_django")
    pytest.importorskip("django")
    if "send_default_pii" not in DEFAULT_OPTIONS:
        pytest.skip("the recipe shows sentry-sdk 2's send_default_pii, which 3.0's beta replaced")
    files = documented_files(DOCS)
    assert set(files) == {
        "pytest.ini",
        "shop/settings.py",
        "shop/urls.py",
        "tests/test_checkout.py",
    }
    for name, content in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (pytester.path / "shop" / "__init__.py").write_text("")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# An application initialised at import, in a conftest, with the ini option: each test sees
# only its own message, even when the one before left its own unflushed.
MODULE_LEVEL_CONFTEST = (
    IMPORT_ORDER_CONFTEST
    + """
import sentry_sdk
from sentry_segment import SegmentIntegration

sentry_sdk.init(integrations=[SegmentIntegration()])  # SENTRY_DSN etc. from the ini option
"""
)

MODULE_LEVEL_TESTS = """
import os

import sentry_sdk


def capture_for(user_id):
    sentry_sdk.set_user({"id": user_id})
    try:
        raise ValueError(user_id)
    except ValueError:
        sentry_sdk.capture_exception()


def test_one_leaves_its_error_unflushed(segment_collector):
    assert os.environ["SENTRY_SEGMENT_HOST"] == segment_collector.host
    capture_for("first")


def test_two_sees_only_its_own(segment_collector, sentry_recorder):
    capture_for("second")
    sentry_sdk.flush()
    assert [m["userId"] for m in segment_collector.messages()] == ["second"]
    assert [e["user"]["id"] for e in sentry_recorder.events()] == ["second"]
"""


def test_the_ini_option_sets_the_environment_before_conftests(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsentry_segment_environment = true\n")
    pytester.makeconftest(MODULE_LEVEL_CONFTEST)
    pytester.makepyfile(test_module_level_app=MODULE_LEVEL_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_without_the_ini_option_the_environment_is_untouched(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_untouched="""
import os

def test_no_dsn_was_set():
    assert "SENTRY_DSN" not in os.environ
    assert "SENTRY_SEGMENT_HOST" not in os.environ
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
