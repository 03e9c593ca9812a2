"""Checkers: pure functions from an `Analysis` of (history, ledger) to findings, shared by `run`,
`prop`, `check`, the pytest plugin and the load test.

Each checker module has a `NAME`, states its property in its docstring, and has one
`check(analysis) -> list[Finding]`. `REGISTRY` is the one list of them. `check` runs each one
safely: a checker that raises becomes a `checker_error` finding (which fails the gate) instead
of aborting the run, as Jepsen's `check-safe` does.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable

from ..analysis import Analysis, CheckConfig, analyse
from ..findings import Finding, sort_findings
from ..history import History
from ..statistics import statistics
from . import display, ledger, rejections, writes


@dataclass(frozen=True)
class Checker:
    name: str
    statement: str  # the property it checks, in one sentence
    check: Callable[[Analysis], list[Finding]]


def _checker(module) -> Checker:
    first_paragraph = module.__doc__.split("\n\n")[0]
    return Checker(module.NAME, " ".join(first_paragraph.split(":", 1)[1].split()), module.check)


# In the order a reader meets them; reports list each one even when it found nothing.
REGISTRY: dict[str, Checker] = {c.name: c for c in map(_checker, (writes, ledger, rejections,
                                                                    display))}


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def check(history: History, ledger_entries: list, config: CheckConfig | None = None,
          *, with_stats: bool = True) -> Verdict:
    """Every checker over one run: findings worst first (then earliest) and, `with_stats`, the
    run's statistics (see `statistics.statistics`)."""
    try:
        analysis = analyse(history, ledger_entries, config)
    except Exception as exc:  # noqa: BLE001 - no checker can judge; say so instead of dying
        return Verdict([_crashed("analysis", exc, None)], {})
    findings: list[Finding] = []
    for checker in REGISTRY.values():
        findings.extend(_run_safely(checker, analysis))
    findings = sort_findings(findings)
    if not with_stats:
        return Verdict(findings)
    try:
        stats = statistics(analysis, findings, display.lag_records(analysis))
    except Exception as exc:  # noqa: BLE001 - the findings stand; the stats are unknown
        findings.append(_crashed("statistics", exc, analysis))
        stats = {}
    return Verdict(findings, stats)


def _run_safely(checker: Checker, analysis: Analysis) -> list[Finding]:
    try:
        found = checker.check(analysis)
    except Exception as exc:  # noqa: BLE001 - check-safe: a crash is an unknown, not an abort
        return [_crashed(checker.name, exc, analysis)]
    assert all(isinstance(f, Finding) for f in found), checker.name
    return found


def _crashed(name: str, exc: Exception, analysis: Analysis | None) -> Finding:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    words = (f"The {name} checker crashed ({type(exc).__name__}: {exc}{at}), so what it checks "
             f"is unknown for this run; this is a bug in the harness: please report it with "
             f"the history and ledger files of this run.")
    return Finding(kind="checker_error", severity="critical", account_id=None,
                   first_seen_ms=None, expected=None, actual=None, explanation=words,
                   checker=name)


__all__ = ["REGISTRY", "CheckConfig", "Checker", "Verdict", "analyse", "check"]
