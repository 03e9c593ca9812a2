"""Statistics of a run: what the history and the ledger add up to, beside the findings. They
judge nothing (the gate may bound some of them): display lag, availability, coverage, counts."""

from __future__ import annotations

import bisect
import operator
from typing import Any, Callable

from . import effects, nemesis, symptoms
from .analysis import Analysis, CheckConfig
from .findings import SEVERITIES, Finding
from .history import FaultIndex, History

LAG_SAMPLES_MAX = 20_000
# The nemesis's own operations and phase markers are not workload.
NOT_WORKLOAD_FS = ("phase", "fault_add", "fault_remove")


def statistics(a: Analysis) -> dict:
    """`ops` {f: {outcome: n}}, `accounts`, `ledger_entries`, `availability`, `coverage`
    {f: {fault kind: n}}, `coverage_outcomes`, `fault_windows`, `symptoms` (what users waited
    for each write to show: `symptoms.symptom_statistics`); `lag_statistics` adds the display
    lag and `finding_counts` the findings' counts."""
    ops: dict[str, dict[str, int]] = {}
    for op in a.history.ops:
        counts = ops.setdefault(op.f, {})
        outcome = op.outcome or "pending"
        counts[outcome] = counts.get(outcome, 0) + 1
    accounts = set(a.touched)
    accounts.update(e["account_id"] for e in a.ledger
                    if isinstance(e, dict) and type(e.get("account_id")) is str)
    outcomes = costly(a, "coverage_outcomes")
    return {
        "ops": ops,
        "accounts": len(accounts),
        "ledger_entries": len(a.ledger),
        "availability": costly(a, "availability"),
        "coverage": coverage_totals(outcomes),
        "coverage_outcomes": outcomes,
        # So a report drawn without its history still shows when each fault acted.
        "fault_windows": [{"kind": w.kind, "label": w.describe(), "start_ms": w.start_ms,
                           "end_ms": w.end_ms} for w in a.windows],
        "symptoms": costly(a, "symptoms"),
        "fault_coverage": costly(a, "fault_coverage"),
        # Whether each injection was seen to act (harness/effects.py).
        "fault_effects": costly(a, "fault_effects"),
    }


# The statistics that cost the most: each is computed once per analysis (`Analysis.memo`), so
# another process may compute it and hand it over (`checkers.check` does, while this one checks).
COSTLY: dict[str, Callable[[Analysis], Any]] = {
    "symptoms": lambda a: symptoms.symptom_statistics(a),  # late: symptoms imports this module
    "fault_effects": lambda a: effects.fault_effects(a.history),
    "coverage_outcomes": lambda a: coverage_outcomes(a.history, a.faults),
    "availability": lambda a: availability(a.history, a.faults),
    "fault_coverage": lambda a: fault_coverage(a.history, a.windows, a.config.sla_ms),
}


def costly(a: Analysis, key: str) -> Any:
    """`COSTLY[key](a)`, once per analysis."""
    return a.memo(key, lambda: COSTLY[key](a))


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


def fault_coverage(history: History, windows: list, sla_ms: int) -> dict:
    """What the nemesis exercised against what it planned (`nemesis.Plan.summary`, in the
    history's meta; None for a history without one): `variants` {label: kind, class, injected,
    ops {f: n} invoked while it was on}, the kinds that acted `alone` and `overlapping` another
    kind, and what was planned but never happened: `missing` (kinds and classes never injected:
    what the gate's `coverage_required` judges) and `missing_combinations` (alone or overlapping).
    A reset acts at once: the operations counted under it are those in the `sla_ms` after it,
    while the display must rebuild."""
    plan = history.meta.get("nemesis")
    planned = plan if isinstance(plan, dict) and isinstance(plan.get("kinds"), dict) else None
    end_ms = max((max(op.invoke_ms, op.complete_ms or 0) for op in history.ops), default=0)
    mine = [w for w in nemesis.windows_of(windows, end_ms) if w.acknowledged]
    done = nemesis.covered(nemesis.windows_of(windows, end_ms))
    under = _ops_under(history, mine, sla_ms)
    variants = {}
    for w in mine:
        label = w.variant.label
        variants.setdefault(label, {"kind": w.kind, "class": w.variant.cls,
                                    "injected": done["variants"].get(label, 0),
                                    "ops": under.get(label, {})})
    missing: list[str] = []
    combinations: list[str] = []
    if planned is not None:
        for kind, classes in planned["kinds"].items():
            classes = classes if isinstance(classes, list) else []  # a history from elsewhere
            labels = [nemesis.Variant(kind, str(c)).label for c in classes] or [kind]
            missing += [label for label in labels if label not in done["variants"]]
        combinations += [f"{k} alone" for k in _names(planned.get("alone"))
                         if k not in done["alone"]]
        combinations += [f"{k} overlapping another kind" for k in _names(planned.get("overlapping"))
                         if k not in done["overlapping"]]
    return {"planned": planned, "variants": dict(sorted(variants.items())),
            "alone": done["alone"], "overlapping": done["overlapping"], "missing": missing,
            "missing_combinations": combinations}


def _names(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _ops_under(history: History, windows: list, sla_ms: int) -> dict[str, dict[str, int]]:
    """{variant label: {f: workload ops invoked while it was on}}, each op counted once per
    variant however many of its windows overlapped."""
    invoked: dict[str, list[int]] = {}
    for op in history.ops:
        if op.f not in NOT_WORKLOAD_FS:
            invoked.setdefault(op.f, []).append(op.invoke_ms)
    for times in invoked.values():
        times.sort()
    spans: dict[str, list[tuple[int, int]]] = {}
    for w in windows:
        end_ms = w.end_ms if nemesis.is_lasting(w.kind) else w.start_ms + sla_ms
        spans.setdefault(w.variant.label, []).append((w.start_ms, end_ms))
    out: dict[str, dict[str, int]] = {}
    for label, pieces in spans.items():
        merged = _merged(pieces)
        out[label] = {f: n for f, times in sorted(invoked.items())
                      if (n := sum(bisect.bisect_right(times, hi) - bisect.bisect_left(times, lo)
                                   for lo, hi in merged))}
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
