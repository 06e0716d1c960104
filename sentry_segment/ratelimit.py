"""The per-organization limit on forwarded events: a `limits` strategy over a shared storage,
with the process's own memory as the fallback while that storage cannot be built or reached."""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional, TypeVar

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, MovingWindowSupport, Storage, storage_from_string
from limits.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from sentry_sdk.utils import logger

from .config import MEMORY_STORAGE
from .secrets import mask_uri, uri_secrets
from .stats import Stats

NAMESPACE = "sentry-segment"
# Every call to a shared storage gets one attempt of at most this long: no client-side retry.
STORAGE_TIMEOUT_SECONDS = 0.25
# The most the worker waits for building the storage's client, or for one decision (a few
# round trips) of a client that may try a failed node again inside one call: redis-py's
# cluster client first asks the cluster for its layout again. Not tighter: on a starved CPU a
# healthy storage's answer can take that long.
DECISION_DEADLINE_SECONDS = 2 * STORAGE_TIMEOUT_SECONDS
BUILD_DEADLINE_SECONDS = 4 * STORAGE_TIMEOUT_SECONDS
# While the storage does not answer, the worker asks it again this often (one real decision);
# events in between are limited in this process.
STORAGE_RETRY_SECONDS = 1.0
# A storage that cannot be built is built again after 1, 2, 4, ... s, at most this long apart.
STORAGE_REBUILD_MAX_SECONDS = 30.0
# Reads of the remaining budget before giving up on a batch that other processes contend for.
TAKE_ATTEMPTS = 3
# What a least-privilege Redis user needs for the moving window: the scripts and what they run.
REDIS_ACL = (
    "+evalsha +script|load +lindex +lrange +lpush +ltrim +expire ~LIMITS:LIMITER/sentry-segment/*"
)
# A Redis Cluster client also reads the cluster's layout and commands.
REDIS_CLUSTER_ACL = "+cluster|slots +command"


Result = TypeVar("Result")


class StorageTimeout(TimeoutError):
    """The storage's client did not finish a decision, or building itself, in time."""


def within(seconds: float, call: Callable[[], Result]) -> Result:
    """call's result, on a short-lived thread in this thread's context (the integration's quiet
    Sentry scopes), or StorageTimeout once it takes longer than ``seconds``; the rest of the
    call, each of its attempts bounded by the client's timeouts, is not waited for."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:
            outcome.append((False, error))
        finally:
            done.set()

    context = contextvars.copy_context()
    threading.Thread(
        target=context.run, args=(run,), name="sentry-segment-storage", daemon=True
    ).start()
    if not done.wait(seconds):
        raise StorageTimeout(f"no answer within {seconds:g} s")
    succeeded, value = outcome[0]
    if succeeded:
        return value  # type: ignore[no-any-return]
    raise value


def strategy_for(storage: Storage) -> RateLimiter:
    """A moving window where the storage supports one (memory, Redis), else a sliding-window
    counter (memcached), which approximates it."""
    if isinstance(storage, MovingWindowSupport):
        return MovingWindowRateLimiter(storage)
    return SlidingWindowCounterRateLimiter(storage)


def _accepts(function: Any, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _no_retry() -> dict[str, Any]:
    """redis-py's options for one attempt per call: its clients retry with back-off by default
    (the cluster client for seconds on a dead or hung node)."""
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        return {}
    return {"retry": Retry(NoBackoff(), 0)}


def storage_options(uri: str) -> dict[str, Any]:
    """What `limits` passes on to the storage's client so that each call is one bounded try."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "memcached":
        options: dict[str, Any] = {
            "connect_timeout": STORAGE_TIMEOUT_SECONDS,
            "timeout": STORAGE_TIMEOUT_SECONDS,
        }
        if "," in uri.split("://", 1)[1]:  # several hosts: pymemcache's HashClient retries
            options.update(retry_attempts=0, dead_timeout=STORAGE_RETRY_SECONDS)
        return options
    if not scheme.startswith("redis"):
        return {}
    bounded: dict[str, Any] = {
        "socket_timeout": STORAGE_TIMEOUT_SECONDS,
        "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        **_no_retry(),
    }
    if scheme == "redis+sentinel":
        # The sentinels themselves are asked with the same bound; the window is read from the
        # primary, where it is written, not from a replica that may lag behind it.
        return {**bounded, "sentinel_kwargs": dict(bounded), "use_replicas": False}
    if scheme == "redis+cluster":
        from redis.cluster import RedisCluster

        cluster = {**bounded}
        if not _accepts(RedisCluster.__init__, "retry"):
            cluster.pop("retry", None)
        if _accepts(RedisCluster.__init__, "cluster_error_retry_attempts") and (
            "retry" not in cluster or _redis_major() < 6
        ):
            # Before redis-py 6 this, not `retry`, set how often a command is tried again.
            cluster["cluster_error_retry_attempts"] = 0
        return cluster
    return bounded


def _redis_major() -> int:
    import redis

    try:
        return int(str(redis.__version__).split(".", 1)[0])
    except ValueError:
        return 0


def build_storage(uri: str) -> Storage:
    """The shared storage for a URI, every call bounded; raises what building it raised."""
    storage = storage_from_string(uri, wrap_exceptions=True, **storage_options(uri))
    assert isinstance(storage, Storage)
    return storage


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, what `limits` wrapped, and what each was raised from or during."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (
            getattr(current, "storage_error", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _named(error: BaseException, names: tuple[str, ...]) -> bool:
    return any(kind.__name__ in names for kind in type(error).__mro__)


class _Failure:
    """One kind of storage failure: the error classes (by name, so that no client library need
    be importable) or message markers that show it, and what to do about it."""

    def __init__(
        self,
        kind: str,
        names: tuple[str, ...],
        markers: tuple[str, ...] = (),
        hint: str = "",
        scheme: Optional[str] = None,
    ) -> None:
        self.kind, self.names, self.markers, self.hint, self.scheme = (
            kind, names, markers, hint, scheme,
        )  # fmt: skip

    def matches(self, causes: list[BaseException], texts: str, scheme: str) -> bool:
        if self.scheme is not None and scheme != self.scheme:
            return False
        return any(_named(cause, self.names) for cause in causes) or any(
            marker in texts for marker in self.markers
        )


# In order: a TLS failure is also a ConnectionError, a NOPERM also a ResponseError.
_FAILURES = (
    _Failure(
        "TLS verification failed",
        ("SSLCertVerificationError",),
        ("CERTIFICATE_VERIFY_FAILED",),
        "; check ssl_ca_certs= in the URI and that the server's certificate names its host",
    ),
    _Failure("TLS handshake failed", ("SSLError",), ("[SSL",), "; does the server speak TLS?"),
    _Failure(
        "authentication failed",
        ("AuthenticationError", "AuthenticationWrongNumberOfArgsError"),
        ("WRONGPASS", "NOAUTH", "invalid password", "invalid username"),
        "; check the user and password in the URI",
    ),
    _Failure(
        "permission denied",
        ("NoPermissionError",),
        ("NOPERM",),
        f"; the storage's user needs: ACL SETUSER <user> {REDIS_ACL}",
    ),
    _Failure(
        "sentinel misconfigured or unreachable",
        ("MasterNotFoundError", "ConfigurationError"),
        hint="; the URI must name the sentinels and the service, "
        "redis+sentinel://host:26379,host:26379/SERVICE, and a sentinel must know it",
        scheme="redis+sentinel",
    ),
    _Failure(
        "cluster misconfigured or unreachable",
        ("RedisClusterException", "ClusterError", "ClusterDownError"),
        ("cluster support disabled",),
        "; the URI must name reachable nodes of a Redis Cluster whose slots are all served",
        scheme="redis+cluster",
    ),
    _Failure(
        "unreachable",
        ("ConnectionError", "TimeoutError", "OSError", "MemcacheUnexpectedCloseError"),
    ),
    _Failure("misconfigured", ("ConfigurationError",)),
)


def describe_storage_failure(error: BaseException, uri: str) -> str:
    """What went wrong with the shared storage, named for the person who can fix it, with no
    secret of its URI: its kind, the library's own words, and what to check."""
    causes = [cause for cause in _causes(error) if not _named(cause, ("StorageError",))]
    causes = causes or [error]
    texts = " | ".join(str(cause) for cause in causes)
    scheme = uri.split("://", 1)[0].lower()
    failure = next((f for f in _FAILURES if f.matches(causes, texts, scheme)), None)
    shown = causes[0]
    if failure is not None:
        shown = next((cause for cause in causes if _named(cause, failure.names)), shown)
    text = (str(shown).strip().splitlines() or [""])[0]
    for secret in uri_secrets(uri):
        text = text.replace(secret, "****")
    detail = f"{type(shown).__name__}: {text[:200]}" if text else type(shown).__name__
    if failure is None:
        return f"failed ({detail})"
    hint = failure.hint
    if failure.kind == "permission denied" and scheme == "redis+cluster":
        hint += " " + REDIS_CLUSTER_ACL
    return f"{failure.kind} ({detail}){hint}"


def storage_problem(items: tuple[RateLimitItem, ...], uri: str) -> Optional[str]:
    """Build the shared storage and make one real decision against it on a throwaway key, as
    the worker would: None when that worked, else what is wrong (secrets masked)."""
    if not items or uri == MEMORY_STORAGE:
        return None
    try:
        limiter = strategy_for(build_storage(uri))
        throwaway = RateLimitItemPerSecond(1)
        if not limiter.hit(throwaway, NAMESPACE, f"check-{uuid.uuid4().hex}"):
            return f"rate-limit storage {mask_uri(uri)} refused a decision on a new key"
        limiter.get_window_stats(items[0], NAMESPACE, f"check-{uuid.uuid4().hex}")
    except Exception as error:
        return f"rate-limit storage {mask_uri(uri)}: {describe_storage_failure(error, uri)}"
    return None


def warn(message: str, *args: Any) -> None:
    """A warning through sentry-sdk's logger that shows without `debug=True` too: that
    logger's own filter drops everything unless debug is on, its handlers do not."""
    if not logger.isEnabledFor(logging.WARNING):
        return
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, args, None)
    logger.callHandlers(record)


class RateLimit:
    """Allows at most each item's amount of events in any window of its length.

    With a shared storage, every process's decisions also count in its own memory, so that no
    process forwards more than the limit in any window while the storage comes and goes. The
    storage is built on first use, on the worker.
    """

    def __init__(
        self, items: tuple[RateLimitItem, ...], stats: Stats, storage_uri: str = MEMORY_STORAGE
    ) -> None:
        self.items = items
        self._stats = stats
        self._storage_uri = storage_uri
        self._memory = MemoryStorage()
        self._local = strategy_for(self._memory)
        self._uses_shared = bool(items) and storage_uri != MEMORY_STORAGE
        # Other clients make one bounded attempt per call: no thread for them (it costs more
        # than the round trips of a decision).
        self._needs_deadline = storage_uri.lower().startswith("redis+cluster://")
        self._shared: Optional[RateLimiter] = None
        self._ask_shared_at = 0.0
        self._failed_builds = 0
        self._failing = False
        self._logged_failures: set[str] = set()

    def allow_many(self, organization: str, count: int) -> int:
        """How many of ``count`` events may go now; takes that many units from every limit."""
        if not self.items or count <= 0:
            return max(count, 0)
        if self._uses_shared and time.monotonic() >= self._ask_shared_at:
            shared = self._shared or self._build()
            if shared is not None:
                wanted = self._take(self._local, organization, count, dry_run=True)
                if wanted == 0:
                    return 0
                try:
                    allowed = self._decide(shared, organization, wanted)
                except Exception as error:
                    self._fall_back(error, STORAGE_RETRY_SECONDS)
                else:
                    self._hit(self._local, organization, allowed)
                    self._recovered()
                    return allowed
        if self._uses_shared:
            self._stats.add("rate_limit_fallback", count)
        return self._take(self._local, organization, count)

    def end_timer(self, deadline: float) -> None:
        """End the memory storage's expiry timer, a thread it starts 10 ms ahead after each
        use; the next use starts another (and expires what is due then)."""
        timer = getattr(self._memory, "timer", None)
        if isinstance(timer, threading.Timer) and timer is not threading.current_thread():
            timer.cancel()
            timer.join(max(0.0, deadline - time.monotonic()))

    @property
    def _where(self) -> str:
        return mask_uri(self._storage_uri)

    def _decide(self, shared: RateLimiter, organization: str, count: int) -> int:
        if self._needs_deadline:
            return within(
                DECISION_DEADLINE_SECONDS, lambda: self._take(shared, organization, count)
            )
        return self._take(shared, organization, count)

    def _build(self) -> Optional[RateLimiter]:
        uri = self._storage_uri
        try:
            self._shared = within(BUILD_DEADLINE_SECONDS, lambda: strategy_for(build_storage(uri)))
        except Exception as error:
            self._failed_builds += 1
            backoff = min(2.0 ** (self._failed_builds - 1), STORAGE_REBUILD_MAX_SECONDS)
            self._fall_back(error, backoff)
            return None
        self._failed_builds = 0
        return self._shared

    def _fall_back(self, error: Exception, retry_in: float) -> None:
        self._ask_shared_at = time.monotonic() + retry_in
        failure = describe_storage_failure(error, self._storage_uri)
        kind = failure.split(" (", 1)[0]
        # Once per kind of failure while the storage is away (a dead cluster master is first
        # unreachable, then the cluster says it is down): a flapping one logs no more.
        if kind not in self._logged_failures:
            self._logged_failures.add(kind)
            warn(
                "sentry-segment: rate-limit storage %s %s; limiting in this process (counted "
                "in rate_limit_fallback) until it answers again",
                self._where,
                failure,
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            self._logged_failures.clear()
            warn(
                "sentry-segment: rate-limit storage %s is back; the limit is shared again",
                self._where,
            )

    def _take(
        self, limiter: RateLimiter, organization: str, count: int, dry_run: bool = False
    ) -> int:
        # Another process may take units between reading what is left and taking it: re-read.
        for _ in range(TAKE_ATTEMPTS):
            wanted = min(
                count, *(self._remaining(limiter, item, organization) for item in self.items)
            )
            if wanted <= 0 or dry_run:
                return max(wanted, 0)
            if len(self.items) > 1 and not all(
                limiter.test(item, NAMESPACE, organization, cost=wanted) for item in self.items
            ):
                continue
            taken = [limiter.hit(item, NAMESPACE, organization, cost=wanted) for item in self.items]
            if all(taken):
                return wanted
        return 0

    def _hit(self, limiter: RateLimiter, organization: str, count: int) -> None:
        if count > 0:
            for item in self.items:
                limiter.hit(item, NAMESPACE, organization, cost=count)

    @staticmethod
    def _remaining(limiter: RateLimiter, item: RateLimitItem, organization: str) -> int:
        return int(limiter.get_window_stats(item, NAMESPACE, organization).remaining)
