"""The convergence phase and the check after it: one implementation for `run`, `prop`, `check`'s
runs, the pytest plugin and the load test, so all of them judge the same thing the same way.

Every fault is removed and writes stop. Then the phase watches instead of sleeping: it reads
every account's display every POLL_MS and compares it with the oracle over the ledger it reads
back. It ends as soon as every display equals the oracle's final state (as of the account's last
entry) and has stayed so for SETTLE_MS, where the target offers `GET /v1/sync` its applied seq
has reached its ledger's, and the largest delay the harness injected has run out since the
faults were removed (events a fault held back may still be on their way until then, and a late
duplicate among them would corrupt a display that looked converged). A service that has not
converged by the deadline (the service level plus that delay plus a margin that puts the reads
strictly after the checker's own deadline) is read twice more after it and judged as it is:
a display that flaps after converging is as wrong as one that never converged.
"""

from __future__ import annotations

from typing import Callable

from . import checkers, oracle
from .analysis import CheckConfig
from .checkers import Verdict
from .client import Recorder
from .entries import account_timeline, clean_ledger, entries_by_account
from .history import History, Op, delay_ms_of
from .targets import Target

POLL_MS = 50
SETTLE_MS = 100  # at least two rounds of reads that all agree with the oracle
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
    """The largest delay the history tried to inject (acknowledged or not): `delay_ms_of`."""
    return max((delay_ms_of(str(op.request.get("kind")), op.request) for op in history.ops
                if op.f == "fault_add" and isinstance(op.request, dict)), default=0)


def converge(recorder: Recorder, sla_ms: int) -> bool:
    """The convergence phase (after the caller marked it); True when convergence was observed
    before the deadline, False when the deadline was waited out."""
    history, target = recorder.history, recorder.target
    if any(op.f == "fault_add" for op in history.ops):
        recorder.remove_fault(HARNESS, None)
    removed_ms = target.now_ms()
    in_flight_until_ms = removed_ms + injected_delay_ms(history) + POLL_MS
    deadline_ms = removed_ms + injected_delay_ms(history) + MARGIN_MS + sla_ms
    accounts = accounts_of(history)
    oracle_now = _FinalStates(recorder)
    settled_since_ms: int | None = None
    for _ in range(POLL_ROUNDS_MAX):
        now_ms = target.now_ms()
        if now_ms >= deadline_ms:
            break
        reads = _read_all(recorder, accounts)
        if oracle_now.all_shown(reads) and _sync_caught_up(recorder):
            settled_since_ms = now_ms if settled_since_ms is None else settled_since_ms
            if now_ms - settled_since_ms >= SETTLE_MS and now_ms >= in_flight_until_ms:
                return True
        else:
            settled_since_ms = None
        target.wait_ms(min(POLL_MS, max(1, deadline_ms - target.now_ms())))
    target.wait_ms(max(0, deadline_ms - target.now_ms()))
    for _ in range(2):
        _read_all(recorder, accounts)
        target.wait_ms(POLL_MS)
    return False


def _read_all(recorder: Recorder, accounts: list[str]) -> list[Op]:
    return [recorder.display(HARNESS, account_id) for account_id in accounts]


class _FinalStates:
    """Each account's final state by the ledger, read again each round from where it was left
    (a write whose answer was lost may still commit), replayed only when the ledger grew."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ledger: list = []
        self.finals: dict[str, tuple[dict, int]] | None = None  # account: (view, last seq)

    def all_shown(self, reads: list[Op]) -> bool:
        """Every read answered 200 with exactly the oracle's final state of its account, as of
        the account's last entry (or null)."""
        last_seq = self.ledger[-1]["seq"] if self.ledger else self.recorder.ledger_after_seq
        more = self.recorder.ledger(HARNESS, last_seq)
        if more or self.finals is None:
            self.ledger.extend(more)
            self.finals = self._replayed()
        for op in reads:
            found = self.finals.get(str(op.account_id))
            shown = op.response
            if op.outcome != "ok" or found is None or not isinstance(shown, dict):
                return False
            final, last = found
            if any(shown.get(name) != final[name] for name in oracle.DISPLAY_FIELDS):
                return False
            if shown.get("as_of_seq") not in (None, last):
                return False
        return True

    def _replayed(self) -> dict[str, tuple[dict, int]]:
        entries, problems = clean_ledger(self.ledger)
        if problems:
            return {}  # a ledger that breaks the contract is not waited out early
        finals = {}
        for account_id, mine in entries_by_account(entries).items():
            timeline = account_timeline(mine)
            if timeline:
                finals[account_id] = (timeline[-1][1].view(), mine[-1]["seq"])
        return finals


def _sync_caught_up(recorder: Recorder) -> bool:
    return _synced(recorder.target) is not False


def _synced(target: Target) -> bool | None:
    """Where the target offers `GET /v1/sync`: whether its read model has applied its whole
    ledger; None where it does not tell. Not recorded: it judges nothing, it only says whether
    to keep watching."""
    reply = target.request("GET", "/v1/sync")
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    ledger_seq, applied_seq = reply.body.get("ledger_seq"), reply.body.get("applied_seq")
    if type(ledger_seq) is not int or type(applied_seq) is not int:
        return None
    return applied_seq >= ledger_seq


SYNC_POLL_MS = 5


def let_sync(target: Target, bound_ms: int) -> None:
    """Let a real service's read model catch up, for at most `bound_ms`: over as soon as
    `GET /v1/sync` says it has, a plain wait where the target does not say. (A program's "let
    time pass" against a real service: what the wait is for, not the wait.)"""
    assert not target.simulated and bound_ms >= 0
    until_ms = target.now_ms() + bound_ms
    for _ in range(bound_ms // SYNC_POLL_MS + 1):
        synced = _synced(target)
        if synced is None:
            break
        if synced or target.now_ms() >= until_ms:
            return
        target.wait_ms(min(SYNC_POLL_MS, max(0, until_ms - target.now_ms())))
    target.wait_ms(max(0, until_ms - target.now_ms()))


def fetch_ledger(recorder: Recorder) -> list[dict]:
    """The ledger this history is judged against: what follows the seq the run started from.
    A fresh embedded service holds nothing else; a real one is shared (other runs, tests,
    people), and their accounts are not ours to judge."""
    ledger = recorder.ledger(HARNESS, recorder.ledger_after_seq)
    if recorder.target.simulated:
        return ledger
    mine = set(accounts_of(recorder.history))
    return [e for e in ledger if isinstance(e, dict) and e.get("account_id") in mine]


def converge_and_check(recorder: Recorder, sla_ms: int, *,
                       on_phase: Callable[[str], None] | None = None,
                       with_stats: bool = True) -> tuple[list[dict], Verdict]:
    """The end of every run: the convergence phase, then the ledger and every checker over the
    recorder's history. `on_phase(name)` is told as each phase begins."""
    _begin(recorder, "convergence", on_phase)
    converge(recorder, sla_ms)
    _begin(recorder, "check", on_phase)
    ledger = fetch_ledger(recorder)
    verdict = checkers.check(recorder.history, ledger, CheckConfig(sla_ms=sla_ms),
                             with_stats=with_stats)
    return ledger, verdict


def _begin(recorder: Recorder, phase: str, on_phase: Callable[[str], None] | None) -> None:
    recorder.phase(phase)
    if on_phase is not None:
        on_phase(phase)
