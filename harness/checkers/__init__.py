"""Checkers: pure functions from (history, ledger) to findings, shared by run, prop, load and
reconcile. Each module holds one checker: `check(history, ledger, config) -> list[Finding]`."""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import contract, oracle
from ..findings import Finding, make
from ..history import FAULT_FS, FaultWindow, History, Op


@dataclass(frozen=True)
class CheckConfig:
    # After the last write to an account its display must equal the oracle within this.
    sla_ms: int = 1000
    # A stale display whose lag exceeds its allowance by at most this is `minor`, not `major`.
    stale_grace_ms: int = 0


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2}
LAG_SAMPLES_MAX = 20_000


# -- writes as the history saw them ---------------------------------------------------------------

@dataclass
class WriteGroup:
    """Every attempt sharing one request_id: one logical write and what the client learnt of it."""

    request_id: str
    f: str
    account_id: str | None
    attempts: list[Op]
    # "acknowledged" (some attempt 201), "rejected" (every attempt a definite 4xx) or "unknown".
    status: str
    # Earliest acknowledgement: the latest moment by which its entry was surely committed.
    ack_ms: int | None
    first_invoke_ms: int

    @property
    def first(self) -> Op:
        return self.attempts[0]

    def value(self) -> Any:
        """What `oracle.judge` takes for this write (None for an open, which it never judges)."""
        name = {"draw": "amount", "repay": "amount", "limit": "credit_line",
                "status": "status"}.get(self.f)
        return (self.first.request or {}).get(name) if name else None


def write_groups(history: History) -> dict[str, WriteGroup]:
    """Write ops by request_id, in the order of each request's first attempt."""
    attempts: dict[str, list[Op]] = {}
    for op in history.ops:
        if op.is_write and isinstance(op.request, dict) and type(op.request_id) is str:
            attempts.setdefault(op.request_id, []).append(op)
    groups: dict[str, WriteGroup] = {}
    for request_id, ops in attempts.items():
        first = ops[0]
        account_id = first.account_id or (first.request or {}).get("account_id")
        outcomes = {op.outcome for op in ops}
        if "ok" in outcomes:
            status = "acknowledged"
        elif outcomes == {"fail"}:
            status = "rejected"
        else:
            status = "unknown"
        ack_ms = min((op.complete_ms for op in ops
                      if op.outcome == "ok" and op.complete_ms is not None), default=None)
        groups[request_id] = WriteGroup(request_id, first.f, account_id, ops, status, ack_ms,
                                        min(op.invoke_ms for op in ops))
    return groups


def entry_owner(request_id: Any, groups: dict[str, WriteGroup]) -> tuple[WriteGroup | None, bool]:
    """The write that made an entry with this request_id, and whether the entry is its cure."""
    if type(request_id) is not str:
        return None, False
    group = groups.get(request_id)
    if group is not None:
        return group, False
    if request_id.endswith(contract.CURE_SUFFIX):
        base = groups.get(request_id[: -len(contract.CURE_SUFFIX)])
        if base is not None and base.f == "repay":
            return base, True
    return None, False


def entry_acks_ms(entries: list[dict], groups: dict[str, WriteGroup]) -> list[int | None]:
    """For each entry (in seq order), a moment by which it was surely committed, or None.

    Only an acknowledgement that vouches for this very entry counts: one whose receipt names its
    seq, or one without a seq when the request made no other entry. A duplicate or a rewrite by
    a later retry may have been committed long after the first acknowledgement. A cure was
    committed with its repay."""
    made: dict[str, int] = {}
    for entry in entries:
        group, is_cure = entry_owner(entry["request_id"], groups)
        if group is not None and not is_cure:
            made[group.request_id] = made.get(group.request_id, 0) + 1
    repay_ack_ms: dict[str, int | None] = {}
    out: list[int | None] = []
    for entry in entries:
        group, is_cure = entry_owner(entry["request_id"], groups)
        if group is None:
            out.append(None)
            continue
        if is_cure:
            out.append(repay_ack_ms.get(group.request_id))
            continue
        alone = made[group.request_id] == 1
        ack_ms = min((op.complete_ms for op in group.attempts
                      if op.outcome == "ok" and op.complete_ms is not None
                      and _vouches(op.response, entry["seq"], alone)), default=None)
        repay_ack_ms[group.request_id] = ack_ms
        out.append(ack_ms)
    return out


def _vouches(response: Any, seq: int, alone: bool) -> bool:
    named = response.get("seq") if isinstance(response, dict) else None
    return named == seq if named is not None else alone


# -- the ledger -----------------------------------------------------------------------------------

_FIELDS_BY_TYPE = {
    "open": ("product", "credit_line"),
    "draw": ("amount",),
    "repay": ("amount",),
    "limit": ("credit_line", "reason"),
    "status": ("status", "reason"),
}


def is_entry_request_id(value: Any) -> bool:
    # A cure appends ":cure" to its repay's id, which may push a 64-character id past the limit.
    if contract.is_id(value):
        return True
    return (type(value) is str and value.endswith(contract.CURE_SUFFIX)
            and contract.is_id(value[: -len(contract.CURE_SUFFIX)]))


def entry_problem(entry: Any) -> tuple[str, str] | None:
    """(code, plain words) when one entry, on its own, breaks the contract's entry shape."""
    if not isinstance(entry, dict):
        return "not_object", f"an entry is not a JSON object: {entry!r:.80}"
    seq = entry.get("seq")
    if type(seq) is not int or seq < 0:
        return "bad_seq", f"seq {seq!r} is not a non-negative integer"
    if not contract.is_id(entry.get("entry_id")):
        return "bad_entry_id", f"entry seq={seq} has entry_id {entry.get('entry_id')!r}"
    if not is_entry_request_id(entry.get("request_id")):
        return "bad_request_id", f"entry seq={seq} has request_id {entry.get('request_id')!r}"
    if not contract.is_id(entry.get("account_id")):
        return "bad_account_id", f"entry seq={seq} has account_id {entry.get('account_id')!r}"
    kind = entry.get("type")
    if kind not in contract.ENTRY_TYPES:
        return "bad_type", f"entry seq={seq} has unknown type {kind!r}"
    at = entry.get("at")
    if type(at) is not str or _rfc3339(at) is None:
        return "bad_at", f"entry seq={seq} has `at` {at!r}, not an RFC 3339 timestamp"
    for name in _FIELDS_BY_TYPE[kind]:
        value = entry.get(name)
        if name == "credit_line":
            ok = contract.is_fen(value, minimum=0)
        elif name == "amount":
            ok = contract.is_fen(value, minimum=1)
        elif name == "reason":
            ok = type(value) is str and 1 <= len(value) <= contract.REASON_LEN_MAX
        elif name == "status":
            ok = value in contract.STATUSES and type(value) is str
        else:
            ok = value in contract.PRODUCTS and type(value) is str
        if not ok:
            return f"bad_{name}", f"{kind} entry seq={seq} has {name} {value!r}"
    return None


def _rfc3339(text: str) -> dt.datetime | None:
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def clean_ledger(ledger: Iterable[Any]) -> tuple[list[dict], list[tuple[str, str, Any]]]:
    """The entries every rule may rely on (well formed, seq strictly increasing, entry_id
    unique), and (code, words, entry) for each one left out."""
    good: list[dict] = []
    problems: list[tuple[str, str, Any]] = []
    entry_ids: set[str] = set()
    last_seq = -1
    for entry in ledger:
        problem = entry_problem(entry)
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
    """`oracle.replay`, skipping entries before the account's open (the ledger checker reports
    them): a state needs an open to exist at all."""
    for n, entry in enumerate(entries):
        if entry["type"] == "open":
            return oracle.replay(entries[n:])
    return []


def is_cure_entry(entry: dict) -> bool:
    return entry.get("type") == "status" and str(entry.get("request_id", "")).endswith(
        contract.CURE_SUFFIX)


# -- findings -------------------------------------------------------------------------------------

class HistoryViews:
    """What to hand `findings.make` for a finding on an account: a history holding only the ops
    its history slice can keep (the account's and the fault ops, in order). The slice comes out
    the same, but costs the account's ops instead of the whole run's, so a checker reporting
    thousands of findings stays linear."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._by_account: dict[str, list[Op]] | None = None
        self._fault_ops: list[Op] = []
        self._views: dict[str, History] = {}

    def __call__(self, account_id: str | None) -> History:
        if account_id is None:
            return self.history
        if self._by_account is None:
            self._by_account = {}
            for op in self.history.ops:
                if op.f in FAULT_FS:
                    self._fault_ops.append(op)
                elif op.account_id is not None:
                    self._by_account.setdefault(op.account_id, []).append(op)
        view = self._views.get(account_id)
        if view is None:
            ops = heapq.merge(self._by_account.get(account_id, []), self._fault_ops,
                              key=lambda op: op.index)
            view = History(meta=self.history.meta, ops=list(ops))
            self._views[account_id] = view
        return view


def report(views: HistoryViews, **fields: Any) -> Finding:
    """`findings.make` over the finding's account view."""
    return make(views(fields.get("account_id")), **fields)


# -- faults ---------------------------------------------------------------------------------------

def delay_of(window: FaultWindow) -> int:
    value = window.params.get("delay_ms") if window.kind == "delay_sync" else 0
    return value if type(value) is int and value > 0 else 0


class FaultIndex:
    """Which faults were on at a given moment, answered by bisection: the active set only
    changes at a window's start or end."""

    def __init__(self, windows: list[FaultWindow]) -> None:
        self.windows = list(windows)
        points = sorted({w.start_ms for w in windows}
                        | {w.end_ms for w in windows if w.end_ms is not None})
        self._points = points
        self._at_point = [tuple(w for w in windows if w.active_at(p)) for p in points]
        # Between two points a window is on iff it started by the left one and ends after it.
        self._after_point = [tuple(w for w in windows if w.start_ms <= p
                                   and (w.end_ms is None or w.end_ms > p)) for p in points]

    def active_at(self, t_ms: int) -> tuple[FaultWindow, ...]:
        n = bisect.bisect_right(self._points, t_ms) - 1
        if n < 0:
            return ()
        return self._at_point[n] if self._points[n] == t_ms else self._after_point[n]

    def overlapping(self, lo_ms: int, hi_ms: float) -> list[FaultWindow]:
        return [w for w in self.windows if w.start_ms <= hi_ms
                and (w.end_ms is None or w.end_ms >= lo_ms)]


def kinds_of(windows: Iterable[FaultWindow]) -> list[str]:
    return sorted({w.kind for w in windows})


def described(windows: Iterable[FaultWindow]) -> list[str]:
    return [w.describe() for w in windows]


# -- the whole check ------------------------------------------------------------------------------

def percentile(sorted_values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def thinned(records: list[dict], cap: int = LAG_SAMPLES_MAX) -> list[dict]:
    """At most `cap` records spread evenly over the run."""
    if len(records) <= cap:
        return list(records)
    return [records[n * len(records) // cap] for n in range(cap)]


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_RANK[f.severity],
                                           f.first_seen_ms is None, f.first_seen_ms or 0))


def check(history: History, ledger: list[dict], config: CheckConfig | None = None) -> Verdict:
    """Every checker over one run: findings worst first (then earliest), and the run's stats:
    `ops` {f: {outcome: n}}, `accounts`, `ledger_entries`, `lag_ms` (count, p50, p90, p99, max
    and `by_fault`, see `lag_stats`), `lag_samples` (display.lag_records, thinned),
    `availability`, `coverage` {f: {fault kind: n}}, `coverage_outcomes`, `findings_by_kind`,
    `findings_by_severity`."""
    # Imported here, not at the top: each checker module imports this package's helpers.
    from . import availability, coverage, display, ledger as ledger_checker, rejections, writes

    config = config or CheckConfig()
    display_findings, lag_records = display.analyse(history, ledger, config)
    findings = sort_findings(
        writes.check(history, ledger, config)
        + ledger_checker.check(history, ledger, config)
        + rejections.check(history, ledger, config)
        + display_findings
        + availability.check(history, ledger, config)
        + coverage.check(history, ledger, config)
    )
    ops: dict[str, dict[str, int]] = {}
    accounts: set[str] = set()
    for op in history.ops:
        counts = ops.setdefault(op.f, {})
        outcome = op.outcome or "pending"
        counts[outcome] = counts.get(outcome, 0) + 1
        if op.account_id is not None:
            accounts.add(op.account_id)
    accounts.update(e["account_id"] for e in ledger
                    if isinstance(e, dict) and type(e.get("account_id")) is str)
    outcomes = coverage.outcome_stats(history)
    by_kind: dict[str, int] = {}
    by_severity: dict[str, int] = {s: 0 for s in SEVERITY_RANK}
    for finding in findings:
        by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
        by_severity[finding.severity] += 1
    stats = {
        "ops": ops,
        "accounts": len(accounts),
        "ledger_entries": len(ledger),
        "lag_ms": lag_stats(lag_records, config),
        "lag_samples": thinned(lag_records),
        "availability": availability.stats(history, config),
        "coverage": coverage.totals(outcomes),
        "coverage_outcomes": outcomes,
        "findings_by_kind": by_kind,
        "findings_by_severity": by_severity,
    }
    return Verdict(findings=findings, stats=stats)


def lag_stats(records: list[dict], config: CheckConfig) -> dict:
    """count and percentiles of every judged read's lag; `by_fault` the same over the reads
    whose lag beyond the service level was forgiven because that kind of fault was acting."""
    lags = sorted(r["lag_ms"] for r in records)
    by_fault: dict[str, list[int]] = {}
    for record in records:
        if record["lag_ms"] > config.sla_ms and not record["stale"]:
            for kind in record["faults"]:
                by_fault.setdefault(kind, []).append(record["lag_ms"])
    return {**summary(lags), "by_fault": {kind: summary(sorted(excused))
                                          for kind, excused in sorted(by_fault.items())}}


def summary(sorted_values: list[int]) -> dict:
    return {
        "count": len(sorted_values),
        "p50": percentile(sorted_values, 0.50),
        "p90": percentile(sorted_values, 0.90),
        "p99": percentile(sorted_values, 0.99),
        "max": sorted_values[-1] if sorted_values else None,
    }
