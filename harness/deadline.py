"""Wall-clock bounds: how long a command, and each phase of it, may take before it is cut short.

A target under test may answer slowly, trickle its answers or never answer. Each answer is
bounded already (`--timeout-s`, three times it for a whole answer), but thousands of slow
answers are not, and a CI job must never be held hostage by the service it tests. A `Deadline`
is the bound of one command: a monotonic clock, the whole bound (`--max-run-s`), and the phase
now running with its own bound. `check()` raises `DeadlineExceeded`, which names the command,
the phase and the bound it passed, in one line.

`BoundedTarget` checks it before every request the harness sends and every wait, so a command
overshoots its bound by at most one answer's own bound, or by one step that cannot be cut (the
checkers over a history already recorded; they run at tens of thousands of operations a
second). Clearing faults is never refused: a shared service is left as it was found even by a
command cut short.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from .errors import HarnessError
from .secrets import redact

TROUBLE_CHARS_MAX = 160  # the target's last trouble, quoted in the one-line error
_CLEAN_UP_PATH = "/v1/chaos/faults"


class DeadlineExceeded(HarnessError):
    """A command ran past a bound: `phase` is the phase it was in, `bound_s` the bound passed
    (the phase's own, or the whole command's when `whole`)."""

    def __init__(self, command: str, phase: str, bound_s: float, whole: bool, option: str,
                 elapsed_s: float, trouble: str | None = None) -> None:
        super().__init__(command, phase, bound_s)
        self.command, self.phase, self.bound_s, self.whole = command, phase, bound_s, whole
        self.option, self.elapsed_s, self.trouble = option, elapsed_s, trouble
        self.saved: str | None = None  # where what was recorded went, once saved
        self.note: str | None = None  # how far the command got, in words, when it knows

    def reason(self) -> str:
        """Why, without where anything was saved: for report.json's `incomplete` entry."""
        if self.whole:
            why = f"it ran past {self.option} {self.bound_s:g}"
        else:
            why = (f"the phase ran past its bound of {self.bound_s:g} s, derived from the "
                   f"{self.command}'s length (give {self.option} to bound the whole "
                   f"{self.command} instead)")
        text = f"{self.command} cut short in the {self.phase} phase after " \
               f"{self.elapsed_s:.1f} s: {why}"
        if self.note:
            text += f" ({self.note})"
        if self.trouble:
            text += f"; the target's last trouble: {self.trouble}"
        return redact(" ".join(text.split()))

    def __str__(self) -> str:
        text = self.reason()
        if self.saved:
            text += f"; what was recorded is in {self.saved} (marked incomplete, not judged)"
        return redact(text)


class OutOfTime(BaseException):
    """`DeadlineExceeded` carried past code that catches every Exception as a test failure
    (hypothesis would shrink a run that merely ran out of time). Raised only by a
    `BoundedTarget(escape=True)`; its caller turns it back into `error`."""

    def __init__(self, error: DeadlineExceeded) -> None:
        super().__init__(str(error))
        self.error = error


class Deadline:
    """The bound of one command and of the phase it is in. `whole_s` None: no whole bound;
    a phase's `bound_s` None: none of its own. Thread-safe enough for the harness's use: the
    main thread enters phases, any thread checks."""

    def __init__(self, command: str, whole_s: float | None, *, option: str = "--max-run-s",
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert whole_s is None or whole_s > 0, whole_s
        self.command, self.whole_s, self.option = command, whole_s, option
        self._clock = clock
        self.started_s = clock()
        self._whole_until_s = math.inf if whole_s is None else self.started_s + whole_s
        self.phase = "start"
        self.phase_bound_s: float | None = None
        self._phase_started_s = self.started_s
        self._until_s = self._whole_until_s
        self.trouble: str | None = None  # the last unusable answer, for the error line
        # The first DeadlineExceeded raised, for callers whose framework may have swallowed it
        # (hypothesis turns an interrupted shrink into an error of its own).
        self.cut: DeadlineExceeded | None = None

    def enter(self, phase: str, bound_s: float | None = None) -> None:
        """The next phase begins (the one before is checked first, so an overshoot is blamed
        on the phase that took the time); entering the phase already running does nothing."""
        if phase == self.phase:
            return
        assert bound_s is None or bound_s > 0, bound_s
        self.check()
        now_s = self._clock()
        self.phase, self.phase_bound_s, self._phase_started_s = phase, bound_s, now_s
        self._until_s = min(self._whole_until_s, math.inf if bound_s is None else now_s + bound_s)

    def check(self) -> None:
        """DeadlineExceeded when the phase's or the whole command's bound has passed."""
        now_s = self._clock()
        if now_s > self._until_s:
            exc = self._exceeded(now_s)
            self.cut = self.cut or exc
            raise exc

    def remaining_s(self) -> float:
        return max(0.0, self._until_s - self._clock())

    def elapsed_s(self) -> float:
        return self._clock() - self.started_s

    def _exceeded(self, now_s: float) -> DeadlineExceeded:
        whole = self._until_s == self._whole_until_s
        bound_s = self.whole_s if whole else self.phase_bound_s
        assert bound_s is not None
        return DeadlineExceeded(self.command, self.phase, bound_s, whole, self.option,
                                now_s - self.started_s, self.trouble)


class BoundedTarget:
    """A target whose every request and wait checks `deadline` first; everything else is the
    wrapped target's (`inner`). `escape=True` raises `OutOfTime` instead of DeadlineExceeded."""

    def __init__(self, inner: Any, deadline: Deadline, escape: bool = False) -> None:
        self.inner, self.deadline, self.escape = inner, deadline, escape

    def __getattr__(self, name: str) -> Any:
        if name == "request_raw":  # the conformance probe's raw bytes, where the target has them
            raw = getattr(self.inner, name)

            def request_raw(method: str, path: str, data: bytes | None):
                self._check(method, path)
                return self._noted(method, path, raw(method, path, data))
            return request_raw
        return getattr(self.inner, name)

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None):
        self._check(method, path)
        return self._noted(method, path, self.inner.request(method, path, body, query))

    def request_at_once(self, requests: list, answered: Callable, choose: Any = None) -> None:
        self._check()
        self.inner.request_at_once(requests, answered, choose)

    def wait_ms(self, duration_ms: int) -> None:
        self._check()
        if self.inner.simulated:  # simulated time costs no wall-clock time but the work
            self.inner.wait_ms(duration_ms)
        else:  # never sleep past the bound
            self.inner.wait_ms(int(min(duration_ms, self.deadline.remaining_s() * 1000 + 1)))
        self._check()

    def _check(self, method: str = "", path: str = "") -> None:
        if method == "DELETE" and path.startswith(_CLEAN_UP_PATH):
            return  # clearing faults: never refused
        try:
            self.deadline.check()
        except DeadlineExceeded as exc:
            if self.escape:
                raise OutOfTime(exc) from None
            raise

    def _noted(self, method: str, path: str, reply: Any) -> Any:
        error = getattr(reply, "error", None)
        if error:
            self.deadline.trouble = f"{method} {path}: {error}"[:TROUBLE_CHARS_MAX]
        return reply


def bounded(target: Any, deadline: Deadline, escape: bool = False) -> BoundedTarget:
    return BoundedTarget(target, deadline, escape)
