"""Sentry's default server-side data scrubbing (Relay's), for the strings a message carries.

Relay scrubs a new project's events with its "@common:filter" rules before Sentry stores or
forwards them. The patterns below are Relay's own (relay-pii's regexes, as the `sentry-relay`
package that the tests hold this module to ships them):

* a value whose key is sensitive (``password``, ``secret``, ``api_key``, ``auth``, ``token``,
  ``otp``, ... or one of the project's sensitive fields) becomes ``[Filtered]`` whole, and so
  does a value that mentions such a word (``password=``, ``Authorization``, ``token:``);
* card numbers, IBANs, bearer tokens, US social security numbers, a URL's password and the
  body of a PEM key become ``[Filtered]`` where they stand, the rest of the value kept.

Relay applies both to the query string (pair by pair), the request headers (the Referer among
them) and the user ID, and neither to the URL, the user agent, tags or exception messages.
Those fields get the patterns here too, but not the keyword rule, which would blank every
exception message that mentions "auth"; tag values are filtered whole under a sensitive key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import quote_plus, unquote_plus

FILTERED = "[Filtered]"

# A key or a value that matches is filtered whole (Relay's PASSWORD_KEY_REGEX).
_KEYWORD = re.compile(
    r"(?i)(password|secret|passwd|api[-_]key|apikey|auth|credentials|mysql_pwd|privatekey"
    r"|private[-_]key|token[^\s]*[:=]|^otp$|^two[-_]factor$)"
)
# Keys only: any key that names a token.
_TOKEN_KEY = re.compile(r"(?i)token")
_KEPT_UNDER_SENSITIVE_KEYS = frozenset({"true", "false", "null"})
_CREDIT_CARD = re.compile(
    r"\b((?:3[47]\d|4\d{3}|5[1-5]\d\d|65\d\d|6011)([-\s]?\d){12})\b"  # amex, visa, mc, discover
)
_IBAN = re.compile(
    r"\b(AT|AD|AE|AL|AZ|BA|BE|BG|BH|BR|BY|CH|CR|CY|CZ|DE|DK|DO|EE|EG|ES|FI|FO|FR|GB|GE|GI|GL|GR"
    r"|GT|HR|HU|IE|IL|IQ|IS|IT|JO|KW|KZ|LB|LC|LI|LT|LU|LV|LY|MC|MD|ME|MK|MR|MT|MU|NL|NO|PK|PL|PS"
    r"|PT|QA|RO|RU|RS|SA|SC|SE|SI|SK|SM|ST|SV|TL|TN|TR|UA|VA|VG|XK|DZ|AO|BJ|BF|BI|CV|CM|CF|TD|KM"
    r"|CG|CI|DJ|GQ|GA|GW|HN|IR|MG|ML|MA|MZ|NI|NE|SN|TG)\d{2}[a-zA-Z0-9]{11,29}\b"
)
_PEM_KEY = re.compile(
    r"(?s)(?:-----BEGIN[A-Z ]+(?:PRIVATE|PUBLIC) KEY-----[\t ]*\r?\n?)(.+?)"
    r"(?:\r?\n?-----END[A-Z ]+(?:PRIVATE|PUBLIC) KEY-----)"
)
_URL_PASSWORD = re.compile(r"\b((?:[a-z0-9]+:)?//[a-zA-Z0-9%_.-]+:)([a-zA-Z0-9%_.-]+)@")
_BEARER = re.compile(r"(?i)\b(Bearer\s+)([^\s]+)")
_US_SSN = re.compile(r"\b([0-9]{3}-[0-9]{2}-[0-9]{4})\b")


def _replace_match(match: re.Match[str]) -> str:
    return FILTERED


def _replace_group(group: int) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        whole, start = match.group(0), match.start(0)
        return whole[: match.start(group) - start] + FILTERED + whole[match.end(group) - start :]

    return replace


# In Relay's order: each sees what the one before left.
_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_BEARER, _replace_match),
    (_CREDIT_CARD, _replace_match),
    (_IBAN, _replace_match),
    (_PEM_KEY, _replace_group(1)),
    (_URL_PASSWORD, _replace_group(2)),
    (_US_SSN, _replace_match),
)


@functools.lru_cache(maxsize=16)
def _sensitive_pattern(fields: tuple[str, ...]) -> Optional[re.Pattern[str]]:
    # As Relay's "sensitiveFields": matched in keys and values, case as given.
    return re.compile("|".join(map(re.escape, fields))) if fields else None


@dataclass(frozen=True)
class Scrubber:
    """Sentry's default scrubbing, with the project's extra sensitive fields."""

    sensitive_fields: tuple[str, ...] = ()

    def sensitive_key(self, key: str) -> bool:
        """Whether a value under this key is filtered whole."""
        extra = _sensitive_pattern(self.sensitive_fields)
        return bool(
            _KEYWORD.search(key)
            or _TOKEN_KEY.search(key)
            or (extra is not None and extra.search(key))
        )

    def value(self, text: str, key: str = "") -> str:
        """A value as Relay keeps it: filtered whole, or with its secrets replaced."""
        if not text:
            return text
        if key and self.sensitive_key(key):
            # Relay's legacy scrubbing keeps these, as Sentry's did for booleans and None.
            return text if text in _KEPT_UNDER_SENSITIVE_KEYS else FILTERED
        # Relay runs its rules one after the other: a keyword a pattern replaced is gone.
        text = patterns(text)
        extra = _sensitive_pattern(self.sensitive_fields)
        if _KEYWORD.search(text) or (extra is not None and extra.search(text)):
            return FILTERED
        return text

    def query(self, query: str) -> str:
        """A query string with each sensitive value replaced; what is kept, kept byte for byte.

        Keys and values are matched decoded, as Relay reads them; a value with a secret inside
        is encoded again around the ``[Filtered]``.
        """
        parts = query.split("&")
        for index, part in enumerate(parts):
            if not part:
                continue
            raw_key, _, raw_value = part.partition("=")
            key, value = unquote_plus(raw_key), unquote_plus(raw_value)
            scrubbed = self.value(value, key)
            if scrubbed != value:
                encoded = FILTERED if scrubbed == FILTERED else quote_plus(scrubbed, safe="[]")
                parts[index] = f"{raw_key}={encoded}"
        return "&".join(parts)


def patterns(text: str) -> str:
    """Card numbers, IBANs, PEM key bodies, URL passwords, bearer tokens and US social security
    numbers replaced by [Filtered], the rest kept."""
    for pattern, replace in _PATTERNS:
        if pattern.search(text):
            text = pattern.sub(replace, text)
    return text
