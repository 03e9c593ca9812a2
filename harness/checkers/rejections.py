"""Rejections: no write is refused that the contract allowed, where the account's state at that
moment is known, and a refusal names the contract's reason.

The state a write met is known only up to the writes racing it. Entries acknowledged before it was
sent surely came first; entries written by requests sent after it returned surely came later;
anything between may or may not have. The rejection is judged against every such candidate
state and reported only when all of them agree it was wrong.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .. import oracle
from ..findings import Finding, fen
from ..history import History
from . import (CheckConfig, FaultIndex, HistoryViews, WriteGroup, account_timeline,
               clean_ledger, described, entries_by_account, entry_acks_ms, entry_owner, report, write_groups)

CHECKER = "rejections"
JUDGED_STATUSES = (404, 409, 422, 423)


@dataclass
class _Account:
    """One account's entries with the times that bound when each was committed."""

    seqs: list[int]
    entries: list[dict]
    timeline: list[tuple[int, oracle.State]]
    ack_ms: list[int]            # ascending acknowledgement times
    ack_max_seq: list[int]       # largest seq acknowledged by ack_ms[n]
    sent_ms: list[int]           # ascending first-send times
    sent_min_seq: list[int]      # smallest seq sent at or after sent_ms[n]

    def candidates(self, invoke_ms: int, complete_ms: int) -> tuple[list[oracle.State | None], int]:
        """Every state the write could have met, and how many racing entries made them."""
        n = bisect.bisect_left(self.ack_ms, invoke_ms)
        seq_lo = self.ack_max_seq[n - 1] if n else None
        n = bisect.bisect_right(self.sent_ms, complete_ms)
        seq_hi = self.sent_min_seq[n] if n < len(self.sent_ms) else None
        first = 0 if seq_lo is None else bisect.bisect_right(self.seqs, seq_lo)
        last = len(self.seqs) if seq_hi is None else bisect.bisect_left(self.seqs, seq_hi)
        states = [None if seq_lo is None else oracle.state_at(self.timeline, seq_lo)]
        for n in range(first, max(first, last)):
            # A repay and its cure commit in one transaction: nobody meets the state between.
            if n + 1 < len(self.entries) and _cures(self.entries[n], self.entries[n + 1]):
                continue
            states.append(oracle.state_at(self.timeline, self.seqs[n]))
        return states, max(0, last - first)


def check(history: History, ledger: list[dict], config: CheckConfig) -> list[Finding]:
    groups = write_groups(history)
    entries, _ = clean_ledger(ledger)
    accounts = {account_id: _index(account_entries, groups)
                for account_id, account_entries in entries_by_account(entries).items()}
    empty = _index([], groups)
    faults = FaultIndex(history.fault_windows())
    views = HistoryViews(history)
    findings = []
    for group in groups.values():
        op = group.first
        if op.outcome != "fail" or op.http_status not in JUDGED_STATUSES or op.complete_ms is None:
            continue
        if group.account_id is None or not _judgeable(group):
            continue
        account = accounts.get(group.account_id, empty)
        states, racing = account.candidates(op.invoke_ms, op.complete_ms)
        answers = [_answer(state, group) for state in states]
        code = op.response.get("error") if isinstance(op.response, dict) else None
        if all(answer is None for answer in answers):
            verdict = ("wrongful_rejection", "the contract required it to be accepted")
        elif code == "not_found" and all(state is not None for state in states):
            verdict = ("wrongful_rejection", "the account certainly existed")
        elif all(answer is not None for answer in answers) and code not in answers:
            verdict = ("contract_violation", f"the contract's answer was "
                       f"{' or '.join(sorted({repr(a) for a in answers}))}")
        else:
            continue
        findings.append(_finding(views, group, states, answers, racing, verdict,
                                 described(faults.active_at(op.invoke_ms))))
    return findings


def _index(entries: list[dict], groups: dict[str, WriteGroup]) -> _Account:
    acks: list[tuple[int, int]] = []
    sends: list[tuple[int, int]] = []
    for entry, ack_ms in zip(entries, entry_acks_ms(entries, groups)):
        group, _ = entry_owner(entry["request_id"], groups)
        if group is None:
            continue
        if ack_ms is not None:
            acks.append((ack_ms, entry["seq"]))
        sends.append((group.first_invoke_ms, entry["seq"]))
    acks.sort()
    sends.sort()
    ack_max_seq: list[int] = []
    for _, seq in acks:
        ack_max_seq.append(max(seq, ack_max_seq[-1]) if ack_max_seq else seq)
    sent_min_seq = [seq for _, seq in sends]
    for n in range(len(sent_min_seq) - 2, -1, -1):
        sent_min_seq[n] = min(sent_min_seq[n], sent_min_seq[n + 1])
    return _Account(
        seqs=[e["seq"] for e in entries], entries=entries, timeline=account_timeline(entries),
        ack_ms=[t for t, _ in acks], ack_max_seq=ack_max_seq,
        sent_ms=[t for t, _ in sends], sent_min_seq=sent_min_seq)


def _cures(entry: dict, following: dict) -> bool:
    return entry["type"] == "repay" and following["request_id"] == entry["request_id"] + ":cure"


def _judgeable(group: WriteGroup) -> bool:
    if group.f == "open":
        return True
    value = group.value()
    return type(value) is int if group.f != "status" else type(value) is str


def _answer(state: oracle.State | None, group: WriteGroup) -> str | None:
    """The contract's answer to this write on this state: None (accept) or an error code."""
    if group.f == "open":
        return None if state is None else "exists"
    if state is None:
        return "not_found"
    return oracle.judge(state, group.f, group.value())


def _finding(views: HistoryViews, group: WriteGroup, states: list, answers: list, racing: int,
             verdict: tuple[str, str], faults: list[str]) -> Finding:
    op = group.first
    code = op.response.get("error") if isinstance(op.response, dict) else None
    kind, why = verdict
    request = op.request or {}
    if group.f in ("draw", "repay"):
        what = f"{group.f} of {fen(request.get('amount'))}"
    elif group.f in ("open", "limit"):
        what = f"{group.f} with credit line {fen(request.get('credit_line'))}"
    else:
        what = f"status change to {request.get('status')!r}"
    known = states[-1] if len(states) == 1 else None
    if known is not None:
        state_words = (f"the ledger puts the account at credit line {fen(known.credit_line)}, "
                       f"outstanding {fen(known.outstanding)}, available {fen(known.available)}, "
                       f"{known.status}")
    elif len(states) == 1:
        state_words = "the ledger shows no account yet"
    else:
        state_words = (f"{racing} racing write(s) leave {len(states)} possible states, and "
                       f"every one of them gives the same verdict")
    faults_words = f"; faults on: {', '.join(faults)}" if faults else ""
    return report(
        views, kind=kind, severity="major", account_id=group.account_id,
        first_seen_ms=op.complete_ms,
        expected={"answers": sorted({a or "accept" for a in answers})},
        actual={"http_status": op.http_status, "error": code}, checker=CHECKER,
        faults_active=faults,
        explanation=(f"The {what} on account {group.account_id!r} (request_id "
                     f"{group.request_id!r}), sent at t={op.invoke_ms} ms, was rejected at "
                     f"t={op.complete_ms} ms with {op.http_status} {code!r}, but {state_words}: "
                     f"{why}{faults_words}."))
