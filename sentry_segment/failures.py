"""What went wrong posting to Segment, in words a user can act on, and whether a retry can
change it."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any, Callable, Optional

from requests import exceptions as requests_errors

from .config import ENV
from .secrets import mask_uri


def is_permanent(error: BaseException) -> bool:
    """Whether no retry can change the answer: a 3xx or 4xx other than 408 and 429, or a TLS
    certificate (or handshake) that fails. The batch fails, and posts pause."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return 300 <= status < 500 and status not in (408, 429)
    causes = _causes(error)
    if any(isinstance(cause, (requests_errors.Timeout, TimeoutError)) for cause in causes):
        return False
    return any(isinstance(cause, (requests_errors.SSLError, ssl.SSLError)) for cause in causes)


# What to check when Segment answers with a status, by status.
_CHECK_WRITE_KEY = (
    f"check the write key ({ENV['write_key']}) and that the host or region "
    f"({ENV['region']}) is the source's workspace's"
)
_HINTS = {
    400: "Segment refused the batch as invalid",
    401: _CHECK_WRITE_KEY,
    403: _CHECK_WRITE_KEY,
    404: f"check the host ({ENV['host']}): it is scheme and host only",
    408: "Segment timed out reading the request",
    413: "Segment refused the batch as too large",
    429: "Segment is rate-limiting this source",
}
_CHECK_HOST = f"check the host ({ENV['host']}, {ENV['region']})"


def describe_failure(error: BaseException, host: str, timeout: Optional[float] = None) -> str:
    """What went wrong posting to host: the HTTP status, or which step of the connection
    failed (name resolution, refused, timeout, certificate), and what to check."""
    host = mask_uri(host)
    status = getattr(error, "status", None)
    if isinstance(status, int):
        hint = _HINTS.get(status) or (
            "Segment is failing" if status >= 500 else "Segment refused it"
        )
        return f"{host} answered HTTP {status}: {hint}"
    causes = _causes(error)
    within = f" within {timeout:g} s" if timeout else ""
    name = _host_name(host)
    # The first that matches, from the outermost step: a timeout wraps the socket's error.
    steps: list[tuple[Callable[[BaseException], bool], str]] = [
        (
            lambda cause: isinstance(cause, (requests_errors.Timeout, TimeoutError)),
            f"no answer{within} (timeout); check the network and any firewall or proxy "
            f"({ENV['timeout']} sets the wait)",
        ),
        (
            lambda cause: "CERTIFICATE_VERIFY_FAILED" in str(cause),
            f"certificate verification failed for {name} (its TLS certificate is not "
            f"trusted); {_CHECK_HOST}, or a proxy that intercepts TLS (REQUESTS_CA_BUNDLE "
            "names the CA to trust)",
        ),
        (
            lambda cause: isinstance(cause, (requests_errors.SSLError, ssl.SSLError)),
            f"the TLS handshake with {name} failed; {_CHECK_HOST}",
        ),
        (
            lambda cause: (
                isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError"
            ),
            f"name resolution failed for {name}; {_CHECK_HOST} and DNS (retried, as it may "
            "be transient)",
        ),
        (
            lambda cause: isinstance(cause, ConnectionRefusedError),
            f"connection refused; {_CHECK_HOST} and the network",
        ),
        (
            lambda cause: isinstance(cause, (ConnectionResetError, http.client.RemoteDisconnected)),
            f"the connection was closed without an answer; {_CHECK_HOST} and the network",
        ),
    ]
    for matches, problem in steps:
        if any(matches(cause) for cause in causes):
            return f"could not reach {host}: {problem}"
    if isinstance(error, OSError) or type(error).__module__.startswith(("requests", "urllib3")):
        return f"could not reach {host} ({type(error).__name__}): {_CHECK_HOST} and the network"
    return f"posting to {host} failed ({type(error).__name__})"


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps: requests wraps urllib3's, which wraps the socket's."""
    found: list[BaseException] = []
    waiting: list[Any] = [error]
    while waiting and len(found) < 32:
        cause = waiting.pop(0)
        if not isinstance(cause, BaseException) or any(cause is seen for seen in found):
            continue
        found.append(cause)
        waiting.extend((cause.__cause__, cause.__context__, getattr(cause, "reason", None)))
        waiting.extend(cause.args)
    return found


def _host_name(host: str) -> str:
    return host.split("://", 1)[-1].rsplit("@", 1)[-1]
