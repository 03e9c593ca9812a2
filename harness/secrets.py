"""Secrets the harness was given (tokens in --header values, passwords in URLs) and their
removal from everything it writes or prints: reports, histories, summaries, error lines.

A value is registered where the harness reads it; `redact` runs at every edge where text
leaves the process. A target can echo a token back in an answer, so redaction is of the
output, not only of what the harness itself put there.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
SECRET_CHARS_MIN = 4  # shorter values would redact ordinary words; they protect little anyway

_known: set[str] = set()
_lock = threading.Lock()
# For a URL too broken to parse (`http://u:pw@[::1`): the password of its user part, and the
# value of a `password=` parameter; their ends are where a parser would end them.
_USER_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)([^/?#]*)(@)")
_QUERY_PASSWORD = re.compile(r"([?&;]password=)([^&#;]*)", re.IGNORECASE)


def register(value: str) -> str:
    """Remember `value` as a secret; returns it."""
    if isinstance(value, str) and len(value) >= SECRET_CHARS_MIN:
        with _lock:
            _known.add(value)
    return value


def redact(text: str) -> str:
    """`text` with every registered secret replaced by <redacted>."""
    for secret in sorted(_known, key=len, reverse=True):  # a longer secret may contain a shorter
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes) -> bytes:
    if not _known:
        return data
    for secret in sorted(_known, key=len, reverse=True):
        raw = secret.encode("utf-8")
        if raw in data:
            data = data.replace(raw, REDACTED.encode("utf-8"))
    return data


def url_shown(url: str) -> str:
    """A URL fit to show: its password, in the user part or a `password=` query parameter,
    registered as a secret and replaced by <redacted>."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _shown_unparsed(url)
    netloc = parts.netloc
    if password:
        register(unquote(password))
        register(password)
        user_part, _, host_part = netloc.rpartition("@")
        netloc = f"{user_part.split(':', 1)[0]}:{REDACTED}@{host_part}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in query):
        query = [(k, register(v) and REDACTED if k.lower() == "password" else v) for k, v in query]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="<>/"),
                           parts.fragment))
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _shown_unparsed(url: str) -> str:
    """`url_shown` for a URL urllib cannot parse: a broken URL's password is still a password,
    and its error line must not show it."""
    def hidden(match: re.Match) -> str:
        if match.group(2):
            register(unquote(match.group(2)))
            register(match.group(2))
        return f"{match.group(1)}{REDACTED}{match.group(3) if match.re is _USER_PASSWORD else ''}"
    url = _USER_PASSWORD.sub(hidden, url, count=1)
    return _QUERY_PASSWORD.sub(hidden, url)
