"""Checkers: pure functions from (history, ledger) to findings, shared by run, prop, load and
reconcile. Each module holds one checker: `check(history, ledger, config) -> list[Finding]`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..findings import Finding
from ..history import History


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
