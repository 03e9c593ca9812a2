"""Statistics of a run: what the history and the ledger add up to, beside the findings. They
judge nothing (the gate may bound some of them): display lag, availability, coverage, counts."""

from __future__ import annotations

import operator

from .analysis import Analysis, CheckConfig
from .findings import SEVERITIES, Finding
from .history import FaultIndex, History

LAG_SAMPLES_MAX = 20_000
# The nemesis's own operations and phase markers are not workload.
NOT_WORKLOAD_FS = ("phase", "fault_add", "fault_remove")


def statistics(a: Analysis) -> dict:
    """`ops` {f: {outcome: n}}, `accounts`, `ledger_entries`, `availability`, `coverage`
    {f: {fault kind: n}}, `coverage_outcomes`, `fault_windows`; `lag_statistics` adds the
    display lag and `finding_counts` the findings' counts."""
    ops: dict[str, dict[str, int]] = {}
    for op in a.history.ops:
        counts = ops.setdefault(op.f, {})
        outcome = op.outcome or "pending"
        counts[outcome] = counts.get(outcome, 0) + 1
    accounts = set(a.touched)
    accounts.update(e["account_id"] for e in a.ledger
                    if isinstance(e, dict) and type(e.get("account_id")) is str)
    outcomes = coverage_outcomes(a.history, a.faults)
    return {
        "ops": ops,
        "accounts": len(accounts),
        "ledger_entries": len(a.ledger),
        "availability": availability(a.history, a.faults),
        "coverage": coverage_totals(outcomes),
        "coverage_outcomes": outcomes,
        # So a report drawn without its history still shows when each fault acted.
        "fault_windows": [{"kind": w.kind, "label": w.describe(), "start_ms": w.start_ms,
                           "end_ms": w.end_ms} for w in a.windows],
    }


def lag_statistics(lag_records: list[dict], config: CheckConfig) -> dict:
    """`lag_ms` (see `lag_stats`) and `lag_samples` (the lag records, thinned)."""
    return {"lag_ms": lag_stats(lag_records, config), "lag_samples": thinned(lag_records)}


def finding_counts(findings: list[Finding]) -> dict:
    """`findings_by_kind` and `findings_by_severity`."""
    by_kind: dict[str, int] = {}
    by_severity: dict[str, int] = {s: 0 for s in SEVERITIES}
    for finding in findings:
        by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
        by_severity[finding.severity] += 1
    return {"findings_by_kind": by_kind, "findings_by_severity": by_severity}


# -- numbers --------------------------------------------------------------------------------------

def percentile(sorted_values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def percentiles(sorted_values: list[int]) -> dict:
    """count, p50, p90, p99 and max of an ascending list."""
    assert all(x <= y for x, y in zip(sorted_values, sorted_values[1:])), "not ascending"
    return {
        "count": len(sorted_values),
        "p50": percentile(sorted_values, 0.50),
        "p90": percentile(sorted_values, 0.90),
        "p99": percentile(sorted_values, 0.99),
        "max": sorted_values[-1] if sorted_values else None,
    }


def thinned(records: list[dict], cap: int = LAG_SAMPLES_MAX) -> list[dict]:
    """At most `cap` records spread evenly over the run."""
    if len(records) <= cap:
        return list(records)
    return [records[n * len(records) // cap] for n in range(cap)]


# -- display lag ----------------------------------------------------------------------------------

def lag_stats(records: list[dict], config: CheckConfig) -> dict:
    """count and percentiles of every judged read's lag; `by_fault` the same over the reads
    whose lag beyond the service level was forgiven because that kind of fault was acting."""
    lags = sorted(r["lag_ms"] for r in records)
    by_fault: dict[str, list[int]] = {}
    for record in records:
        if record["lag_ms"] > config.sla_ms and not record["stale"]:
            for kind in record["faults"]:
                by_fault.setdefault(kind, []).append(record["lag_ms"])
    return {**percentiles(lags), "by_fault": {kind: percentiles(sorted(excused))
                                              for kind, excused in sorted(by_fault.items())}}


# -- availability ---------------------------------------------------------------------------------

def availability(history: History, faults: FaultIndex) -> dict:
    """Display reads (`reads`, by outcome), the 503 `share`, the longest unavailable stretch per
    account (`per_account`: from a first 503 to the next 200, or the end of the run) and its
    maximum (`longest_ms`), and how many 503s fell inside fault windows (`by_fault` per kind).
    A 503 is honest (the contract), so this judges nothing; one that persists past convergence
    is the display checker's divergence."""
    end_ms = max((max(op.invoke_ms, op.complete_ms or 0) for op in history.ops), default=0)
    reads = sorted((op for op in history.ops if op.f == "display"),
                   key=operator.attrgetter("invoke_ms", "index"))
    counts = {"ok": 0, "unavailable": 0, "other_fail": 0, "info": 0}
    in_faults = 0
    by_fault: dict[str, int] = {}
    down_since_ms: dict[str, int] = {}
    longest_ms: dict[str, int] = {}
    for op in reads:
        account_id = str(op.account_id)
        if op.outcome == "ok":
            counts["ok"] += 1
            if account_id in down_since_ms:
                _close(longest_ms, account_id, op.invoke_ms - down_since_ms.pop(account_id))
        elif op.outcome == "fail" and op.http_status == 503:
            counts["unavailable"] += 1
            down_since_ms.setdefault(account_id, op.invoke_ms)
            on = faults.active_at(op.invoke_ms)
            in_faults += bool(on)
            for kind in sorted({w.kind for w in on}):
                by_fault[kind] = by_fault.get(kind, 0) + 1
        elif op.outcome == "fail":
            counts["other_fail"] += 1
        else:
            counts["info"] += 1
    for account_id, since_ms in down_since_ms.items():
        _close(longest_ms, account_id, end_ms - since_ms)
    total = len(reads)
    return {
        "reads": total,
        **counts,
        "share": counts["unavailable"] / total if total else 0.0,
        "per_account": dict(sorted(longest_ms.items())),
        "longest_ms": max(longest_ms.values(), default=0),
        "in_fault_windows": in_faults,
        "outside_fault_windows": counts["unavailable"] - in_faults,
        "by_fault": by_fault,
    }


def _close(longest_ms: dict[str, int], account_id: str, stretch_ms: int) -> None:
    longest_ms[account_id] = max(longest_ms.get(account_id, 0), stretch_ms)


# -- coverage -------------------------------------------------------------------------------------

def coverage_outcomes(history: History, faults: FaultIndex) -> dict:
    """{f: {fault_kind: {outcome: count}}}: how often each operation was invoked while each
    fault kind was on ("none" when none was), split by how it ended; so a green run can be told
    apart from one that never met the fault it claims to survive."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for op in history.ops:
        if op.f in NOT_WORKLOAD_FS:
            continue
        kinds = faults.kinds_at(op.invoke_ms) or ("none",)
        outcome = op.outcome or "pending"
        for kind in kinds:
            counts = out.setdefault(op.f, {}).setdefault(kind, {})
            counts[outcome] = counts.get(outcome, 0) + 1
    return out


def coverage_totals(outcomes: dict) -> dict:
    """`coverage_outcomes` summed over outcomes: {f: {fault_kind: count}}."""
    return {f: {kind: sum(by_outcome.values()) for kind, by_outcome in kinds.items()}
            for f, kinds in outcomes.items()}

