"""Clocks. The core never reads time itself: it is handed one of these, so the same code runs
deterministically under `SimClock` and in real time under `RealClock`."""

from __future__ import annotations

import datetime as dt
import time

# Simulated runs start here, so the `at` of every entry replays bit for bit.
SIM_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def rfc3339(stamp: dt.datetime, timespec: str = "milliseconds") -> str:
    """A UTC moment as the contract writes it: `2026-01-01T00:00:00.000Z`."""
    assert stamp.utcoffset() == dt.timedelta(0), "RFC 3339 times here are UTC"
    return stamp.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_rfc3339(text: str) -> dt.datetime | None:
    """The moment an RFC 3339 timestamp names, or None when it is not one (no zone: not one)."""
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def iso(base: dt.datetime, ms: int) -> str:
    """`ms` milliseconds after `base`, in RFC 3339."""
    return rfc3339(base + dt.timedelta(milliseconds=ms))


class SimClock:
    """Milliseconds that move only when told to."""

    def __init__(self, start_ms: int = 0) -> None:
        assert start_ms >= 0
        self._now_ms = start_ms
        self.base = SIM_EPOCH
        self._iso_ms, self._iso_text = -1, ""

    def now_ms(self) -> int:
        return self._now_ms

    def advance_to(self, t_ms: int) -> None:
        assert t_ms >= self._now_ms, "simulated time never goes backwards"
        self._now_ms = t_ms

    def advance(self, delta_ms: int) -> None:
        assert delta_ms >= 0
        self._now_ms += delta_ms

    def iso(self, ms: int) -> str:
        # Many entries share a millisecond; formatting a datetime costs more than the rest of
        # a simulated commit, so the last answer is kept.
        if ms != self._iso_ms:
            self._iso_ms, self._iso_text = ms, iso(self.base, ms)
        return self._iso_text


class RealClock:
    """Monotonic milliseconds since construction; `iso` maps them onto wall-clock time."""

    def __init__(self) -> None:
        self._mono0_ns = time.monotonic_ns()
        self.base = dt.datetime.now(dt.timezone.utc)

    def now_ms(self) -> int:
        return (time.monotonic_ns() - self._mono0_ns) // 1_000_000

    def iso(self, ms: int) -> str:
        return iso(self.base, ms)
