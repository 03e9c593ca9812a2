"""The row-by-row reference: the ledger rules judged by the harness's own ledger checker
(`harness.checkers.check` with an empty history), each display row judged against
`harness.oracle` replayed entry by entry. Slow and plainly right; the columnar engine must
agree with it finding for finding (tests/test_reconcile_equivalence.py).

The words of the display findings live here and the columnar engine uses them too: both engines
describe a flagged row the same way, so they differ only in how they find it.
"""

from __future__ import annotations

import datetime as dt
import time
import zlib
from dataclasses import dataclass
from typing import Any

import polars as pl

from .. import oracle
from ..checkers import CheckConfig, check
from ..entries import entry_problem as entry_format_problem
from ..findings import Finding, view_words
from ..history import History
from ..progress import QUIET, Progress
from . import budget
from .sources import LEDGER_COLUMNS, Table

CHECKER = "reconcile"
VIEW_FIELDS = oracle.DISPLAY_FIELDS
ENTRY_FIELDS = {"open": ("product", "credit_line"), "draw": ("amount",), "repay": ("amount",),
                "limit": ("credit_line", "reason"), "status": ("status", "reason")}


# -- entries --------------------------------------------------------------------------------------

def entry_dict(row: dict) -> dict:
    """A ledger row as the contract's entry: its non-null contract fields, `at` as text."""
    entry = {name: row.get(name) for name in LEDGER_COLUMNS if row.get(name) is not None}
    at = entry.get("at")
    if isinstance(at, dt.datetime):
        entry["at"] = at.isoformat()
    return entry


def entry_problem(entry: dict) -> str | None:
    """The code of why one entry breaks the contract's entry format (None when it does not):
    the ledger checker's own rule (`harness.entries.entry_problem`)."""
    problem = entry_format_problem(entry)
    return None if problem is None else problem[0]


def is_rfc3339(text: Any) -> bool:
    if type(text) is not str:
        return False
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return stamp.tzinfo is not None


def well_formed(entries: list[dict]) -> list[dict]:
    """The entries the rules judge: well formed and entry_id not seen before (seq order)."""
    seen: set[str] = set()
    good = []
    for entry in entries:  # bounded by the ledger
        if entry_problem(entry) is None and entry["entry_id"] not in seen:
            seen.add(entry["entry_id"])
            good.append(entry)
    return good


# -- display findings (shared with the columnar engine) ------------------------------------------

@dataclass
class DisplayCase:
    """One display row that breaks a display rule, or one ledger account without a row.

    `problem`: unknown_account, null_diverges, future_seq, inconsistent, stale, missing_row.
    `truth`: the oracle's view at the row's as_of_seq (None when the account had no state);
    `final`: the view after the account's last entry (up to the cut); `behind`: how many of the
    account's entries the row lacks."""

    problem: str
    account_id: str
    shown: dict | None
    as_of_seq: int | None
    truth: dict | None
    final: dict | None
    last_seq: int | None
    cut_seq: int | None
    behind: int = 0


PROBLEM_KINDS = {"unknown_account": "inconsistent_display", "null_diverges": "display_divergence",
                 "future_seq": "inconsistent_display", "inconsistent": "inconsistent_display",
                 "stale": "stale_display", "missing_row": "display_divergence"}


def display_finding(case: DisplayCase) -> Finding:
    kind = PROBLEM_KINDS[case.problem]
    reference = case.truth if case.problem == "inconsistent" else case.final
    if case.problem == "missing_row":
        severity = "major"
    else:
        shown_available = case.shown["available"]
        severity = "critical" if shown_available > (reference or {}).get("available", 0) \
            else "major"
    actual = None if case.shown is None else {"account_id": case.account_id, **case.shown,
                                              "as_of_seq": case.as_of_seq}
    expected = None if reference is None else {
        **reference, "as_of_seq": case.as_of_seq if case.problem == "inconsistent"
        else case.last_seq}
    return Finding(kind=kind, severity=severity, account_id=case.account_id, first_seen_ms=None,
                   expected=expected, actual=actual, diff=_flat_diff(expected, actual),
                   explanation=_display_words(case), checker=CHECKER)


def _display_words(case: DisplayCase) -> str:
    who = f"The display of account {case.account_id!r}"
    shown = view_words(case.shown)
    cut = f" (the ledger cut at seq {case.cut_seq})" if case.cut_seq is not None else ""
    if case.problem == "unknown_account":
        return (f"{who} (as_of_seq={case.as_of_seq}) shows {shown}, but the ledger{cut} has no "
                f"entry for that account: a display may be old, never invented.")
    if case.problem == "null_diverges":
        return (f"{who} has as_of_seq null, so it must show the account's final state, yet it "
                f"shows {shown} while the ledger up to its last entry seq={case.last_seq}{cut} "
                f"says {view_words(case.final)}.")
    if case.problem == "future_seq":
        return (f"{who} claims as_of_seq={case.as_of_seq}, past the account's last ledger entry "
                f"seq={case.last_seq}{cut}: it claims entries that do not exist. It shows "
                f"{shown}; the ledger says {view_words(case.final)}.")
    if case.problem == "inconsistent":
        truth = (f"the ledger up to seq {case.as_of_seq} gives {view_words(case.truth)}"
                 if case.truth else f"the account had no open entry up to seq {case.as_of_seq}")
        return (f"{who} shows {shown}, claiming as_of_seq={case.as_of_seq}, but {truth}; a "
                f"display may be old, never invented.")
    if case.problem == "stale":
        entries = "entry" if case.behind == 1 else "entries"
        return (f"{who} shows {shown} as of seq {case.as_of_seq}, {case.behind} {entries} "
                f"behind: by seq {case.cut_seq} (the --as-of-seq cut) the account's last entry "
                f"was seq={case.last_seq} and the ledger said {view_words(case.final)}.")
    assert case.problem == "missing_row", case.problem
    return (f"Account {case.account_id!r} is in the ledger{cut} (last entry seq={case.last_seq}, "
            f"{view_words(case.final)}), but the display has no row for it: the app would show "
            f"nothing, or a default, for this account.")


def _flat_diff(expected: dict | None, actual: dict | None) -> dict | None:
    """deepdiff's verbose shape for two flat dicts, without its cost per finding."""
    if expected is None or actual is None:
        return None
    changed = {f"root[{name!r}]": {"new_value": actual.get(name), "old_value": value}
               for name, value in expected.items() if actual.get(name) != value}
    return {"values_changed": changed} if changed else None


# -- the engine -----------------------------------------------------------------------------------

def run(ledger: Table, display: Table, cut_seq: int | None,
        partition: tuple[int, int] | None, progress: Progress = QUIET,
        findings_max: int = budget.FINDINGS_MAX) -> tuple[list[Finding], dict]:
    """Findings and stage seconds, row by row."""
    seconds: dict[str, float] = {}
    progress.phase("judging row by row (the reference engine)")
    started = time.perf_counter()
    ledger_rows = _partitioned(ledger.frame, partition)
    display_rows = _partitioned(display.frame, partition)
    entries = [entry_dict(row) for row in ledger_rows]
    good = well_formed(entries)
    timelines = _timelines(good)
    seconds["derive"] = _lap(started)
    started = time.perf_counter()
    ledger_findings = check(History(), entries, CheckConfig()).findings
    seconds["check"] = _lap(started)
    started = time.perf_counter()
    cases = display_cases(display_rows, timelines, cut_seq)
    seconds["compare"] = _lap(started)
    counts: dict[str, int] = {}
    for kind in [f.kind for f in ledger_findings] + [PROBLEM_KINDS[c.problem] for c in cases]:
        counts[kind] = counts.get(kind, 0) + 1  # bounded by the findings
    budget.check(counts, findings_max)  # the columnar engine's bound, held the same
    started = time.perf_counter()
    findings = ledger_findings + [display_finding(case) for case in cases]
    seconds["classify"] = _lap(started)
    stats = {"accounts": len(timelines), "ledger_entries": len(entries),
             "display_rows": len(display_rows)}
    return findings, {**stats, "seconds": seconds}


def _lap(started: float) -> float:
    return time.perf_counter() - started


def _partitioned(frame: pl.DataFrame, partition: tuple[int, int] | None) -> list[dict]:
    rows = frame.drop("row").to_dicts()
    if partition is None:
        return rows
    k, n = partition
    crc: dict[str, int] = {}
    kept = []
    for row in rows:  # bounded by the table
        account_id = row.get("account_id")
        if account_id is None:
            # Rows without an account belong to partition 1, so exactly one partition has them.
            if k == 1:
                kept.append(row)
            continue
        if account_id not in crc:
            crc[account_id] = zlib.crc32(account_id.encode("utf-8"))
        if crc[account_id] % n == k - 1:
            kept.append(row)
    return kept


@dataclass
class _Timeline:
    seqs: list[int]
    states: list[tuple[int, oracle.State]]

    @property
    def last_seq(self) -> int:
        return self.seqs[-1]

    @property
    def final(self) -> dict | None:
        return state_view(self.states[-1][1]) if self.states else None

    def view_at(self, seq: int) -> dict | None:
        state = oracle.state_at(self.states, seq)
        return state_view(state) if state is not None else None


def state_view(state: oracle.State) -> dict:
    """The display fields of a state, by the contract's formula. Not `State.view`: a ledger that
    broke the rules (a repay past the balance) leaves a negative outstanding, whose available
    exceeds the credit line, and the export must still be judged."""
    available = max(0, state.credit_line - state.outstanding) if state.status == "active" else 0
    return {"credit_line": state.credit_line, "outstanding": state.outstanding,
            "available": available, "status": state.status, "usable": available > 0}


def _timelines(good: list[dict]) -> dict[str, _Timeline]:
    by_account: dict[str, list[dict]] = {}
    for entry in good:  # bounded by the ledger
        by_account.setdefault(entry["account_id"], []).append(entry)
    out = {}
    for account_id, entries in by_account.items():  # bounded by the accounts
        first_open = next((n for n, e in enumerate(entries) if e["type"] == "open"), None)
        # Entries before the first open have no account to apply to (the checker reports them).
        states = oracle.replay(entries[first_open:]) if first_open is not None else []
        out[account_id] = _Timeline([e["seq"] for e in entries], states)
    return out


def display_cases(rows: list[dict], timelines: dict[str, _Timeline],
                  cut_seq: int | None) -> list[DisplayCase]:
    cases = []
    shown_accounts = set()
    for row in rows:  # bounded by the display
        account_id = row["account_id"]
        shown_accounts.add(account_id)
        case = _judge_row(row, timelines.get(account_id), cut_seq)
        if case is not None:
            cases.append(case)
    for account_id, timeline in timelines.items():  # bounded by the accounts
        if account_id not in shown_accounts:
            cases.append(DisplayCase("missing_row", account_id, None, None, None, timeline.final,
                                     timeline.last_seq, cut_seq))
    return cases


def _judge_row(row: dict, timeline: _Timeline | None, cut_seq: int | None) -> DisplayCase | None:
    shown = {name: row[name] for name in VIEW_FIELDS}
    as_of_seq = row["as_of_seq"]
    account_id = row["account_id"]
    if timeline is None:
        return DisplayCase("unknown_account", account_id, shown, as_of_seq, None, None, None,
                           cut_seq)
    final, last_seq = timeline.final, timeline.last_seq

    def case(problem: str, truth: dict | None = None, behind: int = 0) -> DisplayCase:
        return DisplayCase(problem, account_id, shown, as_of_seq, truth, final, last_seq, cut_seq,
                           behind)

    if as_of_seq is None:
        return None if shown == final else case("null_diverges")
    if as_of_seq > last_seq:
        return case("future_seq")
    truth = timeline.view_at(as_of_seq)
    if truth != shown:
        return case("inconsistent", truth)
    if cut_seq is not None and as_of_seq < last_seq:
        return case("stale", truth, sum(1 for s in timeline.seqs if s > as_of_seq))
    return None
