"""Coverage: which operations the run exercised under which faults, so a green run can be told
apart from a run that never met the fault it claims to survive. It yields no findings."""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import CheckConfig, FaultIndex

CHECKER = "coverage"
# The nemesis's own operations and phase markers are not workload.
SKIPPED_FS = ("phase", "fault_add", "fault_remove")


def check(history: History, ledger: list[dict], config: CheckConfig) -> list[Finding]:
    return []


def stats(history: History) -> dict:
    """{f: {fault_kind: count}}: how often each operation was invoked while each fault kind was
    on ("none" when none was)."""
    return totals(outcome_stats(history))


def totals(outcomes: dict) -> dict:
    """`outcome_stats` summed over outcomes."""
    return {f: {kind: sum(by_outcome.values()) for kind, by_outcome in kinds.items()}
            for f, kinds in outcomes.items()}


def outcome_stats(history: History) -> dict:
    """{f: {fault_kind: {outcome: count}}}, the same split by how each operation ended."""
    faults = FaultIndex(history.fault_windows())
    out: dict[str, dict[str, dict[str, int]]] = {}
    for op in history.ops:
        if op.f in SKIPPED_FS:
            continue
        kinds = sorted({w.kind for w in faults.active_at(op.invoke_ms)}) or ["none"]
        outcome = op.outcome or "pending"
        for kind in kinds:
            counts = out.setdefault(op.f, {}).setdefault(kind, {})
            counts[outcome] = counts.get(outcome, 0) + 1
    return out
