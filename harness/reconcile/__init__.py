"""Reconcile exported data: a ledger table and a snapshot of the displayed limits, judged by the
contract's rules without re-running anything (docs/reconcile.md).

    result = reconcile(ReconcileConfig(ledger="ledger.parquet", display="display.csv"))
    result.findings  # harness.findings.Finding, worst first
    result.stats     # accounts, ledger_entries, display_rows, seconds per stage, ...

Two engines give the same findings: `columnar` (the default: polars and numpy, for exports of
millions of entries) and `rows` (the row-by-row reference through the harness's own ledger
checker and oracle). Nothing here writes a file; reports are the caller's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UsageError
from ..findings import SEVERITIES, Finding
from ..progress import QUIET, Progress
from . import budget
from . import partition as partitions

# Imported when used: `harness.reconcile.partition` must load without polars (`gate --merge`).
ENGINES = ("columnar", "rows")
STAGES = ("read", "derive", "check", "compare", "classify")


@dataclass(frozen=True)
class ReconcileConfig:
    ledger: str
    display: str
    # Cut the ledger at this seq (the moment the display snapshot was taken): later entries are
    # ignored, and a display row behind the account's last entry up to here is stale.
    as_of_seq: int | None = None
    # {contract column: source column}, for both sources or as {"ledger": {...}, "display": {...}}
    columns: dict | None = None
    money_unit: str = "fen"  # or "yuan": decimals with at most two places
    partition: tuple[int, int] | None = None  # (K, N): the K-th of N parts of the accounts
    engine: str = "columnar"
    # Over this many findings, stop before explaining any (budget.py): a one-line error.
    findings_max: int = budget.FINDINGS_MAX


@dataclass
class ReconcileResult:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def reconcile(config: ReconcileConfig, progress: Progress = QUIET) -> ReconcileResult:
    """Every finding in the exported ledger and display, worst first. UsageError (one line) when
    a source cannot be read or an option makes no sense. `progress` hears of each stage."""
    import importlib

    from . import sources

    _validate(config)
    engine = importlib.import_module(f".{'engine' if config.engine == 'columnar' else 'rows'}",
                                     __name__)
    started = time.perf_counter()
    ledger = sources.read_ledger(config.ledger, config.columns, config.money_unit,
                                 config.as_of_seq)
    display = sources.read_display(config.display, config.columns, config.money_unit)
    read_seconds = time.perf_counter() - started
    findings, stats = engine.run(ledger, display, config.as_of_seq, config.partition, progress,
                                 config.findings_max)
    started = time.perf_counter()
    findings = sort_findings(findings)
    seconds = {"read": read_seconds, **stats.pop("seconds")}
    seconds["classify"] += time.perf_counter() - started
    seconds["total"] = sum(seconds[stage] for stage in STAGES)
    assert set(seconds) == set(STAGES) | {"total"}, seconds
    return ReconcileResult(findings, {**stats, **_counts(findings), "engine": config.engine,
                                      "seconds": seconds})


def _validate(config: ReconcileConfig) -> None:
    if config.engine not in ENGINES:
        raise UsageError(f"engine {config.engine!r} must be one of {', '.join(ENGINES)}")
    if config.as_of_seq is not None and (type(config.as_of_seq) is not int
                                         or config.as_of_seq < 0):
        raise UsageError(f"as_of_seq {config.as_of_seq!r} must be a non-negative integer (a "
                         f"ledger seq)")
    if type(config.findings_max) is not int or config.findings_max < 1:
        raise UsageError(f"findings_max {config.findings_max!r} must be a positive integer")
    if config.money_unit not in sources.MONEY_UNITS:
        raise UsageError(f"money unit {config.money_unit!r} must be fen or yuan")
    if config.partition is not None:
        if not (isinstance(config.partition, tuple) and len(config.partition) == 2):
            raise UsageError(f"partition {config.partition!r} must be (K, N), e.g. (1, 4)")
        partitions.check(config.partition)


SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def seq_of(finding: Finding) -> int | None:
    """The ledger seq a finding is about: the entry's seq, the display row's as_of_seq (or the
    account's last seq when the display has no row), the first example's seq for a format
    problem."""
    actual, expected = finding.actual, finding.expected
    if isinstance(actual, list):
        actual = actual[0] if actual else None
    for record, name in ((actual, "seq"), (actual, "as_of_seq"), (expected, "as_of_seq")):
        if isinstance(record, dict) and name in record:
            return record[name]
    return None


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Worst first, then by kind, account and seq: the same order from either engine."""
    return sorted(findings, key=lambda f: (SEVERITY_RANK[f.severity], f.kind,
                                           f.account_id or "", seq_of(f) or -1))


def _counts(findings: list[Finding]) -> dict:
    by_kind: dict[str, int] = {}
    by_severity = {severity: 0 for severity in SEVERITIES}
    for finding in findings:  # bounded by the findings
        by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
        by_severity[finding.severity] += 1
    return {"findings": len(findings), "findings_by_kind": by_kind,
            "findings_by_severity": by_severity}


__all__ = ["ENGINES", "ReconcileConfig", "ReconcileResult", "reconcile", "seq_of"]
