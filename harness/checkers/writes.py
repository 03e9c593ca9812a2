"""Writes: every acknowledged write is in the ledger exactly once, every rejected write is absent,
every unknown write is there at most once, each as it was requested; retries return the original
outcome; money is conserved per account."""

from __future__ import annotations

from typing import Any

from .. import contract
from ..analysis import Analysis
from ..findings import Finding, fen
from ..history import Op
from ..write_groups import WriteGroup, entry_owner

NAME = "writes"
MONEY_KINDS = ("draw", "repay")
MONEY_FIELDS = ("amount", "credit_line")
# The rejections the contract allows for each write (the harness only sends well-formed ones).
ALLOWED_ERRORS = {
    "open": ("exists",),
    "draw": ("not_found", "insufficient_limit", "account_not_active"),
    "repay": ("not_found", "overpayment", "account_not_active"),
    "limit": ("not_found", "account_not_active"),
    "status": ("not_found", "outstanding_balance"),
}
EXAMPLES_MAX = 3
_NO_ENTRIES: list[dict] = []  # a write without entries (shared: nothing here changes it)


def check(a: Analysis) -> list[Finding]:
    groups = a.groups
    entries_by_request: dict[str, list[dict]] = {}
    unsent: list[dict] = []
    own_group = groups.get
    for entry in a.ledger:
        # Malformed entries are the ledger checker's; an entry with a usable request_id still
        # counts here, so a garbled entry is not also called a lost write.
        if not isinstance(entry, dict):
            continue
        request_id = entry.get("request_id")
        if type(request_id) is not str:
            continue
        group = own_group(request_id)  # `entry_owner`'s first question, asked inline
        if group is None:
            group, is_cure = entry_owner(request_id, groups)
            if group is None:
                unsent.append(entry)
                continue
            if is_cure:
                continue
        known = entries_by_request.get(group.request_id)
        if known is None:
            entries_by_request[group.request_id] = [entry]
        else:
            known.append(entry)

    findings: list[Finding] = []
    tainted: set[str] = set()
    problems: dict[tuple[str | None, str], list[tuple[Op, str]]] = {}
    for group in groups.values():
        entries = entries_by_request.get(group.request_id, _NO_ENTRIES)
        if _plain(group, entries) or _plain_refusal(group, entries):
            continue
        found = _presence(a, group, entries) + _mismatches(a, group, entries)
        if found:
            tainted.add(str(group.account_id))
            tainted.update(str(e.get("account_id")) for e in entries)
        findings.extend(found)
        for op, topic, words in _protocol(group, entries):
            problems.setdefault((group.account_id, topic), []).append((op, words))
    # Accounts this run never touched belong to someone else sharing the target (an earlier
    # run, real data): their entries are not this history's to explain.
    for entry in unsent:
        if entry.get("account_id") in a.touched:
            tainted.add(str(entry.get("account_id")))
            findings.append(_unsent(a, entry))
    findings.extend(_contract_findings(a, problems))
    findings.extend(_conservation(a, tainted))
    assert all(f.checker == NAME for f in findings)
    return findings


def _plain(group: WriteGroup, entries: list[dict]) -> bool:
    """The usual write, with nothing to say about it: one attempt, acknowledged (201) with a
    receipt naming its one entry, which is as requested. Decided inline, since most writes of
    a run are this; anything else goes through every rule below."""
    if len(entries) != 1 or len(group.attempts) != 1:
        return False
    op, entry = group.attempts[0], entries[0]
    body = op.response
    if op.outcome != "ok" or op.http_status != 201 or op.error or type(body) is not dict \
            or entry.get("account_id") != group.account_id or entry.get("type") != group.kind:
        return False
    if op.f == "open":  # an open names its entry only when it chooses to
        for name in ("seq", "entry_id"):
            if name in body and body.get(name) != entry.get(name):
                return False
    elif body.get("seq") != entry.get("seq") or body.get("entry_id") != entry.get("entry_id"):
        return False
    request = op.request
    for name in contract.ENTRY_FIELDS_BY_TYPE[group.kind]:
        if entry.get(name) != request.get(name):
            return False
    return True


def _plain_refusal(group: WriteGroup, entries: list[dict]) -> bool:
    """The usual rejection, with nothing to say about it either: one attempt, refused with an
    error the contract gives that write, and no entry (what every rule below concludes)."""
    if entries or len(group.attempts) != 1:
        return False
    op = group.attempts[0]
    if op.outcome != "fail" or op.http_status == 400 or (op.error
                                                         and op.error.startswith("contract:")):
        return False
    code = _error_code(op.response)
    return code in ALLOWED_ERRORS.get(op.f, ()) and contract.ERRORS.get(code) == op.http_status


# -- presence: exactly once, never, at most once --------------------------------------------------

def _presence(a: Analysis, group: WriteGroup, entries: list[dict]) -> list[Finding]:
    if len(entries) == (group.status != "rejected"):  # the usual case: nothing to say
        return []
    money = group.kind in MONEY_KINDS
    what = _describe_write(group)
    seqs = ", ".join(f"seq={e.get('seq')}" for e in entries)
    if group.status == "acknowledged" and not entries:
        ok = next(op for op in group.attempts if op.outcome == "ok")
        return [a.finding(kind="lost_write", severity="critical", account_id=group.account_id,
                       first_seen_ms=ok.complete_ms, expected={"entries": 1}, actual={"entries": 0},
                       checker=NAME, explanation=(
                           f"{what} was acknowledged (201) at t={ok.complete_ms} ms, but the "
                           f"ledger has no entry with request_id {group.request_id!r}: the user "
                           f"was told it happened and the books say it never did."))]
    if group.status == "rejected" and entries:
        last = group.attempts[-1]
        return [a.finding(kind="phantom_write", severity="critical" if money else "major",
                       account_id=group.account_id, first_seen_ms=last.complete_ms,
                       expected={"entries": 0}, actual={"entries": len(entries)},
                       checker=NAME, explanation=(
                           f"{what} was rejected with {last.http_status} "
                           f"{_error_code(last.response)!r} at t={last.complete_ms} ms, yet the "
                           f"ledger holds it ({seqs}): the user was told no, the books say yes."))]
    if len(entries) > 1:
        heard = {"acknowledged": "acknowledged", "unknown": "sent without a definite answer",
                 "rejected": "rejected"}[group.status]
        return [a.finding(kind="duplicate_write", severity="critical" if money else "major",
                       account_id=group.account_id, first_seen_ms=group.first.invoke_ms,
                       expected={"entries": 1}, actual={"entries": len(entries)},
                       checker=NAME, explanation=(
                           f"{what} was {heard} ({len(group.attempts)} attempt(s) from "
                           f"t={group.first_invoke_ms} ms) and is in the ledger {len(entries)} "
                           f"times ({seqs}); one request_id must make at most one entry."))]
    return []


def _mismatches(a: Analysis, group: WriteGroup, entries: list[dict]) -> list[Finding]:
    if group.status == "rejected":
        return []
    request = group.first.request or {}
    names = contract.ENTRY_FIELDS_BY_TYPE.get(group.kind, ())
    if all(e.get("account_id") == group.account_id and e.get("type") == group.kind
           and all(e.get(name) == request.get(name) for name in names) for e in entries):
        return []  # the usual case, decided without building anything
    expected = {"account_id": group.account_id, "type": group.kind}
    expected.update({name: request.get(name) for name in names})
    findings = []
    for entry in entries:
        actual = {name: entry.get(name) for name in expected}
        wrong = [name for name in expected if actual[name] != expected[name]]
        if not wrong:
            continue
        money = any(name in MONEY_FIELDS for name in wrong) or (
            "type" in wrong and {group.kind, entry.get("type")} & set(MONEY_KINDS))
        details = "; ".join(f"{name} {_show(name, expected[name])} requested, "
                            f"{_show(name, actual[name])} recorded" for name in wrong)
        findings.append(a.finding(kind="amount_mismatch", severity="critical" if money else "major",
            account_id=group.account_id, first_seen_ms=group.ack_ms or group.first.invoke_ms,
            expected=expected, actual=actual, checker=NAME, explanation=(
                f"{_describe_write(group)} is in the ledger at seq={entry.get('seq')} but not "
                f"as requested: {details}.")))
    return findings


def _unsent(a: Analysis, entry: dict) -> Finding:
    money = entry.get("type") in MONEY_KINDS
    amount = f" of {fen(entry['amount'])}" if type(entry.get("amount")) is int else ""
    return a.finding(kind="phantom_write", severity="critical" if money else "major",
                  account_id=entry.get("account_id"), first_seen_ms=None,
                  expected=None, actual=entry, checker=NAME, explanation=(
                      f"The ledger holds a {entry.get('type')} entry{amount} at seq="
                      f"{entry.get('seq')} on account {entry.get('account_id')!r} with request_id "
                      f"{entry.get('request_id')!r}, which the harness never sent: money or limit "
                      f"moved without any request."))


# -- protocol: status codes, receipts, idempotent retries -----------------------------------------

def _protocol(group: WriteGroup, entries: list[dict]) -> list[tuple[Op, str, str]]:
    """(attempt, topic, words) for each way this write's replies broke the contract; findings
    are grouped by topic."""
    out: list[tuple[Op, str, str]] = []
    attempts = group.attempts
    if len(attempts) == 1:  # the usual case: one attempt acknowledged with its receipt
        op = attempts[0]
        if op.outcome == "ok" and op.http_status == 201 and not op.error and len(entries) == 1 \
                and _receipt_problem(op, entries) is None:
            return out
    for op in attempts:
        if op.error and op.error.startswith("contract:"):
            out.append((op, "reply", f"The reply to {op.f} {group.request_id!r} at "
                            f"t={op.complete_ms} ms broke the contract ({op.error})"))
        elif op.outcome == "fail":
            code = _error_code(op.response)
            if op.http_status == 400:
                out.append((op, "status", f"The {op.f} {group.request_id!r} was answered 400 "
                                f"{code!r} at t={op.complete_ms} ms although the request was "
                                f"well formed"))
            elif (code not in ALLOWED_ERRORS.get(op.f, ())
                  or contract.ERRORS.get(code) != op.http_status):
                out.append((op, "status", f"The {op.f} {group.request_id!r} was answered "
                                f"{op.http_status} {code!r} at t={op.complete_ms} ms, which the "
                                f"contract never gives a {op.f}"))
        if op.outcome == "ok" and op.http_status not in (None, 201):
            out.append((op, "status", f"The {op.f} {group.request_id!r} was acknowledged with "
                                      f"{op.http_status} instead of 201 at t={op.complete_ms} ms"))
        if op.outcome == "ok" and entries:
            receipt = _receipt_problem(op, entries)
            if receipt:
                out.append((op, "receipt", f"The {op.f} {group.request_id!r} acknowledged at "
                                f"t={op.complete_ms} ms {receipt}"))
    out.extend(_idempotency(group))
    return out


def _receipt_problem(op: Op, entries: list[dict]) -> str | None:
    body = op.response if isinstance(op.response, dict) else {}
    if op.f != "open" and any(e.get("seq") == body.get("seq")
                              and e.get("entry_id") == body.get("entry_id") for e in entries):
        return None  # the usual case, decided without building anything
    # An open answers with the account's state; it only names its entry when it chooses to.
    names = [n for n in ("entry_id", "seq") if op.f != "open" or n in body]
    if not names:
        return None
    claimed = {n: body.get(n) for n in names}
    if any(all(e.get(n) == claimed[n] for n in names) for e in entries):
        return None
    recorded = {n: entries[0].get(n) for n in names}
    return f"with {claimed}, but its ledger entry is {recorded}"


def _idempotency(group: WriteGroup) -> list[tuple[Op, str, str]]:
    # A 400 is not remembered, and an unknown outcome tells nothing to compare with.
    definite = [op for op in group.attempts
                if op.outcome in ("ok", "fail") and op.http_status != 400]
    if len(definite) < 2:
        return []
    first = definite[0]
    for op in definite[1:]:
        if op.http_status != first.http_status or op.response != first.response:
            mixed = (" (the same request both accepted and rejected)"
                     if op.outcome != first.outcome else "")
            return [(op, "idempotency",
                     f"The {op.f} {group.request_id!r} answered {first.http_status} "
                     f"{_brief(first.response)} at t={first.complete_ms} ms, but its retry at "
                     f"t={op.invoke_ms} ms got {op.http_status} {_brief(op.response)}{mixed}")]
    return []


def _contract_findings(a: Analysis,
                       problems: dict[tuple[str | None, str], list[tuple[Op, str]]],
                       ) -> list[Finding]:
    # Grouped per account and topic: a service that answers 200 to every write is one bug, not
    # fifty thousand.
    findings = []
    for (account_id, _topic), cases in problems.items():
        first_op, first_words = cases[0]
        more = f" ({len(cases)} such replies on this account in all)" if len(cases) > 1 else ""
        findings.append(a.finding(kind="contract_violation", severity="major", account_id=account_id,
            first_seen_ms=(first_op.complete_ms if first_op.complete_ms is not None
                           else first_op.invoke_ms),
            expected=None, actual=[words for _, words in cases[:EXAMPLES_MAX]],
            checker=NAME, explanation=first_words + more + "."))
    return findings


# -- money conservation ---------------------------------------------------------------------------

def _conservation(a: Analysis, tainted: set[str]) -> list[Finding]:
    malformed_accounts = {str(e.get("account_id")) for _, _, e in a.problems
                          if isinstance(e, dict)}
    drawn: dict[str, int] = {}
    repaid: dict[str, int] = {}
    undecided: set[str] = set()
    for group in a.groups.values():
        if group.kind not in MONEY_KINDS:
            continue
        account = str(group.account_id)
        if group.status == "unknown":
            undecided.add(account)
        elif group.status == "acknowledged":
            amount = group.value()
            if type(amount) is not int:
                undecided.add(account)
                continue
            sums = drawn if group.kind == "draw" else repaid
            sums[account] = sums.get(account, 0) + amount
    findings = []
    for account in sorted(set(drawn) | set(repaid)):
        if account in undecided or account in tainted or account in malformed_accounts:
            continue
        expected = drawn.get(account, 0) - repaid.get(account, 0)
        timeline = a.account(account).timeline
        actual = timeline[-1][1].outstanding if timeline else 0
        if expected == actual:
            continue
        findings.append(a.finding(kind="ledger_rule_violation", severity="critical", account_id=account,
            first_seen_ms=None, expected={"outstanding": expected}, actual={"outstanding": actual},
            checker=NAME, explanation=(
                f"Account {account!r}: the acknowledged draws ({fen(drawn.get(account, 0))}) "
                f"minus the acknowledged repayments ({fen(repaid.get(account, 0))}) come to "
                f"{fen(expected)} outstanding, with no write of unknown outcome, but the "
                f"ledger's entries add up to {fen(actual)}: money appeared or vanished.")))
    return findings


# -- words ----------------------------------------------------------------------------------------

def _describe_write(group: WriteGroup) -> str:
    request = group.first.request or {}
    if group.kind in MONEY_KINDS:
        detail = f" of {fen(request.get('amount'))}"
    elif group.kind == "open":
        detail = f" with a credit line of {fen(request.get('credit_line'))}"
    elif group.kind == "limit":
        detail = f" to {fen(request.get('credit_line'))}"
    else:
        detail = f" to {request.get('status')!r}"
    return (f"The {group.kind}{detail} on account {group.account_id!r} "
            f"(request_id {group.request_id!r})")


def _show(name: str, value: Any) -> str:
    return fen(value) if name in MONEY_FIELDS and type(value) is int else repr(value)


def _error_code(response: Any) -> Any:
    return response.get("error") if isinstance(response, dict) else None


def _brief(response: Any) -> str:
    text = repr(response)
    return text if len(text) <= 120 else text[:117] + "..."
