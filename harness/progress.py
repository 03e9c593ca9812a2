"""A progress line on stderr for long runs: rewritten in place on a terminal, one line every few
seconds in a CI log, silent with --quiet."""

from __future__ import annotations

import sys
import time

TTY_EVERY_S = 0.2
LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, unit: str, quiet: bool = False, stream=None,
                 log_after_s: float = 0.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every_s = TTY_EVERY_S if self.tty else LOG_EVERY_S
        # In a log, nothing before `log_after_s`: a command that ends sooner (or fails on its
        # input, whose one-line error must stand alone) leaves no progress lines behind.
        self._log_from_s = time.monotonic() + log_after_s if not self.tty else 0.0
        self.name = "phase"
        self.total = None
        self.unit = unit
        self._last_s = 0.0

    def phase(self, name: str, total: int | None = None) -> None:
        self.name, self.total = name, total
        self._emit(f"{name}...")

    def update(self, done: int, **extra) -> None:
        now_s = time.monotonic()
        if now_s - self._last_s < self.every_s:
            return
        bar = ""
        if self.total:
            filled = int(20 * min(done, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} {self.unit} "
        details = " ".join(f"{k}={v}" for k, v in extra.items())
        self._emit(f"{self.name} {bar}{details}")

    def done(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _emit(self, text: str) -> None:
        if self.quiet or time.monotonic() < self._log_from_s:
            return
        self._last_s = time.monotonic()
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# Progress nobody watches: a default that needs no `if` where progress is reported.
QUIET = Progress("", quiet=True)
