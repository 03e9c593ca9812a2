"""Rejections: no write is refused that the contract allowed, where the account's state at that
moment is known, and a refusal names the contract's reason.

The state a write met is known only up to the writes racing it. Entries acknowledged before it was
sent surely came first; entries written by requests sent after it returned surely came later;
anything between may or may not have. The rejection is judged against every such candidate
state and reported only when all of them agree it was wrong.
"""

from __future__ import annotations

import bisect

from .. import contract, oracle
from ..analysis import AccountIndex, Analysis
from ..findings import Finding, fen
from ..history import described
from ..write_groups import WriteGroup

NAME = "rejections"
JUDGED_STATUSES = (404, 409, 422, 423)


def candidates(account: AccountIndex, invoke_ms: int,
               complete_ms: int) -> tuple[list[oracle.State | None], int]:
    """Every state a write in flight from `invoke_ms` to `complete_ms` could have met, and how
    many racing entries made them."""
    n = bisect.bisect_left(account.ack_ms, invoke_ms)
    seq_lo = account.ack_max_seq[n - 1] if n else None
    n = bisect.bisect_right(account.sent_ms, complete_ms)
    seq_hi = account.sent_min_seq[n] if n < len(account.sent_ms) else None
    first = 0 if seq_lo is None else bisect.bisect_right(account.seqs, seq_lo)
    last = len(account.seqs) if seq_hi is None else bisect.bisect_left(account.seqs, seq_hi)
    assert 0 <= first <= len(account.seqs) and 0 <= last <= len(account.seqs)
    states = [None if seq_lo is None else account.state_at(seq_lo)]
    entries = account.entries
    for n in range(first, max(first, last)):
        # A repay and its cure commit in one transaction: nobody meets the state between.
        if n + 1 < len(entries) and _cures(entries[n], entries[n + 1]):
            continue
        states.append(account.state_at(account.seqs[n]))
    return states, max(0, last - first)


def check(a: Analysis) -> list[Finding]:
    findings = []
    for group in a.groups.values():
        op = group.attempts[0]  # its first
        if op.outcome != "fail" or op.http_status not in JUDGED_STATUSES or op.complete_ms is None:
            continue
        if group.account_id is None or not _judgeable(group):
            continue
        states, racing = candidates(a.account(group.account_id), op.invoke_ms, op.complete_ms)
        assert states and racing >= 0
        answers = [_answer(state, group) for state in states]
        code = op.response.get("error") if isinstance(op.response, dict) else None
        if all(answer is None for answer in answers):
            verdict = ("wrongful_rejection", "the contract required it to be accepted")
        elif code == "not_found" and all(state is not None for state in states):
            verdict = ("wrongful_rejection", "the account certainly existed")
        elif all(answer is not None for answer in answers) and code not in answers:
            verdict = ("contract_violation", f"the contract's answer was "
                       f"{' or '.join(sorted({repr(answer) for answer in answers}))}")
        else:
            continue
        findings.append(_finding(a, group, states, answers, racing, verdict,
                                 described(a.faults.active_at(op.invoke_ms))))
    return findings


def _cures(entry: dict, following: dict) -> bool:
    return (entry["type"] == "repay"
            and following["request_id"] == contract.cure_request_id(entry["request_id"]))


def _judgeable(group: WriteGroup) -> bool:
    if group.kind == "open":
        return True
    value = group.value()
    return type(value) is int if group.kind != "status" else type(value) is str


def _answer(state: oracle.State | None, group: WriteGroup) -> str | None:
    """The contract's answer to this write on this state: None (accept) or an error code."""
    if group.kind == "open":
        return None if state is None else "exists"
    if state is None:
        return "not_found"
    return oracle.judge(state, group.kind, group.value())


def _finding(a: Analysis, group: WriteGroup, states: list, answers: list, racing: int,
             verdict: tuple[str, str], faults: list[str]) -> Finding:
    op = group.first
    code = op.response.get("error") if isinstance(op.response, dict) else None
    kind, why = verdict
    request = op.request or {}
    if group.kind in ("draw", "repay"):
        what = f"{group.kind} of {fen(request.get('amount'))}"
    elif group.kind in ("open", "limit"):
        what = f"{group.kind} with credit line {fen(request.get('credit_line'))}"
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
    return a.finding(
        kind=kind, severity="major", account_id=group.account_id, first_seen_ms=op.complete_ms,
        expected={"answers": sorted({answer or "accept" for answer in answers})},
        actual={"http_status": op.http_status, "error": code}, checker=NAME,
        faults_active=faults, explanation=(f"The {what} on account {group.account_id!r} (request_id "
                     f"{group.request_id!r}), sent at t={op.invoke_ms} ms, was rejected at "
                     f"t={op.complete_ms} ms with {op.http_status} {code!r}, but {state_words}: "
                     f"{why}{faults_words}."))
