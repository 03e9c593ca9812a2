"""How the harness speaks HTTP to a real service: extra headers (a bearer token, an API key),
TLS trust, and the time it waits for an answer. The same options for `run`, `prop`, `conform`,
the load test and the pytest plugin.

A header value may name an environment variable (`Authorization: $LIMIT_TOKEN`), so a token
stays out of shell history and CI logs; every value is a secret to `harness.secrets`, so it
never reaches a report, a log line or an error message, and the replay command shows the
header as it was given (the variable's name, or <redacted>).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import secrets
from .errors import UsageError

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an RFC 9110 token
ENV_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
# Headers the harness sets itself: a user's would break the body it sends.
RESERVED = ("content-type", "content-length", "host", "transfer-encoding")
TIMEOUT_S_DEFAULT = 5.0
TIMEOUT_S_MAX = 600.0
# A ledger page at its most (10,000 entries) is under 3 MiB; an answer past this is not one.
ANSWER_BYTES_MAX_DEFAULT = 8 * 1024 * 1024


@dataclass(frozen=True)
class HttpOptions:
    headers: tuple[tuple[str, str], ...] = ()  # (name, value as given: may be "$VAR")
    ca_bundle: Path | None = None
    insecure: bool = False
    timeout_s: float = TIMEOUT_S_DEFAULT
    answer_bytes_max: int = ANSWER_BYTES_MAX_DEFAULT

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= TIMEOUT_S_MAX:
            raise UsageError(f"--timeout-s must be above 0 and at most {TIMEOUT_S_MAX:g}")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise UsageError(f"--ca-bundle {self.ca_bundle} is not a readable file")
        if self.answer_bytes_max < 64 * 1024:
            raise UsageError("--answer-bytes-max must be at least 65536 (a ledger page)")
        if self.ca_bundle is not None and self.insecure:
            raise UsageError("--ca-bundle and --insecure contradict each other: choose one")

    @classmethod
    def parse(cls, headers: list[str], ca_bundle: Path | None = None, insecure: bool = False,
              timeout_s: float = TIMEOUT_S_DEFAULT,
              answer_bytes_max: int = ANSWER_BYTES_MAX_DEFAULT) -> "HttpOptions":
        """From `--header 'NAME: VALUE'` lines and the rest, checked."""
        return cls(tuple(_header(line) for line in headers), ca_bundle, insecure, timeout_s,
                   answer_bytes_max)

    def resolved_headers(self) -> dict[str, str]:
        """The headers to send: each `$VAR` read from the environment now, each value
        registered as a secret."""
        out: dict[str, str] = {}
        for name, value in self.headers:
            out[name] = secrets.register(_expanded(name, value))
        return out

    def argv(self) -> list[str]:
        """The options as command-line words for a replay command: a header's value as it was
        given when it names a variable, <redacted> when it was typed in."""
        words: list[str] = []
        for name, value in self.headers:
            shown = value if ENV_REFERENCE.search(value) else secrets.REDACTED
            words += ["--header", f"{name}: {shown}"]
        if self.ca_bundle is not None:
            words += ["--ca-bundle", str(self.ca_bundle)]
        if self.insecure:
            words.append("--insecure")
        if self.timeout_s != TIMEOUT_S_DEFAULT:
            words += ["--timeout-s", f"{self.timeout_s:g}"]
        if self.answer_bytes_max != ANSWER_BYTES_MAX_DEFAULT:
            words += ["--answer-bytes-max", str(self.answer_bytes_max)]
        return words

    def to_dict(self) -> dict:
        """For report.json: header names only, never values."""
        return {"headers": [name for name, _ in self.headers],
                "ca_bundle": None if self.ca_bundle is None else str(self.ca_bundle),
                "insecure": self.insecure, "timeout_s": self.timeout_s}


def _header(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not HEADER_NAME.fullmatch(name) or not value:
        # Never the text given: without its colon, a line is all value, and values are secrets.
        shown = f" (got header {name!r})" if colon and HEADER_NAME.fullmatch(name) else ""
        raise UsageError(f"--header takes 'NAME: VALUE'{shown}; e.g. "
                         f"--header 'Authorization: Bearer $TOKEN'")
    if name.lower() in RESERVED:
        raise UsageError(f"--header {name} is set by the harness itself and cannot be given")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UsageError(f"--header {name}: the value holds a control character")
    if not ENV_REFERENCE.search(value):
        secrets.register(value)  # typed in: a secret from the moment we read it
    return name, value


def _expanded(name: str, value: str) -> str:
    def variable(match: re.Match) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise UsageError(f"--header {name} names ${match.group(1)}, which is not set in "
                             f"the environment")
        return found
    return ENV_REFERENCE.sub(variable, value) if "$" in value else value
