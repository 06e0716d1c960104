"""pytest plugin of the injected parity pass: every sentry-sdk client gets a SegmentIntegration.

Loaded with ``-p parity_inject`` (parity/run.py puts this folder on PYTHONPATH). When pytest
imports it, it imports only the standard library and pytest: sentry-python's
``tests/__init__.py`` asserts that sentry_sdk is not imported yet when its conftest loads.

In ``pytest_configure``, after the initial conftests (which import sentry_sdk) and before
collection, it starts a loopback Segment collector in a process of its own (parity_collector.py)
and replaces ``sentry_sdk.client.setup_integrations``, which ``_Client._init_impl`` looks up on
every client it sets up: ``sentry_sdk.init``'s, those tests build with ``Client(...)`` directly,
and unpickled ones. Each is given a real ``SegmentIntegration(write_key=..., host=<the
collector>)`` at the end of its integrations, in ``client.options["integrations"]`` too,
whatever ``default_integrations`` says: as an application that lists it would have it.

This is the equivalent of replacing ``sentry_sdk.client.get_options``, one call later: there,
a Python frame of ours would stand between ``_Client.__init__`` and ``_get_options``, whose
deprecation warnings (``stacklevel=2``) would then name this file instead of sentry_sdk's.

After each test's call it checks, without creating scopes, that the clients on the global,
isolation and current scopes carry the integration. At the end it sends one canary error through
a client of its own, and writes what it did and what the collector had received by then to the
JSON file named by PARITY_STATS_FILE.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import IO, Any, Callable, Optional

import pytest

STATS_FILE_ENV = "PARITY_STATS_FILE"
COLLECTOR_LOG_ENV = "PARITY_COLLECTOR_LOG"
WRITE_KEY = "parity_write_key"
CANARY_USER_ID = "parity-canary"
START_TIMEOUT = 60.0
STATS_TIMEOUT = 15.0


class _Injection:
    def __init__(self) -> None:
        self.collector: Optional[subprocess.Popen[str]] = None
        self.host: Optional[str] = None
        self.original: Optional[Callable[..., dict[str, Any]]] = None
        self.clients_injected = 0
        self.clients_already_had = 0
        self.uninjected: list[str] = []

    def start_collector(self) -> str:
        log_path = os.environ.get(COLLECTOR_LOG_ENV)
        log: Optional[IO[str]] = open(log_path, "a") if log_path else None  # noqa: SIM115
        try:
            self.collector = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("parity_collector.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log if log is not None else subprocess.DEVNULL,
                text=True,
            )
        finally:
            if log is not None:
                log.close()
        line = self._read_line(START_TIMEOUT)
        if line is None:
            self.stop_collector()
            raise pytest.UsageError("parity_inject: the Segment collector did not start")
        host = json.loads(line)["host"]
        assert isinstance(host, str)
        return host

    def _read_line(self, timeout: float) -> Optional[str]:
        assert self.collector is not None
        assert self.collector.stdout is not None
        ready, _, _ = select.select([self.collector.stdout], [], [], timeout)
        if not ready:
            return None
        return self.collector.stdout.readline() or None

    def collector_stats(self) -> Optional[dict[str, Any]]:
        if self.collector is None or self.collector.poll() is not None:
            return None
        assert self.collector.stdin is not None
        try:
            self.collector.stdin.write("stats\n")
            self.collector.stdin.flush()
        except OSError:
            return None
        line = self._read_line(STATS_TIMEOUT)
        if line is None:
            return None
        stats = json.loads(line)
        assert isinstance(stats, dict)
        return stats

    def stop_collector(self) -> None:
        if self.collector is None:
            return
        if self.collector.stdin is not None:
            with contextlib.suppress(OSError):
                self.collector.stdin.close()
        try:
            self.collector.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.collector.kill()
            self.collector.wait(timeout=10)
        if self.collector.stdout is not None:
            self.collector.stdout.close()


_injection = _Injection()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if "sentry_sdk" not in sys.modules:
        # Importing it here would break the suite's own start-up check; patching later would
        # miss clients made at collection. Neither is parity, so refuse.
        raise pytest.UsageError(
            "parity_inject: sentry_sdk was not imported by the initial conftests; "
            "run pytest from the sentry-sdk sdist with paths under its tests/"
        )
    import sentry_sdk.client

    from sentry_segment import SegmentIntegration

    original = getattr(sentry_sdk.client, "setup_integrations", None)
    if original is None:
        raise pytest.UsageError(
            "parity_inject: this sentry-sdk has no sentry_sdk.client.setup_integrations to hook"
        )
    host = _injection.host = _injection.start_collector()
    # Stopped at exit, after the atexit hooks registered later (Segment's client joins its
    # consumer then, sentry-sdk flushes): they still find the collector there.
    atexit.register(_injection.stop_collector)
    _injection.original = original

    def setup_integrations(integrations: Any, *args: Any, **kwargs: Any) -> Any:
        listed = list(integrations or ())
        if any(isinstance(integration, SegmentIntegration) for integration in listed):
            _injection.clients_already_had += 1
        else:
            listed.append(SegmentIntegration(write_key=WRITE_KEY, host=host))
            options = kwargs.get("options")
            if isinstance(options, dict):
                # A new list, as if the application had listed it: the test's own list,
                # which it may compare later, stays as it was given.
                options["integrations"] = listed
            _injection.clients_injected += 1
        return original(listed, *args, **kwargs)

    sentry_sdk.client.setup_integrations = setup_integrations  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:
        if _lacks_integration():
            _injection.uninjected.append(item.nodeid)


def _lacks_integration() -> bool:
    """Whether a client on the global, isolation or current scope has no SegmentIntegration.

    Reads the scopes' variables instead of sentry_sdk.get_client(), which would create them.
    """
    from sentry_sdk import scope
    from sentry_sdk.client import _Client

    scopes = (scope._global_scope, scope._isolation_scope.get(), scope._current_scope.get())
    for each in scopes:
        client = getattr(each, "client", None)
        if isinstance(client, _Client) and "segment" not in client.integrations:
            return True
    return False


def _canary() -> Optional[str]:
    """After the suite, one error with a user ID from a client built as the tests build theirs
    (so injected by the same hook), flushed: it must reach the collector, or the pass proved
    nothing. Returns what went wrong, or None; the collector's stats then show it arrived."""
    try:
        import sentry_sdk
        from sentry_sdk.transport import Transport
        from sentry_sdk.utils import event_from_exception

        class _Discard(Transport):
            def capture_envelope(self, envelope: Any) -> None:
                pass

        client = sentry_sdk.Client(transport=_Discard(), default_integrations=False)
        try:
            raise ValueError("parity canary")
        except ValueError:
            event, hint = event_from_exception(sys.exc_info())
        event["user"] = {"id": CANARY_USER_ID}
        if client.capture_event(event, hint) is None:
            return "the canary event was not sent"
        client.flush(timeout=10)
        client.close()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    if _injection.original is None:
        return
    canary_error = _canary()
    collector = _injection.collector_stats()
    path = os.environ.get(STATS_FILE_ENV)
    if path:
        report = {
            "host": _injection.host,
            "clients_injected": _injection.clients_injected,
            "clients_already_had": _injection.clients_already_had,
            "tests_with_a_client_without_integration": _injection.uninjected,
            "canary_error": canary_error,
            "collector": collector,
        }
        Path(path).write_text(json.dumps(report, indent=2))
