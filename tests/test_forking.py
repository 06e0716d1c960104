"""Forking servers: every forwarded event from every process arrives, for real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sentry_segment.testing import SegmentCollector, SentryRecorder

from .support import (
    assert_each_delivered_once,
    free_port,
    http_status,
    script_environment,
    sentry_received,
    stop_process_group,
    wait_until_listening,
)

ROOT = Path(__file__).resolve().parent.parent


def environment(segment: SegmentCollector, sentry: SentryRecorder, **extra: str) -> dict[str, str]:
    return script_environment(
        segment.host, sentry.dsn(), **{"SENTRY_SEGMENT_RATE_LIMIT": "off", **extra}
    )


def delivered_user_ids(segment: SegmentCollector, count: int) -> Counter[str]:
    messages = segment.wait_for_messages(count, timeout=20)
    assert len({m["messageId"] for m in messages}) == len(messages)
    return Counter(m["userId"] for m in messages)


@pytest.fixture
def gunicorn(segment: SegmentCollector, sentry: SentryRecorder) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        "tests.apps.gunicorn_app:app",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=environment(segment, sentry))
    try:
        wait_until_listening(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_gunicorn_preload_workers_deliver_every_event(
    gunicorn: str, segment: SegmentCollector
) -> None:
    worker_pids = {get_pid(gunicorn) for _ in range(20)}
    statuses = [http_status(f"{gunicorn}/fail/{n}") for n in range(30)]
    assert statuses == [500] * 30
    user_ids = delivered_user_ids(segment, 31)
    assert user_ids == Counter(["master", *(str(n) for n in range(30))])
    assert len(worker_pids) >= 1


def get_pid(base: str, delay: float = 0.0) -> int:
    with urllib.request.urlopen(f"{base}/pid?delay={delay}", timeout=10) as response:
        return int(response.read())


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, multiprocessing, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])

    capture = capture_error

    def task(number):
        capture(f"pool-{number}")
        sentry_sdk.flush(timeout=10)
        return os.getpid()

    if __name__ == "__main__":
        capture("parent-before")
        sentry_sdk.flush(timeout=10)
        child = os.fork()
        if child == 0:
            for number in range(5):
                capture(f"child-{number}")
            sentry_sdk.flush(timeout=10)
            os._exit(0)
        os.waitpid(child, 0)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pids = set(pool.map(task, range(6)))
        capture("parent-after")
    """
)


def test_os_fork_and_multiprocessing_children_deliver_every_event(
    segment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> None:
    script = tmp_path / "forking.py"
    script.write_text(FORK_SCRIPT)
    subprocess.run(
        [sys.executable, str(script)], env=environment(segment, sentry), check=True, timeout=60
    )
    expected = ["parent-before", "parent-after"]
    expected += [f"child-{n}" for n in range(5)] + [f"pool-{n}" for n in range(6)]
    assert delivered_user_ids(segment, len(expected)) == Counter(expected)


@pytest.fixture
def celery_worker(
    segment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> Iterator[Path]:
    folder = tmp_path / "broker"
    command = [
        sys.executable, "-m", "celery", "-A", "tests.apps.celery_app", "worker",
        "--pool", "prefork", "--concurrency", "2", "--loglevel", "warning",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    env = environment(segment, sentry, TEST_BROKER_FOLDER=str(folder))
    worker = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        yield folder
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_celery_prefork_tasks_deliver_every_event(
    celery_worker: Path, segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    from tests.apps.celery_app import make_app

    producer = make_app(str(celery_worker))
    for number in range(8):
        producer.send_task("fail", args=[f"task-{number}"])
    expected = Counter(["celery-main", *(f"task-{n}" for n in range(8))])
    received = Counter(str(event["user"]["id"]) for event in sentry.wait_for_events(9, 20))
    # Exactly what Sentry received (a pool process's transport may lose an event under load).
    assert set(received) <= set(expected)
    assert max(received.values()) == 1
    assert delivered_user_ids(segment, sum(received.values())) == received


C_FORK_SCRIPT = textwrap.dedent(
    """
    import ctypes, json, os, signal, sys, time, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
    integration = sentry_sdk.get_client().get_integration(SegmentIntegration)

    # The parent forwards first, so the child inherits a worker that fork() did not copy.
    capture_error("parent")
    assert integration.flush(timeout=5)

    # fork() as C code calls it (uWSGI, C extensions): no os.register_at_fork hook runs in the
    # child. PyDLL, not CDLL: CDLL releases the GIL around the call, and a child forked while
    # another thread (sentry-sdk's, ours, Segment's) had taken it can never take it back.
    child = ctypes.PyDLL(None).fork()
    if child == 0:
        signal.alarm(20)
        for number in range(10):
            capture_error(f"child-{number}")
        started = time.monotonic()
        flushed = integration.flush(timeout=3)
        seconds = time.monotonic() - started
        sentry_sdk.flush(timeout=3)
        with open(os.environ["TEST_RESULT"], "w") as result:
            json.dump({"flushed": flushed, "seconds": seconds}, result)
        os._exit(0)
    assert child > 0
    deadline = time.monotonic() + 30
    while os.waitpid(child, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            sys.exit("the child did not exit")
        time.sleep(0.05)
    """
)


def test_a_fork_from_c_without_at_fork_hooks_delivers_the_childs_events(
    segment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> None:
    script = tmp_path / "c_fork.py"
    script.write_text(C_FORK_SCRIPT)
    result = tmp_path / "child.json"
    env = environment(segment, sentry, TEST_RESULT=str(result))
    subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, check=True, timeout=60)
    child = json.loads(result.read_text())
    received = sentry_received(sentry, Counter(["parent", *(f"child-{n}" for n in range(10))]))
    messages = segment.wait_for_messages(len(received), timeout=2)
    assert child["flushed"], (
        f"the child's flush() gave up after {child['seconds']:.2f} s; "
        f"Segment has {len(messages)} of the {len(received)} events"
    )
    assert_each_delivered_once(messages, received)


def wait_for_workers(base: str, count: int, timeout: float = 30) -> set[str]:
    """Ask /pid four at a time until count different workers answered; their PIDs."""
    deadline = time.monotonic() + timeout
    pids: set[str] = set()
    while len(pids) < count:
        assert time.monotonic() < deadline, f"only workers {pids} answered"
        with ThreadPoolExecutor(4) as pool:
            pids.update(pool.map(lambda _: str(get_pid(base, delay=0.05)), range(4)))
    return pids


def fail_concurrently(base: str, count: int) -> list[int]:
    """GET /fail/0 ... /fail/<count-1>, four at a time, each keeping its worker 50 ms."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda n: http_status(f"{base}/fail/{n}?delay=0.05"), range(count)))


def pids_by_kind(sentry: SentryRecorder) -> dict[str, set[str]]:
    """The PIDs that captured the "startup" events and the requests' (the app tags each event)."""
    pids: dict[str, set[str]] = {}
    for event in sentry.events():
        kind = "startup" if event["user"]["id"] == "startup" else "request"
        pids.setdefault(kind, set()).add(str(event.get("tags", {}).get("pid")))
    return pids


def uwsgi_binary() -> str:
    found = shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")
    assert found, "uwsgi is not installed (pip install --group tests)"
    return found


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--enable-threads"], id="enable-threads"),
        # uWSGI 2.0.31 runs Python threads without the flag ("stub option, true by default"),
        # though uwsgi.opt then has no "enable-threads": nothing to warn about.
        pytest.param([], id="no-flags"),
    ],
)
def test_uwsgi_workers_forked_from_c_deliver_every_event(
    flags: list[str], segment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> None:
    # uWSGI loads the app in the master, which forwards an error at import, then forks two
    # workers from C: Python's at-fork hooks do not run in them (not without
    # --py-call-uwsgi-fork-hooks).
    port = free_port()
    log = tmp_path / "uwsgi.log"
    command = [
        uwsgi_binary(), "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", "2",
        "--home", sys.prefix, "--module", "tests.apps.prefork_app:app", "--need-app",
        "--die-on-term", "--disable-logging", "--logto", str(log), *flags,
    ]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=ROOT, env=environment(segment, sentry), start_new_session=True
    )
    try:
        wait_until_listening(port, server)
        workers = wait_for_workers(f"http://127.0.0.1:{port}", 2)
        assert fail_concurrently(f"http://127.0.0.1:{port}", 20) == [500] * 20
        # While the workers run: their background threads run between requests.
        delivered = segment.wait_for_messages(21, timeout=10)
    finally:
        stop_process_group(server)
    # sentry-sdk 2.75 sends a forked process's first event only with its next one or at exit:
    # its queue still lists the parent's worker thread as the one to wake. So Sentry's count
    # is read once the workers have exited.
    received = sentry_received(sentry, Counter(["startup", *(str(n) for n in range(20))]))
    assert_each_delivered_once(delivered, received)
    assert len(segment.messages()) == len(delivered)
    pids = pids_by_kind(sentry)
    assert pids["startup"] == {str(server.pid)}
    assert pids["request"] == workers, f"requests were served by {pids['request']}"
    assert str(server.pid) not in workers
    # No Python traceback, and no line of ours through sentry-sdk's logger (threads can run
    # here). sentry-sdk's own uWSGI warning is not ours: 3.0 logs it there, 2.x warns.
    output = log.read_text(errors="replace")
    markers = ("Traceback", "sentry-segment:")
    assert [marker for marker in markers if marker in output] == [], output


FAKE_UWSGI_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, sys, types, warnings
    import sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import capture_error

    # The module uWSGI embeds in its Python (import uwsgi), as an app in a worker sees it.
    uwsgi = types.ModuleType("uwsgi")
    uwsgi.version = b"2.0.21"
    uwsgi.has_threads = 0
    uwsgi.opt = {"master": True, "processes": b"2", "module": b"app:app"}
    sys.modules["uwsgi"] = uwsgi

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    # In place of the handler and filter sentry-sdk gives its logger on import, which print
    # only with debug=True.
    records = Records()
    sdk_logger = logging.getLogger("sentry_sdk.errors")
    sdk_logger.handlers, sdk_logger.filters = [records], []
    sdk_logger.setLevel(logging.WARNING)
    warnings.simplefilter("ignore")  # sentry-sdk's own uWSGI warning
    sentry_sdk.init(dsn=os.environ["TEST_DSN"], integrations=[SegmentIntegration()])
    integration = sentry_sdk.get_client().get_integration(SegmentIntegration)
    for number in range(3):
        capture_error(f"user-{number}")
    flushed = integration.flush(timeout=5)
    print(json.dumps({"flushed": flushed, "warnings": records.messages}))
    """
)


def test_uwsgi_without_python_threads_warns_once_and_still_delivers_at_flush(
    segment: SegmentCollector, sentry: SentryRecorder
) -> None:
    # Not a real uWSGI: the one pip installs (2.0.31) always runs Python threads. In 2.0.21
    # without --enable-threads uwsgi.has_threads is 0 (threads run only while a request runs
    # Python) and uwsgi.opt lacks "enable-threads"; in 2.0.31 without the flag opt lacks it
    # too, yet threads run and has_threads is 1 (the real no-flags test above, which must
    # not warn): only has_threads tells.
    env = environment(segment, sentry)
    completed = subprocess.run(
        [sys.executable, "-c", FAKE_UWSGI_SCRIPT],
        env=env, cwd=ROOT, check=True, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["flushed"]
    assert sorted(m["userId"] for m in segment.messages()) == ["user-0", "user-1", "user-2"]
    about_uwsgi = [
        message
        for message in result["warnings"]
        if message.startswith("sentry-segment:") and "uwsgi" in message.lower()
    ]
    assert len(about_uwsgi) == 1, result["warnings"]


GUNICORN_CONFIG = textwrap.dedent(
    """
    import sys, threading

    def post_fork(server, worker):
        # In the worker, after the fork and before gevent monkey-patches it: a thread alive now
        # was started by an at-fork hook, a real OS thread in what becomes a gevent world.
        others = [t for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            print(f"THREAD BEFORE GEVENT PATCHED: {others!r}", file=sys.stderr, flush=True)
    """
)


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_gevent_workers_deliver_every_event_and_print_no_traceback(
    preload: bool, segment: SegmentCollector, sentry: SentryRecorder, tmp_path: Path
) -> None:
    # With --preload the master imports the app (and forwards an error) before forking, and
    # each worker monkey-patches only after the fork; without, each worker imports it after.
    port = free_port()
    config = tmp_path / "gunicorn_config.py"
    config.write_text(GUNICORN_CONFIG)
    # One connection per worker at a time: concurrent requests spread over both workers.
    # (It also keeps two greenlets from capturing the first event of a preloaded worker at
    # once: sentry-sdk 2.75 then deadlocks the worker on its transport's lock, a real lock
    # made in the master and held across Thread.start(), which under gevent switches.)
    command = [
        sys.executable, "-m", "gunicorn", "--config", str(config), "--worker-class", "gevent",
        "--workers", "2", "--worker-connections", "1", "--graceful-timeout", "5",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        *(["--preload"] if preload else []), "tests.apps.prefork_app:app",
    ]  # fmt: skip
    # The default rate limit, so the limiter's storage is made and used in the workers too.
    env = environment(segment, sentry, SENTRY_SEGMENT_RATE_LIMIT="200/second")
    startups = 1 if preload else 2
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr, start_new_session=True)
        try:
            wait_until_listening(port, server)
            workers = wait_for_workers(f"http://127.0.0.1:{port}", 2)
            assert fail_concurrently(f"http://127.0.0.1:{port}", 20) == [500] * 20
            delivered = segment.wait_for_messages(startups + 20, timeout=10)
        finally:
            stop_process_group(server)
        stderr.seek(0)
        log = stderr.read()
    expected = Counter(["startup"] * startups + [str(n) for n in range(20)])
    received = sentry_received(sentry, expected)
    assert_each_delivered_once(delivered, received)
    assert len(segment.messages()) == len(delivered)
    pids = pids_by_kind(sentry)
    assert pids["request"] == workers, f"requests were served by {pids['request']}"
    assert pids["startup"] == ({str(server.pid)} if preload else workers)
    markers = ("Traceback", "Exception ignored", "THREAD BEFORE GEVENT", "sentry_sdk.errors")
    assert [marker for marker in markers if marker in log] == [], log
