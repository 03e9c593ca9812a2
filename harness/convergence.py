"""The convergence phase and the check after it: one implementation for `run`, `prop`, the
pytest plugin and the load test, so all four judge the same thing in the same way.

Every fault is removed, writes stop, and once the service level has passed (plus the largest
delay injected, whose events may still be in flight, plus a margin that puts the reads strictly
after the checker's deadline) every account's display is read twice: a display that flaps after
converging is as wrong as one that never converged.
"""

from __future__ import annotations

from typing import Callable

from . import checkers
from .analysis import CheckConfig
from .checkers import Verdict
from .client import Recorder
from .history import History

POLL_MS = 250
MARGIN_MS = 100
HARNESS = 0  # the process number of the harness's own ops (faults, convergence reads)
POLL_ROUNDS_MAX = 10_000


def accounts_of(history: History) -> list[str]:
    """Every account the history wrote to, in order of first mention."""
    seen: dict[str, None] = {}
    for op in history.ops:
        if op.is_write and op.account_id is not None:
            seen.setdefault(op.account_id, None)
    return list(seen)


def injected_delay_ms(history: History) -> int:
    """The largest delay_sync the history tried to inject (acknowledged or not)."""
    delays = [op.request.get("delay_ms") for op in history.ops
              if op.f == "fault_add" and isinstance(op.request, dict)
              and op.request.get("kind") == "delay_sync"]
    return max((d for d in delays if type(d) is int), default=0)


def converge(recorder: Recorder, sla_ms: int, *, poll: bool = False) -> None:
    """The convergence phase (after the caller marked it). With `poll`, displays are also read
    while waiting, so the report shows how convergence went, not only whether it came."""
    history, target = recorder.history, recorder.target
    if any(op.f == "fault_add" for op in history.ops):
        recorder.remove_fault(HARNESS, None)
    deadline_ms = target.now_ms() + sla_ms + injected_delay_ms(history) + MARGIN_MS
    accounts = accounts_of(history)
    for _ in range(POLL_ROUNDS_MAX if poll else 0):
        if target.now_ms() >= deadline_ms:
            break
        _read_all(recorder, accounts)
        target.wait_ms(min(POLL_MS, max(1, deadline_ms - target.now_ms())))
    target.wait_ms(max(0, deadline_ms - target.now_ms()))
    for _ in range(2):
        _read_all(recorder, accounts)
        target.wait_ms(POLL_MS)


def _read_all(recorder: Recorder, accounts: list[str]) -> None:
    for account_id in accounts:
        recorder.display(HARNESS, account_id)


def fetch_ledger(recorder: Recorder) -> list[dict]:
    """The ledger this history is judged against. A fresh embedded service holds nothing else;
    a real one is shared (other runs, tests, people), and their accounts are not ours to judge."""
    ledger = recorder.ledger(HARNESS)
    if recorder.target.simulated:
        return ledger
    mine = set(accounts_of(recorder.history))
    return [e for e in ledger if isinstance(e, dict) and e.get("account_id") in mine]


def converge_and_check(recorder: Recorder, sla_ms: int, *, poll: bool = False,
                       on_phase: Callable[[str], None] | None = None,
                       with_stats: bool = True) -> tuple[list[dict], Verdict]:
    """The end of every run: the convergence phase, then the ledger and every checker over the
    recorder's history. `on_phase(name)` is told as each phase begins."""
    _begin(recorder, "convergence", on_phase)
    converge(recorder, sla_ms, poll=poll)
    _begin(recorder, "check", on_phase)
    ledger = fetch_ledger(recorder)
    verdict = checkers.check(recorder.history, ledger, CheckConfig(sla_ms=sla_ms),
                             with_stats=with_stats)
    return ledger, verdict


def _begin(recorder: Recorder, phase: str, on_phase: Callable[[str], None] | None) -> None:
    recorder.phase(phase)
    if on_phase is not None:
        on_phase(phase)
