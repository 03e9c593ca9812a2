"""Availability: how often, and for how long, the display answered 503. It yields no findings: a
503 is honest (CONTRACT.md), and one that persists past convergence is display_divergence."""

from __future__ import annotations

from ..findings import Finding
from ..history import History
from . import CheckConfig, FaultIndex

CHECKER = "availability"


def check(history: History, ledger: list[dict], config: CheckConfig) -> list[Finding]:
    return []


def stats(history: History, config: CheckConfig) -> dict:
    """Display reads (`reads`, by outcome), the 503 `share`, the longest unavailable stretch per
    account (`per_account`: from a first 503 to the next 200, or the end of the run) and its
    maximum (`longest_ms`), and how many 503s fell inside fault windows (`by_fault` per kind)."""
    faults = FaultIndex(history.fault_windows())
    end_ms = max((max(op.invoke_ms, op.complete_ms or 0) for op in history.ops), default=0)
    reads = sorted((op for op in history.ops if op.f == "display"),
                   key=lambda op: (op.invoke_ms, op.index))
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
