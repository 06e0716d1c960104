"""Small helpers the tests share."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pytest
import sentry_sdk
from hypothesis import strategies as st

if TYPE_CHECKING:
    from sentry_segment.testing import SentryRecorder


def free_port() -> int:
    """A loopback port nothing listens on (until a test starts something there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(
    port: int, process: Optional[subprocess.Popen[Any]] = None, timeout: float = 30
) -> None:
    """Wait until something accepts connections on this loopback port, while process lives."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process is not None:
                assert process.poll() is None, f"{process.args} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"nothing listened on port {port}"
            time.sleep(0.1)


def http_status(
    url: str, opener: Optional[urllib.request.OpenerDirector] = None, **headers: str
) -> int:
    """The HTTP status a GET of url answers, error statuses included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM a server started with start_new_session=True, then SIGKILL what is left of its
    process group (workers included) once it exited or after timeout seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def sentry_received(
    sentry: SentryRecorder, expected_user_ids: Counter[str], timeout: float = 10
) -> Counter[tuple[str, str]]:
    """The (event ID, user ID) of every event Sentry received, once it received exactly the
    expected user IDs."""
    events = sentry.wait_for_events(sum(expected_user_ids.values()), timeout=timeout)
    received = Counter((str(e["event_id"]), str(e["user"]["id"])) for e in events)
    user_ids = Counter(user_id for _, user_id in received.elements())
    assert user_ids == expected_user_ids, f"Sentry received {user_ids}"
    return received


def assert_each_delivered_once(
    messages: list[dict[str, Any]], received: Counter[tuple[str, str]]
) -> None:
    """Segment's messages are Sentry's events, each exactly once (by messageId and userId)."""
    delivered = Counter((str(m.get("messageId")), str(m.get("userId"))) for m in messages)
    arrived = sum((delivered & received).values())
    missing = sorted(user_id for _, user_id in (received - delivered).elements())
    extra = sorted(user_id for _, user_id in (delivered - received).elements())
    assert delivered == received, (
        f"Segment has {arrived} of the {sum(received.values())} events Sentry received; "
        f"missing users {missing}; duplicated or unknown users {extra}"
    )


def same(left: Any, right: Any) -> bool:
    """Deep equality where NaN equals NaN (the deep copy of a NaN is not == to it)."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


ROOT = str(Path(__file__).resolve().parent.parent)
# The write key the suite's integrations use (the collector records, never checks, it).
WRITE_KEY = "wk_TestWriteKey_0123456789abcdef"


def script_environment(host: str, dsn: str, **settings: str) -> dict[str, str]:
    """The environment of a test's subprocess: this checkout importable, SegmentIntegration()
    aimed at host with the suite's write key, Sentry's DSN in TEST_DSN, then settings."""
    return {
        **os.environ,
        "PYTHONPATH": ROOT,
        "SENTRY_SEGMENT_WRITE_KEY": WRITE_KEY,
        "SENTRY_SEGMENT_HOST": host,
        "TEST_DSN": dsn,
        **settings,
    }


def start_transaction(name: str) -> Any:
    """A root span to capture inside: start_transaction on sentry-sdk 2.x, start_span on 3.x,
    which removed start_transaction."""
    start = getattr(sentry_sdk, "start_transaction", None) or sentry_sdk.start_span
    return start(name=name)


def user_info_options() -> dict[str, Any]:
    """The init options that keep user.ip_address in the event: data_collection from 2.65,
    send_default_pii before it (an unknown option is a TypeError there)."""
    if "data_collection" in sentry_sdk.consts.DEFAULT_OPTIONS:
        return {"data_collection": {"user_info": True}}
    return {"send_default_pii": True}


def pii_options() -> dict[str, Any]:
    """send_default_pii=True: request cookies, headers, query strings and the client address in
    Sentry's event. sentry-sdk 3's beta replaced it by data_collection, which these tests do
    not map: there they skip."""
    if "send_default_pii" not in sentry_sdk.consts.DEFAULT_OPTIONS:
        pytest.skip("this sentry-sdk has no send_default_pii (3.0 beta: data_collection)")
    return {"send_default_pii": True}


# Arbitrary JSON-ish values, and the awkward ones an event can carry: lone surrogates, huge
# strings, NaN and infinity, bytes, non-string keys.
untrusted_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=20)
    | st.sampled_from(
        [0, "", "\ud800", "\ud800\udfff", "x" * 50_000, "\u2603" * 20_000, math.nan, math.inf]
    )
)
untrusted_values = st.recursive(
    untrusted_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans(), inner, max_size=4)
    ),
    max_leaves=25,
)

# Sentry events as anything may hand them over: arbitrary keys and values, and ones shaped
# like an error with a user, a request and an exception whose parts are arbitrary.
_event_keys = st.sampled_from(
    [
        "event_id",
        "timestamp",
        "level",
        "environment",
        "release",
        "transaction",
        "user",
        "request",
        "exception",
        "type",
        "tags",
    ]
)
events = st.dictionaries(_event_keys, untrusted_values, max_size=10) | st.fixed_dictionaries(
    {
        "user": st.fixed_dictionaries({"id": untrusted_values, "ip_address": untrusted_values}),
        "exception": st.fixed_dictionaries(
            {
                "values": st.lists(
                    st.dictionaries(
                        st.sampled_from(["type", "value", "mechanism"]), untrusted_values
                    )
                    | st.fixed_dictionaries(
                        {
                            "type": st.text(),
                            "value": st.text(),
                            "mechanism": st.fixed_dictionaries({"handled": untrusted_values}),
                        }
                    ),
                    max_size=3,
                )
                | untrusted_values
            }
        ),
        "request": st.fixed_dictionaries(
            {
                "url": untrusted_values,
                "query_string": untrusted_values,
                "method": untrusted_values,
                "headers": untrusted_values,
            }
        ),
        "timestamp": untrusted_values,
        "event_id": untrusted_values,
        "tags": untrusted_values
        | st.dictionaries(st.text(), untrusted_scalars, max_size=30)
        | st.lists(st.tuples(untrusted_scalars, untrusted_scalars), max_size=30),
    }
)


@contextlib.contextmanager
def uvicorn_serving(app: Any) -> Iterator[str]:
    """An ASGI app under a real uvicorn in a thread of this process, on a free port: its base
    URL while the block runs."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
