"""Ledger rules: the ledger is well formed, and replayed account by account in seq order every
entry was allowed by the contract at its seq, with each due cure entry present and no other."""

from __future__ import annotations

import operator

from .. import contract, oracle
from ..analysis import AccountIndex, Analysis
from ..entries import is_cure_entry
from ..findings import Finding, entry_words, fen
from ..write_groups import entry_owner

NAME = "ledger"
EXAMPLES_MAX = 3
_STATE = operator.itemgetter(1)


def check(a: Analysis) -> list[Finding]:
    findings = _structure(a, a.problems)
    for account_id, account in a.accounts.items():
        findings.extend(_rules(a, account_id, account))
    return findings


def _structure(a: Analysis, problems: list[tuple[str, str, object]]) -> list[Finding]:
    # One finding per kind of malformation: a service that writes `at` wrongly does so on every
    # entry, and that is one bug.
    by_code: dict[str, list[tuple[str, object]]] = {}
    for code, words, entry in problems:
        by_code.setdefault(code, []).append((words, entry))
    findings = []
    for code, cases in by_code.items():
        words, entry = cases[0]
        account_id = entry.get("account_id") if isinstance(entry, dict) else None
        more = f"; {len(cases)} entries are malformed this way" if len(cases) > 1 else ""
        findings.append(a.finding(kind="contract_violation", severity="major",
            account_id=account_id if contract.is_id(account_id) else None, first_seen_ms=None,
            expected=None, actual=[e for _, e in cases[:EXAMPLES_MAX]], checker=NAME,
            explanation=f"The ledger breaks the contract's entry format: {words}{more}. Such "
                        f"entries are left out of the rule checks."))
    return findings


def _rules(a: Analysis, account_id: str, account: AccountIndex) -> list[Finding]:
    findings: list[Finding] = []
    entries = account.entries
    # The state after each entry, from the account's one replay (the timeline starts at its
    # open: before it, there is no state).
    after = [None] * (len(entries) - len(account.timeline)) + list(map(_STATE, account.timeline))
    assert len(after) == len(entries)

    def violation(entry: dict, severity: str, expected, words: str) -> None:
        group, _ = entry_owner(entry["request_id"], a.groups)
        when = ""
        seen_ms = None
        if group is not None:
            seen_ms = group.ack_ms if group.ack_ms is not None else group.first_invoke_ms
            when = f" (request sent at t={group.first_invoke_ms} ms)"
        findings.append(a.finding(kind="ledger_rule_violation", severity=severity, account_id=account_id,
            first_seen_ms=seen_ms, expected=expected, actual=entry, checker=NAME,
            explanation=f"Account {account_id!r}, ledger seq={entry['seq']} "
                        f"({entry_words(entry)}, request_id {entry['request_id']!r}){when}: {words}"))

    state: oracle.State | None = None
    opened = False
    curing: dict | None = None  # the repay whose cure entry must come next
    for n, entry in enumerate(entries):
        if curing is not None:
            cure_id = contract.cure_request_id(curing["request_id"])
            due = curing
            curing = None
            if entry["request_id"] == cure_id:
                if entry["type"] != "status" or entry.get("status") != "active" \
                        or entry.get("reason") != contract.CURE_REASON:
                    violation(entry, "major", {"type": "status", "status": "active",
                                            "reason": contract.CURE_REASON},
                           "the cure entry of the repay before it does not set the status to "
                           "'active' with reason 'cured'.")
                state = after[n]
                continue
            _missing_cure(violation, due, state, entry)
        if entry["type"] == "open":
            if opened:
                violation(entry, "major", None, "a second open entry for an account that is "
                       "already open; it resets the account's line and balance.")
            opened = True
            state = after[n]
            continue
        if state is None:
            violation(entry, "major", {"type": "open"}, "the account's first entry must be its "
                   "open; this entry has no account to apply to.")
            continue
        kind = entry["type"]
        if kind == "status" and is_cure_entry(entry):
            violation(entry, "major", None, f"a cure entry where none is due: the entry before it "
                   f"did not clear an overdue balance (state before: {_state(state)}).")
            state = after[n]
            continue
        assert opened and state is not None
        value = oracle.entry_value(entry)
        error = oracle.judge(state, kind, value)
        if error is not None:
            severity = "critical" if kind == "draw" or error == "overpayment" else "major"
            violation(entry, severity, {"error": error}, _why(entry, state, error))
        if oracle.cures(state, kind, value):
            curing = entry
        state = after[n]
    assert state is (after[-1] if after else None)
    if curing is not None:
        _missing_cure(violation, curing, state, None)
    return findings


def _missing_cure(violation, repay: dict, state: oracle.State, instead: dict | None) -> None:
    follows = (f"the next entry is seq={instead['seq']} ({entry_words(instead)})" if instead
               else "no entry follows it")
    violation(repay, "major", {"next_request_id": contract.cure_request_id(repay["request_id"])},
           f"this repay cleared an overdue balance, so its cure entry (status 'active', reason "
           f"'cured') must follow in the same transaction, but {follows}: the fully repaid "
           f"account stays {state.status} and unusable.")


def _why(entry: dict, state: oracle.State, error: str) -> str:
    kind = entry["type"]
    before = f"state before: {_state(state)}"
    if error == "insufficient_limit":
        return (f"a draw of {fen(entry['amount'])} was committed when only "
                f"{fen(state.available)} was available ({before}): an overdraw.")
    if error == "overpayment":
        return (f"a repay of {fen(entry['amount'])} was committed against an outstanding of "
                f"{fen(state.outstanding)}, taking it below zero ({before}).")
    if error == "account_not_active":
        return f"a {kind} was committed on a {state.status} account ({before})."
    if error == "outstanding_balance":
        return (f"the account was closed with {fen(state.outstanding)} still outstanding "
                f"({before}).")
    return f"the contract answers {error!r} to this {kind} ({before})."


def _state(state: oracle.State) -> str:
    return (f"credit line {fen(state.credit_line)}, outstanding {fen(state.outstanding)}, "
            f"available {fen(state.available)}, {state.status}")
