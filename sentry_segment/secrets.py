"""What must never be shown in full: write keys and storage passwords, in logs, reprs, errors
and `check`, whatever option or variable they were put in."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

# A run of write-key characters this long, with a letter and a digit or with both cases, is
# shown masked wherever a value is echoed: Segment's write keys are 32 random letters and
# digits, and a key pasted into the wrong variable is not known to be one. Host names, rate
# limits, slugs and include names are shorter or lowercase without digits; a long CamelCase
# event name is masked in `check` too, the price of never echoing a key.
_SECRET_LOOKING = re.compile(r"[A-Za-z0-9_\-]{16,}")


def mask(write_key: Optional[str]) -> str:
    """Show a write key as its last four characters only, as logs and reprs must."""
    if not write_key:
        return "<unset>"
    return "****" + write_key[-4:] if len(write_key) > 12 else "****"


# Query parameters of a storage URI whose values are secrets (password=, ssl_password=, ...).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|auth|credential|api_?key|access_?key", re.I)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def _uri_parts(uri: str) -> tuple[str, Optional[str], str, list[tuple[str, str]], str]:
    """scheme, userinfo (None without one), hosts and path, query pairs, fragment.

    Split by hand rather than with urlsplit: a password may hold an unencoded ``/``, ``?``,
    ``#`` or ``@``, so userinfo is everything up to the last ``@``.
    """
    scheme, rest = uri.split("://", 1)
    userinfo: Optional[str] = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
    rest, _, fragment = rest.partition("#")
    location, _, query = rest.partition("?")
    pairs = [tuple(pair.partition("=")[::2]) for pair in query.split("&")] if query else []
    return scheme, userinfo, location, pairs, fragment  # type: ignore[return-value]


def mask_uri(uri: str) -> str:
    """A storage URI with its password, secret query parameters and fragment replaced by ****;
    a value that is not a URI shows only what looks like its scheme."""
    if "://" not in uri:
        prefix = _SCHEME.match(uri)
        return f"{prefix.group(0)}:****" if prefix and uri[prefix.end() :][:1] == ":" else "****"
    scheme, userinfo, location, pairs, fragment = _uri_parts(uri)
    masked = f"{scheme}://"
    if userinfo is not None:
        user, has_password, _ = userinfo.partition(":")
        masked += f"{user}:****@" if has_password else "****@"
    masked += location
    if pairs:
        masked += "?" + "&".join(
            f"{name}=****" if _SECRET_PARAMETER.search(name) else f"{name}={value}"
            for name, value in pairs
        )
    return masked + ("#****" if fragment else "")


def uri_secrets(uri: str) -> list[str]:
    """The secrets mask_uri hides, as written and percent-decoded: to scrub them from text
    that a library made (an error message) before it is shown."""
    if "://" not in uri:
        return [uri]
    _, userinfo, _, pairs, fragment = _uri_parts(uri)
    found = [value for name, value in pairs if _SECRET_PARAMETER.search(name)]
    if userinfo is not None:
        user, has_password, password = userinfo.partition(":")
        found.append(password if has_password else user)
    found.append(fragment)
    secrets = {text for value in found for text in (value, unquote(value)) if text}
    return sorted(secrets, key=len, reverse=True)


class WriteKey(str):
    """A write key whose repr() never shows the secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"WriteKey({mask(self)!r})"


def looks_secret(token: str) -> bool:
    """Whether a token could be a write key or another credential."""
    if not _SECRET_LOOKING.fullmatch(token):
        return False
    letter, digit = any(c.isalpha() for c in token), any(c.isdigit() for c in token)
    return (letter and digit) or (token != token.lower() and token != token.upper())


def masked_text(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with each known secret, URI password and secret-looking token masked."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    if "://" in text:
        text = " ".join(mask_uri(word) if "://" in word else word for word in text.split(" "))
    return _SECRET_LOOKING.sub(
        lambda found: mask(found.group()) if looks_secret(found.group()) else found.group(), text
    )


def shown(value: Any) -> str:
    """repr() of a value given to an option, for an error message, secrets masked."""
    if isinstance(value, str):
        return repr(masked_text(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return repr([masked_text(item) if isinstance(item, str) else item for item in value])
    return masked_text(repr(value))


def given_secrets(given: Mapping[str, Any], environ: Mapping[str, str]) -> set[str]:
    """Every write key and storage password in the keyword arguments and the environment,
    well-formed or not: what any message about them must not echo."""
    found: set[str] = set()
    sources = [
        (given.get("write_key"), given.get("projects"), given.get("rate_limit_storage")),
        (
            environ.get("SENTRY_SEGMENT_WRITE_KEY"),
            environ.get("SENTRY_SEGMENT_PROJECTS"),
            environ.get("SENTRY_SEGMENT_RATE_LIMIT_STORAGE"),
        ),
    ]
    for write_key, projects, storage in sources:
        if isinstance(write_key, str):
            found.add(write_key.strip())
        found.update(_project_write_keys(projects))
        if isinstance(storage, str):
            try:
                password = urlsplit(storage.strip()).password
            except ValueError:
                password = None
            if password:
                found.add(password)
    return {secret for secret in found if len(secret) >= 4}


def _project_write_keys(projects: Any) -> Iterable[str]:
    if isinstance(projects, str):
        try:
            projects = json.loads(projects)
        except (ValueError, RecursionError):
            return []
    if not isinstance(projects, Mapping):
        return []
    return [
        override["write_key"].strip()
        for override in projects.values()
        if isinstance(override, Mapping) and isinstance(override.get("write_key"), str)
    ]


class RedactWriteKeys(logging.Filter):
    """Segment's client logs request bodies, write key included, at DEBUG: masks every write
    key the integration uses in what the ``segment`` logger prints."""

    def __init__(self) -> None:
        super().__init__()
        self.write_keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = message
        for write_key in self.write_keys:
            redacted = redacted.replace(write_key, mask(write_key))
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
