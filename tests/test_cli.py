"""The sentry-segment command, run as a real process against a loopback collector."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonschema import Draft7Validator

from sentry_segment import cli
from sentry_segment.config import EU_HOST, US_HOST
from sentry_segment.testing import SegmentCollector

from .conftest import ROOT
from .support import free_port

KEY = "wk_CliTestKey_0123456789"
OTHER = "wk_CliOtherKey_9876543210"
COMMAND = Path(sys.executable).parent / "sentry-segment"


def run(
    *args: str, command: Path = COMMAND, **environment: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    environ.update(environment)
    return subprocess.run(
        [str(command), *args], check=False, env=environ, capture_output=True, text=True, timeout=60
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


@contextlib.contextmanager
def listening(command: Path = COMMAND) -> Iterator[tuple[int, Callable[[], str]]]:
    """`sentry-segment listen` on a free port: (its port, a reader of its next line once its
    banner was read). The banner is the first line read; the process is stopped after."""
    port = free_port()
    listener = subprocess.Popen(
        [str(command), "listen", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None
    try:
        yield port, listener.stdout.readline
    finally:
        listener.send_signal(signal.SIGTERM)
        _, errors = listener.communicate(timeout=10)
    assert listener.returncode == 0, errors


def test_listen_prints_one_line_per_arriving_message() -> None:
    with listening() as (port, next_line):
        banner = next_line()
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
        lines = [next_line() for _ in range(2)]
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


def test_check_names_a_missing_dsn_and_the_effective_region() -> None:
    without_dsn = run("check", SENTRY_SEGMENT_WRITE_KEY=KEY)
    assert without_dsn.returncode == 0, without_dsn.stderr
    assert "warning: SENTRY_DSN is not set" in without_dsn.stderr
    assert json.loads(without_dsn.stdout.split("configuration OK")[0])["region"] == "us"
    with_dsn = run("check", SENTRY_SEGMENT_WRITE_KEY=KEY, SENTRY_DSN="http://public@127.0.0.1:9/1")
    assert "SENTRY_DSN" not in with_dsn.stderr
    # What to do about errors without a user ID, whatever else is configured.
    assert "set_user" in with_dsn.stderr
    assert "send_default_pii=True" in with_dsn.stderr


@pytest.mark.parametrize(
    ("host", "region", "warned"),
    [
        ("http://segment.internal.example", None, True),
        ("http://127.0.0.1:8765", None, False),
        ("http://localhost:8765", None, False),
        ("https://segment.internal.example", None, False),
        (EU_HOST, "eu", False),
    ],
)
def test_check_warns_when_the_write_key_would_travel_in_clear_text(
    host: str,
    region: object,
    warned: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTRY_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SENTRY_SEGMENT_HOST", host)
    assert cli.main(["check"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out.split("configuration OK")[0])["region"] == region
    assert ("clear text" in printed.err) is warned
    assert KEY not in printed.out + printed.err


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["listen", "--port", "99999"], "--port"),
        (["listen", "--port", "0"], "--port"),
        (["listen", "--port", "-1"], "--port"),
        (["listen", "--port", "http"], "--port"),
        (["send-test-event", "--project", "abc"], "--project"),
        (["send-test-event", "--project", "-7"], "--project"),
        (["send-test-event", "--user-id", ""], "--user-id"),
        (["send-test-event", "--user-id", "  "], "--user-id"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(
    arguments: list[str],
    named: str,
    segment_collector: SegmentCollector,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTRY_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("SENTRY_SEGMENT_HOST", segment_collector.host)
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert f"argument {named}" in error
    assert "Traceback" not in error
    assert segment_collector.batches() == []


def test_listen_says_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("listen", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"sentry-segment: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr


def test_send_test_event_json_is_one_parseable_object(segment_collector: SegmentCollector) -> None:
    environment = {"SENTRY_SEGMENT_WRITE_KEY": KEY, "SENTRY_SEGMENT_HOST": segment_collector.host}
    sent = run("send-test-event", "--json", "--user-id", "42", **environment)
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    [message] = segment_collector.tracked("Error Captured", userId="42")
    assert report == {
        "accepted": True,
        "error": None,
        "host": segment_collector.host,
        "message": message,
        "status": 200,
    }
    segment_collector.respond_next(1, 503)
    failed = run("send-test-event", "--json", **environment)
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert report["accepted"] is False
    assert report["status"] == 503
    assert "posted once and did not retry" in report["error"]
    assert [batch.status for batch in segment_collector.batches()] == [200, 503]
    assert KEY not in sent.stdout + sent.stderr + failed.stdout + failed.stderr


def test_a_failing_segment_is_not_said_to_have_been_retried(
    segment_collector: SegmentCollector,
) -> None:
    segment_collector.respond_next(1, 503)
    done = run(
        "send-test-event", SENTRY_SEGMENT_WRITE_KEY=KEY, SENTRY_SEGMENT_HOST=segment_collector.host
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "HTTP 503" in line
    assert "retried" not in line.replace("did not retry", "")
    assert len(segment_collector.batches()) == 1


def test_the_success_line_warns_that_the_us_host_takes_an_eu_key_too() -> None:
    us = cli._accepted(200, US_HOST)
    assert "EU" in us
    assert "SENTRY_SEGMENT_REGION=eu" in us
    assert "Debugger" in us
    elsewhere = cli._accepted(200, EU_HOST)
    assert "Debugger" in elsewhere
    assert "SENTRY_SEGMENT_REGION" not in elsewhere


COMMANDS_FOR_A_CLOSED_PIPE = [
    pytest.param(["check"], id="check"),
    pytest.param(["schema"], id="schema"),
    pytest.param(["send-test-event"], id="send-test-event"),
    pytest.param(["listen", "--port", "0"], id="listen"),  # replaced by a free port below
    pytest.param(["demo"], id="demo"),
    pytest.param(["--help"], id="help"),
]


@pytest.mark.parametrize("arguments", COMMANDS_FOR_A_CLOSED_PIPE)
@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_every_command_survives_a_reader_that_has_gone(
    arguments: list[str], unbuffered: str, segment_collector: SegmentCollector
) -> None:
    """`sentry-segment X | head -1` where head has already exited: the first write fails.
    Buffered, it fails when the output is flushed; unbuffered, at the first print."""
    arguments = [str(free_port()) if a == "0" else a for a in arguments]
    reader, writer = os.pipe()
    os.close(reader)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    environ.update(
        SENTRY_SEGMENT_WRITE_KEY=KEY,
        SENTRY_SEGMENT_HOST=segment_collector.host,
        PYTHONUNBUFFERED=unbuffered,
    )
    try:
        done = subprocess.run(
            [str(COMMAND), *arguments],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=environ,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    # argparse's --help swallows the error itself (0); the commands say the pipe closed (141).
    assert done.returncode in (0, cli.EXIT_CLOSED_PIPE), done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr


def test_schema_piped_into_head_never_prints_a_traceback() -> None:
    """The race as a shell meets it: head exits after one line, while schema still writes."""
    script = f"for i in $(seq 10); do {COMMAND} schema | head -1 >/dev/null; done"
    done = subprocess.run(
        ["sh", "-c", script],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stderr == ""


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `pip install <this checkout>`, no extras: its bin/."""
    where = tmp_path_factory.mktemp("plain-install")
    venv.create(where, with_pip=True)
    bin_folder = where / "bin"
    subprocess.run(
        [str(bin_folder / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return bin_folder


def test_a_plain_install_has_no_test_dependencies(plain_install: Path) -> None:
    for module in ("pytest", "pytest_httpserver", "werkzeug"):
        found = subprocess.run(
            [str(plain_install / "python"), "-c", f"import {module}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert found.returncode == 1, module


def test_listen_on_a_plain_install_prints_a_line_per_message(plain_install: Path) -> None:
    command = plain_install / "sentry-segment"
    with listening(command) as (port, next_line):
        assert f"127.0.0.1:{port}" in next_line()
        sent = run(
            "send-test-event",
            "--user-id",
            "42",
            command=command,
            SENTRY_SEGMENT_WRITE_KEY=KEY,
            SENTRY_SEGMENT_HOST=f"http://127.0.0.1:{port}",
        )
        assert sent.returncode == 0, sent.stderr
        line = next_line()
    assert line.startswith("Error Captured")
    assert "userId=42 " in line


def test_demo_and_check_on_a_plain_install(plain_install: Path) -> None:
    command = plain_install / "sentry-segment"
    demo = run("demo", command=command)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.count("forwarded: Segment has it") == 2
    check = run("check", command=command, SENTRY_SEGMENT_WRITE_KEY=KEY)
    assert check.returncode == 0, check.stderr
    assert "SENTRY_DSN is not set" in check.stderr


def test_listen_s_loopback_sentry_lets_an_application_forward_without_a_sentry_project() -> None:
    application = (
        "import sentry_sdk\n"
        "from sentry_segment import SegmentIntegration\n"
        "sentry_sdk.init(integrations=[SegmentIntegration()])\n"
        "sentry_sdk.set_user({'id': 'listen-1'})\n"
        "try:\n    raise KeyError('x')\n"
        "except KeyError:\n    sentry_sdk.capture_exception()\n"
        "sentry_sdk.flush(timeout=5)\n"
    )
    with listening() as (port, next_line):
        dsn = next_line().split("SENTRY_DSN=", 1)[1].split()[0]
        done = subprocess.run(
            [sys.executable, "-c", application],
            env={
                **os.environ,
                "SENTRY_DSN": dsn,
                "SENTRY_SEGMENT_WRITE_KEY": KEY,
                "SENTRY_SEGMENT_HOST": f"http://127.0.0.1:{port}",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        line = next_line()
    assert line.startswith("Error Captured")
    assert "userId=listen-1 " in line
