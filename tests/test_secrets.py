"""The write key never shows: not in logs at DEBUG, output, reprs, configuration errors nor
`check`, whatever variable it was put in."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import string
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry_segment import cli
from sentry_segment.config import ENV, ConfigurationError, resolve
from sentry_segment.secrets import mask
from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import script_environment

SECRET = "wk_NeverPrintMe_0123456789abcdef"

SCRIPT = textwrap.dedent(
    """
    import logging, os, sentry_sdk
    from sentry_segment import ConfigurationError, SegmentIntegration
    from tests.apps.errors import capture_error

    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("segment").setLevel(logging.DEBUG)
    integration = SegmentIntegration(timeout=1, max_retries=1)
    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[integration], debug=True)
    print(repr(integration), str(integration), integration.options, integration.options.describe())
    for number in range(6):
        capture_error(number)
        sentry_sdk.flush(timeout=5)
    print(integration.stats())
    for bad in ({"projects": {"1": {"write_key": os.environ["SENTRY_SEGMENT_WRITE_KEY"] + "!"}}},
                {"write_key": os.environ["SENTRY_SEGMENT_WRITE_KEY"] + " "},
                {"rate_limit": os.environ["SENTRY_SEGMENT_WRITE_KEY"]}):
        try:
            SegmentIntegration(**bad)
        except ConfigurationError as error:
            print(repr(error), error)
    """
)


def test_the_write_key_never_appears_in_any_output(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    segment.respond_next(1, 400)
    segment.respond_next(1, 503)
    environ = script_environment(segment.host, sentry.dsn(), SENTRY_SEGMENT_WRITE_KEY=SECRET)
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    output = finished.stdout + finished.stderr
    assert "making request" in output, "the segment logger did not log at DEBUG"
    assert "[sentry] DEBUG" in output, "sentry-sdk did not log at DEBUG"
    assert "ConfigurationError" in output
    assert "'delivered': 5" in output
    assert {batch.write_key for batch in segment.batches()} == {SECRET}
    encoded = base64.b64encode(f"{SECRET}:".encode()).decode()
    for form in (SECRET, encoded, SECRET[:-4]):
        assert form not in output


# Every variable (and keyword argument) a write key could be pasted into by mistake.
WRONG_PLACES = sorted(set(ENV) - {"write_key", "projects"})
write_keys = st.text(string.ascii_letters + string.digits, min_size=20, max_size=40).filter(
    lambda key: (
        any(c.isalpha() for c in key)
        and (any(c.isdigit() for c in key) or (key != key.lower() and key != key.upper()))
    )
)


def check_output(environ: dict[str, str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, environ), contextlib.redirect_stderr(err):
        cli.main(["check"], out=out)
    return out.getvalue() + err.getvalue()


@given(
    secret=write_keys,
    option=st.sampled_from(WRONG_PLACES),
    where=st.sampled_from(["no write key", "another write key", "a per-project key"]),
)
def test_a_write_key_in_any_wrong_variable_is_never_echoed(
    secret: str, option: str, where: str
) -> None:
    environ = {ENV[option]: secret}
    if where == "another write key":
        environ[ENV["write_key"]] = "wk_Another_0123456789abcdef"
    elif where == "a per-project key":
        environ[ENV["projects"]] = json.dumps({"1": {"write_key": secret}})
    shown = []
    try:
        resolve(environ=environ)
    except ConfigurationError as error:
        shown.append(f"{error!r} {error}")
    try:
        resolve(environ={}, **{option: secret})
    except ConfigurationError as error:
        shown.append(f"{error!r} {error}")
    shown.append(check_output(environ))
    for text in shown:
        assert secret not in text
        assert secret[:-4] not in text


def test_check_masks_a_write_key_in_an_option_that_accepts_it() -> None:
    # A slug and an event name pass their checks: check prints them, masked.
    output = check_output({ENV["sentry_org"]: SECRET, ENV["event_name"]: SECRET})
    assert SECRET not in output
    assert output.count(mask(SECRET)) == 2


def test_a_storage_password_in_the_wrong_variable_is_masked() -> None:
    with pytest.raises(ConfigurationError) as raised:
        resolve(environ={ENV["host"]: "redis://:hunter2-password@localhost:6379/0"})
    assert "hunter2" not in str(raised.value)
    assert "****" in str(raised.value)
