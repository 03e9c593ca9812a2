"""Ledger entries as the harness reads them from a target: the contract's entry format checked
one entry at a time, the clean ledger every rule may rely on, and per-account timelines."""

from __future__ import annotations

from typing import Any, Iterable

from . import contract, oracle
from .clock import parse_rfc3339


def is_entry_request_id(value: Any) -> bool:
    # A cure appends ":cure" to its repay's id, which may push a 64-character id past the limit.
    if contract.is_id(value):
        return True
    base = contract.cured_request_id(value) if type(value) is str else None
    return base is not None and contract.is_id(base)


def is_cure_entry(entry: dict) -> bool:
    request_id = entry.get("request_id")
    return (entry.get("type") == "status" and type(request_id) is str
            and contract.cured_request_id(request_id) is not None)


def _field_ok(name: str, value: Any) -> bool:
    if name == "credit_line":
        return contract.is_fen(value, minimum=0)
    if name == "amount":
        return contract.is_fen(value, minimum=1)
    if name == "reason":
        return type(value) is str and 1 <= len(value) <= contract.REASON_LEN_MAX
    if name == "status":
        return type(value) is str and value in contract.STATUSES
    assert name == "product", name
    return type(value) is str and value in contract.PRODUCTS


def _fields_ok(entry: dict, names: tuple[str, ...]) -> bool:
    for name in names:
        if not _field_ok(name, entry.get(name)):
            return False
    return True


def _problem_quickly(entry: Any, seen_accounts: set[str],
                     seen_ats: set[str]) -> tuple[str, str] | None:
    """`entry_problem`, with the account ids and timestamps already found good remembered."""
    if type(entry) is dict:
        account_id, at = entry.get("account_id"), entry.get("at")
        # Types first: an unhashable id (a list) must be reported, not crash the set lookup.
        if type(account_id) is str and type(at) is str and account_id in seen_accounts \
                and at in seen_ats:
            return _problem_past(entry, check_account=False, check_at=False)
    problem = entry_problem(entry)
    if problem is None:
        seen_accounts.add(entry["account_id"])
        seen_ats.add(entry["at"])
    return problem


def entry_problem(entry: Any) -> tuple[str, str] | None:
    """(code, plain words) when one entry, on its own, breaks the contract's entry shape."""
    if not isinstance(entry, dict):
        return "not_object", f"an entry is not a JSON object: {entry!r:.80}"
    return _problem_past(entry, check_account=True, check_at=True)


def _problem_past(entry: dict, *, check_account: bool, check_at: bool) -> tuple[str, str] | None:
    seq = entry.get("seq")
    if type(seq) is not int or seq < 0:
        return "bad_seq", f"seq {seq!r} is not a non-negative integer"
    if not contract.is_id(entry.get("entry_id")):
        return "bad_entry_id", f"entry seq={seq} has entry_id {entry.get('entry_id')!r}"
    if not is_entry_request_id(entry.get("request_id")):
        return "bad_request_id", f"entry seq={seq} has request_id {entry.get('request_id')!r}"
    if check_account and not contract.is_id(entry.get("account_id")):
        return "bad_account_id", f"entry seq={seq} has account_id {entry.get('account_id')!r}"
    kind = entry.get("type")
    if kind not in contract.ENTRY_TYPES:
        return "bad_type", f"entry seq={seq} has unknown type {kind!r}"
    at = entry.get("at")
    if check_at and (type(at) is not str or parse_rfc3339(at) is None):
        return "bad_at", f"entry seq={seq} has `at` {at!r}, not an RFC 3339 timestamp"
    for name in contract.ENTRY_FIELDS_BY_TYPE[kind]:
        value = entry.get(name)
        if not _field_ok(name, value):
            return f"bad_{name}", f"{kind} entry seq={seq} has {name} {value!r}"
    return None


def clean_ledger(ledger: Iterable[Any]) -> tuple[list[dict], list[tuple[str, str, Any]]]:
    """The entries every rule may rely on (well formed, seq strictly increasing, entry_id
    unique), and (code, words, entry) for each one left out."""
    good: list[dict] = []
    problems: list[tuple[str, str, Any]] = []
    entry_ids: set[str] = set()
    last_seq = -1
    # An account's entries share its id and a run's entries share timestamps: each is checked
    # once (the cost of reading a large ledger is mostly these two checks).
    seen_accounts: set[str] = set()
    seen_ats: set[str] = set()
    id_match, fields_of = contract.ID_PATTERN.fullmatch, contract.ENTRY_FIELDS_BY_TYPE
    for entry in ledger:
        # The usual entry, decided inline in one expression (a large ledger is mostly these):
        # what it accepts `entry_problem` accepts too, and anything else takes the long way.
        if type(entry) is dict:
            seq, entry_id, kind = entry.get("seq"), entry.get("entry_id"), entry.get("type")
            request_id, account_id, at = (entry.get("request_id"), entry.get("account_id"),
                                          entry.get("at"))
            if type(seq) is int and seq > last_seq and type(entry_id) is str \
                    and type(request_id) is str and type(account_id) is str \
                    and type(at) is str and type(kind) is str and kind in fields_of \
                    and account_id in seen_accounts and entry_id not in entry_ids \
                    and id_match(entry_id) is not None and id_match(request_id) is not None \
                    and (at in seen_ats or parse_rfc3339(at) is not None) \
                    and _fields_ok(entry, fields_of[kind]):
                good.append(entry)
                entry_ids.add(entry_id)
                last_seq = seq
                continue
        problem = _problem_quickly(entry, seen_accounts, seen_ats)
        if problem is None and entry["seq"] <= last_seq:
            problem = ("seq_order", f"seq {entry['seq']} comes after seq {last_seq}")
        if problem is None and entry["entry_id"] in entry_ids:
            problem = ("entry_id_reused", f"entry_id {entry['entry_id']!r} appears twice "
                                          f"(again at seq {entry['seq']})")
        if problem is not None:
            problems.append((problem[0], problem[1], entry))
            continue
        good.append(entry)
        entry_ids.add(entry["entry_id"])
        last_seq = entry["seq"]
    assert all(a["seq"] < b["seq"] for a, b in zip(good, good[1:])), "seq must increase"
    return good, problems


def entries_by_account(entries: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in entries:
        out.setdefault(entry["account_id"], []).append(entry)
    return out


def account_timeline(entries: list[dict]) -> list[tuple[int, oracle.State]]:
    """`oracle.replay` of one account's entries, skipping entries before its open (the ledger
    checker reports them): a state needs an open to exist at all."""
    timelines = account_timelines(entries)
    assert len(timelines) <= 1, "the entries of one account"
    return next(iter(timelines.values()), [])


def account_timelines(entries: Iterable[dict]) -> dict[str, list[tuple[int, oracle.State]]]:
    """`account_timeline` of each account, in one pass over the entries in ledger order (in
    memory a ledger lies about in that order: reading it so is twice as fast as account by
    account)."""
    timelines: dict[str, list[tuple[int, oracle.State]]] = {}
    fields, change = oracle.VALUE_FIELD, oracle.step  # `oracle.replay`'s loop, interleaved
    for entry in entries:
        kind = entry["type"]
        timeline = timelines.get(entry["account_id"])
        if timeline is None:
            if kind != "open":
                continue
            timeline = timelines[entry["account_id"]] = []
            state = None
        else:
            state = timeline[-1][1]
        if kind not in fields:
            raise ValueError(f"unknown entry type {kind!r}")
        timeline.append((entry["seq"], change(state, kind, entry[fields[kind]])))
    assert all(a[0] < b[0] for timeline in timelines.values()
               for a, b in zip(timeline, timeline[1:])), "entries out of seq order"
    return timelines
