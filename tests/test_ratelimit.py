"""The moving-window limit: never more than the limit in any window, per organization."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from limits import parse_many

from sentry_segment.config import ConfigurationError, mask_uri, resolve
from sentry_segment.ratelimit import (
    NAMESPACE,
    REDIS_ACL,
    REDIS_CLUSTER_ACL,
    STORAGE_RETRY_SECONDS,
    RateLimit,
    describe_storage_failure,
)
from sentry_segment.stats import Stats
from sentry_segment.testing import SegmentCollector

from .conftest import InitSentry, raise_and_capture
from .redis_server import (
    RedisClusterServers,
    RedisSentinelServers,
    RedisServer,
    make_tls_files,
    require_redis_server,
)
from .support import free_port


def limit_of(text: str) -> RateLimit:
    return RateLimit(tuple(parse_many(text)), Stats())


def allow(limit: RateLimit, organization: str) -> bool:
    """One event: whether it may go now."""
    return limit.allow_many(organization, 1) == 1


def test_allows_the_limit_then_refuses_until_the_window_moves() -> None:
    limit = limit_of("3/second")
    started = time.monotonic()
    assert [allow(limit, "org") for _ in range(5)] == [True, True, True, False, False]
    time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    assert not allow(limit, "org")
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert allow(limit, "org")


def test_organizations_have_separate_budgets() -> None:
    limit = limit_of("1/second")
    assert allow(limit, "a")
    assert allow(limit, "b")
    assert not allow(limit, "a")


def test_every_limit_of_several_must_allow_and_a_refusal_spends_nothing() -> None:
    limit = limit_of("2/second;3/minute")
    assert [allow(limit, "org") for _ in range(3)] == [True, True, False]
    time.sleep(1.05)
    assert [allow(limit, "org") for _ in range(3)] == [True, False, False]


def test_no_limits_allows_everything() -> None:
    limit = RateLimit((), Stats())
    assert all(allow(limit, "org") for _ in range(10_000))


def test_a_steady_flood_never_exceeds_the_limit_in_any_one_second_span() -> None:
    limit = limit_of("20/second")
    allowed_at: list[float] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        if allow(limit, "org"):
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
    decisions = [allow(limiter, "org") for _ in range(5) for limiter in (first, second)]
    assert decisions.count(True) == 5


def test_an_unreachable_storage_falls_back_to_this_process_and_comes_back(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    limit = RateLimit(tuple(parse_many("3/second")), stats, redis_server.uri)
    # No sentry_sdk.init(debug=True): the warnings show without debug.
    with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
        assert [allow(limit, "org") for _ in range(4)] == [True, True, True, False]
        assert stats.snapshot()["rate_limit_fallback"] == 0

        redis_server.stop()
        time.sleep(1.05)
        assert [allow(limit, "org") for _ in range(4)] == [True, True, True, False]
        assert stats.snapshot()["rate_limit_fallback"] == 4

        redis_server.start()
        time.sleep(STORAGE_RETRY_SECONDS + 0.1)
        assert allow(limit, "org")
        assert stats.snapshot()["rate_limit_fallback"] == 4
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sentry-segment")]
    assert len([line for line in lines if "unreachable" in line]) == 1
    assert len([line for line in lines if "is back" in line]) == 1


FLEET_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import DroppingTransport

    integration = SegmentIntegration(rate_limit="50/second")
    sentry_sdk.init(
        dsn=os.environ["TEST_DSN"], transport=DroppingTransport, integrations=[integration]
    )
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
    assert all(report["rate_limit_fallback"] == 0 for report in reports), reports
    # At least two windows' worth: on a loaded machine the first decisions came late enough
    # that the third window opened only after the last capture (exactly 100 seen).
    assert 100 <= forwarded <= 150
    assert len(segment.wait_for_messages(forwarded)) == forwarded


# --- A shared storage that misbehaves: bounded, counted, named, and no secret shown. ---

LIMIT = "20/second"
PASSWORD = "Pa55-w0rd-never-shown"
WRONG_PASSWORD = "Wr0ng-pa55-never-shown"
SECRETS = (PASSWORD, WRONG_PASSWORD, "narrow-pa55-never-shown", "least-pa55-never-shown")


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis with a password, a user without script permissions and a least-privilege one."""
    server = RedisServer(
        require_redis_server(),
        directory=tmp_path_factory.mktemp("guarded"),
        arguments=[
            "--requirepass", PASSWORD,
            "--user", "narrow", "on", ">narrow-pa55-never-shown", "~*", "+get", "+ping",
            "--user", "least", "on", ">least-pa55-never-shown", *REDIS_ACL.split(),
        ],
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis that speaks only TLS, with a certificate from a self-signed CA."""
    binary = require_redis_server()
    directory = tmp_path_factory.mktemp("tls")
    server = RedisServer(binary, directory=directory, tls=make_tls_files(directory))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(require_redis_server(), tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def storage_servers(
    guarded_redis: RedisServer, tls_redis: RedisServer
) -> tuple[RedisServer, RedisServer]:
    return guarded_redis, tls_redis


def connections_received(server: RedisServer) -> int:
    info = server.client(password=PASSWORD).info("stats")
    return int(info["total_connections_received"])


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "sentry_sdk.errors" and record.levelno == logging.WARNING
    ]


def offer_batches(limit: RateLimit, seconds: float) -> tuple[int, int, float]:
    """Batches of 5 every 50 ms: how many were offered and allowed, and the slowest decision."""
    offered = allowed = 0
    slowest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        allowed += limit.allow_many("org", 5)
        slowest = max(slowest, time.monotonic() - started)
        offered += 5
        time.sleep(0.05)
    return offered, allowed, slowest


def check_command(monkeypatch: pytest.MonkeyPatch, storage: str) -> tuple[int, str]:
    """`sentry-segment check` in this process: its exit code and everything it printed."""
    from sentry_segment import cli

    monkeypatch.setenv("SENTRY_SEGMENT_WRITE_KEY", "wk_RateLimitCheck_0123456789")
    monkeypatch.setenv("SENTRY_SEGMENT_RATE_LIMIT", LIMIT)
    monkeypatch.setenv("SENTRY_SEGMENT_RATE_LIMIT_STORAGE", storage)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["check"], out=out)
    return code, out.getvalue() + err.getvalue()


FAILURES: dict[str, tuple[Callable[[RedisServer, RedisServer], str], list[str]]] = {
    # case: (storage URI from the servers, words the warning and `check` must say)
    "unreachable": (lambda g, t: f"redis://127.0.0.1:{free_port()}/0", ["unreachable"]),
    "cluster-unbuildable": (
        lambda g, t: f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
        ["cluster misconfigured or unreachable"],
    ),
    "cluster-on-a-plain-redis": (
        lambda g, t: f"redis+cluster://:{PASSWORD}@127.0.0.1:{g.port}",
        ["cluster misconfigured or unreachable", "Cluster mode is not enabled"],
    ),
    "sentinel-without-service": (
        lambda g, t: f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()}",
        ["sentinel misconfigured", "/SERVICE"],
    ),
    "wrong-password": (
        lambda g, t: f"redis://:{WRONG_PASSWORD}@127.0.0.1:{g.port}/0",
        ["authentication failed"],
    ),
    "wrong-password-in-query": (
        lambda g, t: f"redis://127.0.0.1:{g.port}/0?password={WRONG_PASSWORD}",
        ["authentication failed"],
    ),
    "no-script-permission": (
        lambda g, t: f"redis://narrow:narrow-pa55-never-shown@127.0.0.1:{g.port}/0",
        ["permission denied", "evalsha", REDIS_ACL],
    ),
    "tls-unverified": (lambda g, t: t.uri, ["TLS verification failed", "ssl_ca_certs"]),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failing_storage_gives_the_local_limit_counted_and_named(
    case: str,
    guarded_redis: RedisServer,
    tls_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_uri, words = FAILURES[case]
    uri = make_uri(guarded_redis, tls_redis)
    stats = Stats()
    limit = RateLimit(tuple(parse_many(LIMIT)), stats, uri)
    connections_before = connections_received(guarded_redis)
    with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
        offered, allowed, slowest = offer_batches(limit, 1.8)
    # One 0.25 s attempt at most per call, and the storage is asked (or built) again about once
    # a second, not for each of the ~40 batches.
    assert slowest < 1.0
    assert connections_received(guarded_redis) - connections_before <= 8
    # The local moving window: 20 in the first second, up to 20 more once it moved (fewer
    # when the first decisions came late on a loaded machine); never the ~180 offered.
    assert 20 <= allowed <= 40
    assert stats.snapshot()["rate_limit_fallback"] == offered
    warnings = storage_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert all(word in warnings[0] for word in words), warnings[0]
    assert mask_uri(uri) in warnings[0]

    code, printed = check_command(monkeypatch, uri)
    assert code == 1
    assert all(word in printed for word in words), printed
    for secret in SECRETS:
        assert secret not in warnings[0] + printed


def test_the_storage_is_built_again_with_back_off(
    guarded_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A cluster URI aimed at a plain Redis cannot be built: each try connects once or twice.
    uri = f"redis+cluster://:{PASSWORD}@127.0.0.1:{guarded_redis.port}"
    limit = RateLimit(tuple(parse_many(LIMIT)), Stats(), uri)
    before = connections_received(guarded_redis)
    with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
        offer_batches(limit, 3.2)  # tries at 0, 1 and 3 s
    tries = connections_received(guarded_redis) - before
    assert 3 <= tries <= 6
    assert len(storage_warnings(caplog)) == 1


@pytest.mark.parametrize("storage", ["acl-user", "tls", "cluster-acl-user"])
def test_a_least_privilege_user_and_tls_share_one_limit(
    storage: str,
    guarded_redis: RedisServer,
    tls_redis: RedisServer,
    redis_cluster: RedisClusterServers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tls_redis.tls is not None
    if storage == "cluster-acl-user":
        # The ACL lines the docs give, and nothing more.
        for node in redis_cluster.nodes:
            node.client().acl_setuser(
                "least", reset=True, enabled=True, passwords=["+least-pa55-never-shown"]
            )
            node.client().execute_command(
                "ACL", "SETUSER", "least", *REDIS_ACL.split(), *REDIS_CLUSTER_ACL.split()
            )
    uri = {
        "acl-user": f"redis://least:least-pa55-never-shown@127.0.0.1:{guarded_redis.port}/0",
        "tls": f"{tls_redis.uri}/0?ssl_ca_certs={tls_redis.tls['ca.crt']}",
        "cluster-acl-user": redis_cluster.uri.replace("://", "://least:least-pa55-never-shown@"),
    }[storage]
    stats = Stats()
    first, second = (RateLimit(tuple(parse_many("5/second")), stats, uri) for _ in "ab")
    organization = f"org-{uuid.uuid4().hex}"
    decisions = [allow(limiter, organization) for _ in range(5) for limiter in (first, second)]
    assert decisions.count(True) == 5
    assert stats.snapshot()["rate_limit_fallback"] == 0
    code, printed = check_command(monkeypatch, uri)
    assert code == 0, printed
    assert "configuration OK" in printed
    assert all(secret not in printed for secret in SECRETS)


@pytest.mark.parametrize(
    "case", ["unreachable", "wrong-password", "no-script-permission", "tls-unverified"]
)
def test_a_failing_storage_at_start_forwards_the_local_limit(
    case: str,
    storage_servers: tuple[RedisServer, RedisServer],
    init_sentry: InitSentry,
    segment: SegmentCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_uri, words = FAILURES[case]
    with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
        integration = init_sentry(rate_limit=LIMIT, rate_limit_storage=make_uri(*storage_servers))
        for number in range(60):
            raise_and_capture(ValueError(number), user={"id": str(number)})
        assert integration.flush(timeout=5)
    assert len(segment.wait_for_messages(20)) == 20
    time.sleep(0.2)
    assert len(segment.messages()) == 20
    stats = integration.stats()
    assert stats["forwarded"] == 20
    assert stats["rate_limited"] == 40
    assert stats["rate_limit_fallback"] == 60
    warnings = [line for line in storage_warnings(caplog) if "rate-limit storage" in line]
    assert len(warnings) == 1
    assert all(word in warnings[0] for word in words), warnings[0]
    assert all(secret not in warnings[0] for secret in SECRETS)


def test_sentinel_failover_falls_back_then_shares_the_new_primary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = RedisSentinelServers(require_redis_server(), tmp_path)
    servers.start()
    try:
        stats = Stats()
        items = tuple(parse_many(LIMIT))
        fleet = [RateLimit(items, stats, servers.uri) for _ in range(2)]
        with caplog.at_level(logging.WARNING, logger="sentry_sdk.errors"):
            assert sum(limiter.allow_many("org", 15) for limiter in fleet) == 20
            assert stats.snapshot()["rate_limit_fallback"] == 0

            servers.primary.kill()
            slowest = 0.0
            deadline = time.monotonic() + 20
            while servers.primary_port() != servers.replica.port or not slowest:
                started = time.monotonic()
                for limiter in fleet:
                    limiter.allow_many("org", 5)
                slowest = max(slowest, time.monotonic() - started)
                assert time.monotonic() < deadline, "no failover"
                time.sleep(0.05)
            assert slowest < 1.5  # two processes' decisions, each one bounded attempt
            assert stats.snapshot()["rate_limit_fallback"] > 0

            # Past the next probe, both use the new primary: one limit again.
            time.sleep(STORAGE_RETRY_SECONDS + 1.05)
            fallback = stats.snapshot()["rate_limit_fallback"]
            assert sum(limiter.allow_many("org", 15) for limiter in fleet) == 20
            assert stats.snapshot()["rate_limit_fallback"] == fallback
        warnings = storage_warnings(caplog)
        assert any("unreachable" in line for line in warnings)
        assert "is back" in warnings[-1]
    finally:
        servers.stop()


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("redis://:s3cret-pw@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("redis://user:s3cret-pw@h:1/0", "redis://user:****@h:1/0"),
        ("redis://s3cret-pw@h:1", "redis://****@h:1"),
        ("redis://h:1/0?password=s3cret-pw&db=1", "redis://h:1/0?password=****&db=1"),
        (
            "redis+sentinel://:s3cret-pw@a:1,b:2/svc?sentinel_password=s3cret-pw",
            "redis+sentinel://:****@a:1,b:2/svc?sentinel_password=****",
        ),
        ("rediss://h:1/0?ssl_password=s3cret-pw", "rediss://h:1/0?ssl_password=****"),
        ("redis://:s3c/ret?p#w@h:1", "redis://:****@h:1"),
        ("redis:s3cret-pw@h:1", "redis:****"),
        ("s3cret-pw@h:1", "****"),
        ("memcached://h:11211", "memcached://h:11211"),
    ],
)
def test_storage_uris_are_shown_without_their_secrets(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


@given(
    password=st.text(min_size=6).filter(lambda p: p.strip() == p and "\x00" not in p),
    place=st.sampled_from(["userinfo", "query", "malformed"]),
)
def test_any_storage_password_is_masked_everywhere(password: str, place: str) -> None:
    uri = {
        "userinfo": f"redis://user:{password}@127.0.0.1:6379/0",
        "query": f"redis://127.0.0.1:6379/0?db=0&password={password}",
        "malformed": f"redis:{password}@127.0.0.1:6379",
    }[place]
    assume("*" not in password)
    assume(not ({"&", "@"} & set(password)) or place != "query")
    assume(password not in uri.replace(password, ""))
    assume(password not in repr(resolve(write_key="wk_MaskTest_0123456789", environ={})))
    assert password not in mask_uri(uri)
    if place == "malformed":
        assume("://" not in f"redis:{password}")
        with pytest.raises(ConfigurationError) as refused:
            resolve(write_key="wk_MaskTest_0123456789", rate_limit_storage=uri, environ={})
        assert password not in str(refused.value)
    else:
        options = resolve(write_key="wk_MaskTest_0123456789", rate_limit_storage=uri, environ={})
        assert password not in repr(options)
        assert password not in json.dumps(options.describe(), default=str)
    failure = describe_storage_failure(ValueError(f"refused {password} at {uri}"), uri)
    assert password not in failure or place == "malformed"


# Each process captures about 60 errors a second against a shared 20/second, stamps when the
# worker decides each (before_forward runs just before the decision of its batch) and how long
# each waited in the queue, and flushes once while the parent holds the storage's fault.
FAULT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, sentry_sdk
    from sentry_segment import SegmentIntegration
    from tests.apps.errors import DroppingTransport

    waits = []

    def stamp(message, event):
        now = time.time()
        waits.append(now - float(event["tags"]["captured_at"]))
        message["properties"]["decidedAt"] = now
        return message

    integration = SegmentIntegration(rate_limit="20/second", before_forward=stamp)
    sentry_sdk.init(
        dsn=os.environ["TEST_DSN"], transport=DroppingTransport, integrations=[integration]
    )
    print("ready", flush=True)
    start_at, flush_at, end_at = map(float, sys.stdin.readline().split())
    time.sleep(max(0.0, start_at - time.time()))
    flushed = None
    last_fallback = [0, 0.0]
    number = 0
    while time.time() < end_at:
        if flushed is None and time.time() >= flush_at:
            began = time.monotonic()
            flushed = [integration.flush(timeout=2), time.monotonic() - began]
        fallback = integration.stats()["rate_limit_fallback"]
        if fallback != last_fallback[0]:
            last_fallback[:] = [fallback, time.time()]
        with sentry_sdk.new_scope() as scope:
            scope.set_user({"id": f"{os.getpid()}-{number}"})
            scope.set_tag("captured_at", repr(time.time()))
            try:
                raise ValueError(number)
            except ValueError:
                sentry_sdk.capture_exception()
        number += 1
        time.sleep(1 / 60)
    integration.flush(timeout=10)
    print(json.dumps({
        **integration.stats(), "flushed": flushed, "max_wait": max(waits),
        "last_fallback_at": last_fallback[1],
    }))
    """
)


def most_in_any_window(stamps: list[float], start: float, end: float, width: float = 0.8) -> int:
    """The most stamps in any window of ``width`` seconds that starts within [start, end).

    Narrower than the limit's one second: a stamp is taken before its batch is decided, up to
    0.2 s before on a loaded machine, so a one-second window of stamps could hold decisions
    of two windows of the limit."""
    inside = sorted(stamp for stamp in stamps if start <= stamp)
    return max(
        (
            len([s for s in inside[index:] if s < first + width])
            for index, first in enumerate(inside)
            if first < end
        ),
        default=0,
    )


@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL"])
def test_a_cluster_master_that_hangs_or_dies_costs_one_bounded_attempt(
    fault: str, redis_cluster: RedisClusterServers, segment: SegmentCollector
) -> None:
    processes_count, limit = 2, 20
    items = tuple(parse_many(LIMIT))
    master = redis_cluster.node_for("LIMITS:" + items[0].key_for(NAMESPACE, "127.0.0.1:public"))
    environ = {
        **os.environ,
        "SENTRY_SEGMENT_WRITE_KEY": "wk_ClusterFault_0123456789",
        "SENTRY_SEGMENT_HOST": segment.host,
        "SENTRY_SEGMENT_RATE_LIMIT_STORAGE": redis_cluster.uri,
        "TEST_DSN": f"http://public@127.0.0.1:{free_port()}/1",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FAULT_SCRIPT],
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes_count)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    start = time.time() + 0.3
    # A hung master answers again after 2.5 s; a killed one is restarted after 1.3 s and
    # serves about 2 s later (a restarted master waits before it takes writes).
    fault_at, flush_at = start + 1.5, start + 2.0
    end_at = start + (7.5 if fault == "SIGSTOP" else 8.5)
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(f"{start} {flush_at} {end_at}\n")
        process.stdin.flush()
    try:
        time.sleep(max(0.0, fault_at - time.time()))
        master.pause() if fault == "SIGSTOP" else master.kill()
        time.sleep(2.5 if fault == "SIGSTOP" else 1.3)
        master.resume() if fault == "SIGSTOP" else redis_cluster.restart(master)
        back_at = time.time()
        reports = [json.loads(process.communicate(timeout=60)[0]) for process in processes]
    finally:
        if master.process is None:
            redis_cluster.restart(master)
        else:
            master.resume()
    forwarded = sum(report["forwarded"] for report in reports)
    messages = segment.wait_for_messages(forwarded)
    assert len(messages) == forwarded
    stamps = [message["properties"]["decidedAt"] for message in messages]
    # Nothing waited long in the queue: the hung or dead master cost one 0.25 s attempt (0.25 s
    # waits measured; the bound leaves room for a loaded machine, where 1.3 s was seen; without
    # the fix events waited the whole fault, 2.5 s or more).
    assert max(report["max_wait"] for report in reports) < 1.8, reports
    # A flush during the fault handed everything to Segment in time, decided locally.
    assert all(report["flushed"][0] for report in reports), reports
    assert all(report["rate_limit_fallback"] > 0 for report in reports), reports
    # Forwarding went on during the fault, each process under its own limit: with the shared
    # budget spent, each had its own (its share of the last second counted) within a second.
    assert len([s for s in stamps if fault_at <= s < back_at]) >= limit
    assert most_in_any_window(stamps, start, end_at) <= processes_count * limit
    # Before the fault, and once every process decides on the storage again (at its first or
    # second probe after the master is back): one shared limit.
    assert most_in_any_window(stamps, start, fault_at - 1.0) <= limit
    recovered = max(report["last_fallback_at"] for report in reports)
    assert fault_at < recovered < back_at + 2 * STORAGE_RETRY_SECONDS + 0.5, reports
    assert most_in_any_window(stamps, recovered + 0.05, end_at) <= limit
    assert len([s for s in stamps if s >= recovered]) > 0


def test_the_docs_give_the_acl_lines_the_tests_use() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "how-it-works.md").read_text()
    assert REDIS_ACL in text
    assert f"`{REDIS_CLUSTER_ACL}`" in text
