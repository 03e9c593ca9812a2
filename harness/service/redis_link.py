"""One Redis connection of the reference service (its display or its bus), from a URL.

URL: `redis://[user:password@]host[:port]/DB[?prefix=PREFIX&...]` (or `rediss://`). `prefix`
(default `limit:`) is ours and is taken out: every key the service writes begins with it, so two
services can share one database. Every other query parameter goes to redis-py unchanged.

Timeouts are short on the API's side: the API runs on one event loop, and a Redis that stops
answering must cost it a display (503) or a late event, never its writes. After a failure the
link stays broken for `break_s` and answers the caller's default at once instead of waiting
again (a circuit breaker); the projector's side waits longer and retries, since lagging is all
it can do.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import UsageError
from ..secrets import redact, url_shown

DEFAULT_PREFIX = "limit:"
PREFIX_CHARS_MAX = 64
ERROR_LOG_EVERY_S = 1.0
T = TypeVar("T")


def parse_url(url: str) -> tuple[str, str]:
    """(redis-py URL, key prefix) from a service `redis://` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise UsageError(f"not a redis:// URL: {url_shown(url)!r}")
    prefix, rest = DEFAULT_PREFIX, []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))
    if not 0 < len(prefix) <= PREFIX_CHARS_MAX:
        raise UsageError(f"prefix {prefix!r} in {url_shown(url)!r} must be 1 to "
                         f"{PREFIX_CHARS_MAX} characters")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), "")), prefix


class RedisLink:
    """A client on one URL, named by what it is for (`display`, `bus`)."""

    def __init__(self, url: str, what: str, *, timeout_s: float, break_s: float = 0.0) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the deployment extra brings it
            raise UsageError(f"a redis:// {what} needs redis-py: pip install "
                             f"'limit-harness[deployment]'") from None
        self.errors = (redis.RedisError,)  # down, slow, or refusing (read-only, out of memory)
        self.what, self.shown, self.break_s = what, url_shown(url), break_s
        client_url, self.prefix = parse_url(url)
        try:
            self.client = redis.Redis.from_url(client_url, socket_timeout=timeout_s,
                                               socket_connect_timeout=timeout_s)
        except ValueError as exc:
            raise UsageError(f"bad {what} URL {self.shown!r}: {exc}") from None
        self._broken_until_s = 0.0
        self._logged_s = float("-inf")
        self.failures = 0

    def check(self) -> None:
        """Reachable now, or a one-line UsageError (at start: a wrong URL is a wrong option)."""
        import redis

        try:
            self.client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise UsageError(f"cannot reach the {self.what} at {self.shown!r}: "
                             f"{_one_line(exc)}") from None
        except redis.RedisError as exc:  # auth, protocol: still a wrong option
            raise UsageError(f"the {self.what} at {self.shown!r} refused us: "
                             f"{_one_line(exc)}") from None

    def key(self, name: str) -> str:
        return self.prefix + name

    def call(self, action: Callable, default: T) -> T:
        """`action(client)`, or `default` when Redis fails or the breaker is open."""
        if self.break_s and time.monotonic() < self._broken_until_s:
            return default
        try:
            return action(self.client)
        except self.errors as exc:
            self.failed(exc)
            return default

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        now_s = time.monotonic()
        self._broken_until_s = now_s + self.break_s
        if now_s - self._logged_s >= ERROR_LOG_EVERY_S:  # one line a second, not one a call
            self._logged_s = now_s
            log(f"the {self.what} at {self.shown} failed: {_one_line(exc)}")

    def close(self) -> None:
        self.client.close()


def _one_line(exc: BaseException) -> str:
    return redact(" ".join(f"{type(exc).__name__}: {exc}".split()))


def log(line: str) -> None:
    print(f"limit-harness serve: {line}", file=sys.stderr, flush=True)
