"""The sentry-segment command, run as a real process against a loopback collector."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from sentry_segment.testing import SegmentCollector

from .support import free_port

KEY = "wk_CliTestKey_0123456789"
OTHER = "wk_CliOtherKey_9876543210"
COMMAND = Path(sys.executable).parent / "sentry-segment"


def run(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_SEGMENT_")}
    environ.update(environment)
    return subprocess.run(
        [str(COMMAND), *args], check=False, env=environ, capture_output=True, text=True, timeout=60
    )


def test_check_prints_the_effective_configuration_with_keys_masked() -> None:
    projects = json.dumps({"7": {"write_key": OTHER}, "8": {"enabled": False}})
    done = run(
        "check",
        SENTRY_SEGMENT_WRITE_KEY=KEY,
        SENTRY_SEGMENT_REGION="eu",
        SENTRY_SEGMENT_PROJECTS=projects,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.split("configuration OK")[0])
    assert printed["host"] == "https://events.eu1.segmentapis.com"
    assert printed["write_key"] == "****6789"
    assert printed["effective_per_project"] == {
        "7": {"enabled": True, "write_key": "****3210"},
        "8": {"enabled": False, "write_key": "****6789"},
    }
    assert KEY not in done.stdout + done.stderr
    assert OTHER not in done.stdout + done.stderr
    assert (printed["anonymous_id"], printed["event_types"], printed["profile_url"]) == (
        [], ["error"], None,
    )  # fmt: skip


def test_check_shows_the_options_beyond_the_forwarder() -> None:
    template = "https://app.segment.com/acme/unify/spaces/prod/explorer/{user_id}"
    done = run(
        "check",
        SENTRY_SEGMENT_WRITE_KEY=KEY,
        SENTRY_SEGMENT_ANONYMOUS_ID="cookie:ajs_anonymous_id,tag:anonymous_id",
        SENTRY_SEGMENT_EVENT_TYPES="error,message",
        SENTRY_SEGMENT_INCLUDE="stacktrace",
        SENTRY_SEGMENT_PROFILE_URL=template,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.split("configuration OK")[0])
    assert printed["anonymous_id"] == ["cookie:ajs_anonymous_id", "tag:anonymous_id"]
    assert printed["event_types"] == ["error", "message"]
    assert printed["include"] == ["stacktrace"]
    assert printed["profile_url"] == template


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        (
            {"SENTRY_SEGMENT_WRITE_KEY": KEY, "SENTRY_SEGMENT_PROJECTS": "{oops"},
            "SENTRY_SEGMENT_PROJECTS",
        ),
        (
            {"SENTRY_SEGMENT_WRITE_KEY": KEY, "SENTRY_SEGMENT_RATE_LIMIT": KEY},
            "SENTRY_SEGMENT_RATE_LIMIT",
        ),
    ],
)
def test_check_fails_with_one_line_naming_the_variable(
    environment: dict[str, str], variable: str
) -> None:
    done = run("check", **environment)
    assert done.returncode == 2
    assert variable in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert KEY not in done.stderr


def test_send_test_event_posts_one_error_captured_and_reports_the_status(
    segment_collector: SegmentCollector,
) -> None:
    done = run(
        "send-test-event",
        "--user-id",
        "42",
        SENTRY_SEGMENT_WRITE_KEY=KEY,
        SENTRY_SEGMENT_HOST=segment_collector.host,
    )
    assert done.returncode == 0, done.stderr
    assert "HTTP 200" in done.stdout
    [message] = segment_collector.tracked("Error Captured", userId="42")
    assert message["properties"]["exceptionType"] == "ValueError"
    assert message["messageId"] == message["properties"]["eventId"]
    assert message["messageId"] in done.stdout
    assert segment_collector.batches()[0].write_key == KEY
    assert KEY not in done.stdout + done.stderr


def test_send_test_event_uses_the_projects_override(segment_collector: SegmentCollector) -> None:
    projects = json.dumps({"7": {"write_key": OTHER}, "8": {"enabled": False}})
    environment = {
        "SENTRY_SEGMENT_WRITE_KEY": KEY,
        "SENTRY_SEGMENT_HOST": segment_collector.host,
        "SENTRY_SEGMENT_PROJECTS": projects,
    }
    assert run("send-test-event", "--project", "7", **environment).returncode == 0
    assert [batch.write_key for batch in segment_collector.batches()] == [OTHER]
    disabled = run("send-test-event", "--project", "8", **environment)
    assert disabled.returncode == 1
    assert "disabled" in disabled.stderr


def test_a_refused_or_unreachable_segment_is_explained_in_one_line_with_host_status_and_hint(
    segment_collector: SegmentCollector,
) -> None:
    segment_collector.respond_next(1, 401)
    refused = run(
        "send-test-event", SENTRY_SEGMENT_WRITE_KEY=KEY, SENTRY_SEGMENT_HOST=segment_collector.host
    )
    [line] = refused.stderr.strip().splitlines()
    assert segment_collector.host in line
    assert "HTTP 401" in line
    assert "SENTRY_SEGMENT_WRITE_KEY" in line
    assert "SENTRY_SEGMENT_REGION" in line
    unreachable = run(
        "send-test-event",
        SENTRY_SEGMENT_WRITE_KEY=KEY,
        SENTRY_SEGMENT_HOST="http://127.0.0.1:9",
        SENTRY_SEGMENT_TIMEOUT="2",
    )
    [line] = unreachable.stderr.strip().splitlines()
    assert "could not reach http://127.0.0.1:9" in line
    assert "SENTRY_SEGMENT_HOST" in line
    assert refused.returncode == unreachable.returncode == 1
    assert KEY not in refused.stdout + refused.stderr + unreachable.stdout + unreachable.stderr


def test_check_without_a_write_key_exits_1_naming_the_variable() -> None:
    done = run("check")
    assert done.returncode == 1
    assert "SENTRY_SEGMENT_WRITE_KEY" in done.stderr
    assert "configuration OK" not in done.stdout
    disabled = run("check", SENTRY_SEGMENT_ENABLED="false")
    assert disabled.returncode == 0, disabled.stderr
    assert "forwarding disabled" in disabled.stdout


def test_check_lists_every_misspelt_variable_with_the_likely_one() -> None:
    done = run("check", SENTRY_SEGMENT_WRITEKEY=KEY, SENTRY_SEGMENT_REGOIN="eu")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert (
        "SENTRY_SEGMENT_REGOIN is not a sentry-segment setting; did you mean "
        "SENTRY_SEGMENT_REGION?" in lines[0]
    )
    assert "did you mean SENTRY_SEGMENT_WRITE_KEY?" in lines[1]
    assert "no write key" in lines[2]
    assert KEY not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("arguments", "environment", "expected"),
    [
        ((), {"SENTRY_SEGMENT_ENABLED": "false", "SENTRY_SEGMENT_WRITE_KEY": KEY},
         "forwarding is disabled (SENTRY_SEGMENT_ENABLED=false)"),
        ((), {}, "no write key for events: set SENTRY_SEGMENT_WRITE_KEY"),
        (("--project", "8"),
         {"SENTRY_SEGMENT_WRITE_KEY": KEY, "SENTRY_SEGMENT_PROJECTS": '{"8": {"enabled": false}}'},
         "forwarding is disabled for project 8 by its override in SENTRY_SEGMENT_PROJECTS"),
    ],
)  # fmt: skip
def test_send_test_event_says_why_it_sends_nothing(
    arguments: tuple[str, ...], environment: dict[str, str], expected: str
) -> None:
    done = run("send-test-event", *arguments, **environment)
    assert done.returncode == 1
    assert done.stderr.strip() == f"sentry-segment: {expected}"
    assert "None" not in done.stderr


def test_schema_prints_the_json_schema_of_the_configured_properties() -> None:
    plain = json.loads(run("schema").stdout)
    assert plain["$schema"] == "http://json-schema.org/draft-07/schema#"
    properties = plain["properties"]["properties"]
    assert "exceptionType" in properties["required"]
    assert "tags" not in properties["properties"]
    shaped = json.loads(
        run(
            "schema",
            SENTRY_SEGMENT_INCLUDE="tags,handled,sentry_url",
            SENTRY_SEGMENT_SENTRY_ORG="acme",
            SENTRY_SEGMENT_EVENT_NAME="Backend Error",
        ).stdout
    )
    assert shaped["title"] == "Backend Error"
    assert {"tags", "handled", "sentryUrl"} <= set(shaped["properties"]["properties"]["required"])


def test_schema_takes_an_anonymous_id_only_with_the_option_and_lists_the_frames() -> None:
    plain = Draft7Validator(json.loads(run("schema").stdout))
    extended = json.loads(
        run(
            "schema",
            SENTRY_SEGMENT_ANONYMOUS_ID="cookie:ajs_anonymous_id",
            SENTRY_SEGMENT_INCLUDE="stacktrace",
        ).stdout
    )
    assert "cookie:ajs_anonymous_id" in extended["description"]
    frames = extended["properties"]["properties"]["properties"]["stacktrace"]
    assert (frames["type"], frames["maxItems"]) == ("array", 10)
    anonymous = {"userId": None, "anonymousId": "abc", "properties": {}}
    signed_in = {"userId": "42", "anonymousId": None, "properties": {}}
    nobody = {"userId": None, "anonymousId": None, "properties": {}}

    def identity_errors(validator: Draft7Validator, message: dict[str, Any]) -> list[str]:
        return [e.message for e in validator.iter_errors(message) if e.validator == "anyOf"]

    assert identity_errors(plain, signed_in) == []
    assert identity_errors(plain, anonymous) != []
    assert identity_errors(Draft7Validator(extended), anonymous) == []
    assert identity_errors(Draft7Validator(extended), nobody) != []


def test_listen_prints_one_line_per_arriving_message() -> None:
    port = free_port()
    listener = subprocess.Popen(
        [str(COMMAND), "listen", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        banner = listener.stdout.readline()
        assert f"SENTRY_SEGMENT_HOST=http://127.0.0.1:{port}" in banner
        for user in ("42", "7"):
            sent = run(
                "send-test-event",
                "--user-id",
                user,
                SENTRY_SEGMENT_WRITE_KEY=KEY,
                SENTRY_SEGMENT_HOST=f"http://127.0.0.1:{port}",
            )
            assert sent.returncode == 0, sent.stderr
        lines = [listener.stdout.readline() for _ in range(2)]
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(timeout=10)
    assert listener.returncode == 0
    for line, user in zip(lines, ("42", "7")):
        assert line.startswith("Error Captured")
        assert f"userId={user} " in line
        assert "exceptionType=ValueError" in line
        assert re.search(r"eventId=[0-9a-f]{32}$", line.strip())


def test_python_dash_m_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sentry_segment", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.count("forwarded: Segment has it") == 2
