"""Findings: what a checker reports, with enough context to read it as a bug report."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from deepdiff import DeepDiff

from .history import History, Op

KINDS = (
    "lost_write",
    "duplicate_write",
    "phantom_write",
    "amount_mismatch",
    "ledger_rule_violation",
    "wrongful_rejection",
    "inconsistent_display",
    "stale_display",
    "display_divergence",
    "contract_violation",
)
SEVERITIES = ("critical", "major", "minor")
SLICE_OPS_MAX = 16


@dataclass
class Finding:
    kind: str
    severity: str
    account_id: str | None
    first_seen_ms: int | None
    expected: Any
    actual: Any
    explanation: str
    checker: str
    diff: dict | None = None
    faults_active: list[str] = field(default_factory=list)
    first_seen_at: str | None = None
    history_slice: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert self.severity in SEVERITIES, self.severity
        assert self.explanation, "a finding always explains itself"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Finding":
        return cls(**raw)


def diff(expected: Any, actual: Any) -> dict | None:
    """expected vs actual as a JSON-ready deepdiff, None when equal."""
    if expected is None or actual is None:
        return None
    result = DeepDiff(expected, actual, verbose_level=2)
    if not result:
        return None
    return orjson.loads(result.to_json())


def at(history: History, t_ms: int | None) -> str | None:
    """Run-relative milliseconds as an RFC 3339 timestamp on the run's own clock."""
    started = history.meta.get("started_at")
    if t_ms is None or not started:
        return None
    base = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    stamp = base + dt.timedelta(milliseconds=t_ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_slice(history: History, account_id: str | None, until_ms: int | None) -> list[dict]:
    """The last few ops of this account up to the finding, plus the faults around them: the
    shortest story a reader needs to follow the explanation."""
    if account_id is None:
        return []
    ops: list[Op] = [
        op for op in history.ops
        if (op.account_id == account_id or op.f in ("fault_add", "fault_remove"))
        and (until_ms is None or op.invoke_ms <= until_ms)
    ]
    return [op.to_dict() for op in ops[-SLICE_OPS_MAX:]]


def make(history: History, *, kind: str, severity: str, account_id: str | None,
         first_seen_ms: int | None, expected: Any, actual: Any, explanation: str,
         checker: str, faults_active: list[str] | None = None) -> Finding:
    return Finding(
        kind=kind,
        severity=severity,
        account_id=account_id,
        first_seen_ms=first_seen_ms,
        first_seen_at=at(history, first_seen_ms),
        expected=expected,
        actual=actual,
        diff=diff(expected, actual),
        faults_active=faults_active or [],
        explanation=explanation,
        checker=checker,
        history_slice=history_slice(history, account_id, first_seen_ms),
    )


def fen(amount: int | None) -> str:
    """Fen as yuan for explanations: 123456 -> '¥1,234.56'."""
    if amount is None:
        return "?"
    sign = "-" if amount < 0 else ""
    yuan, cents = divmod(abs(amount), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def entry_words(entry: dict) -> str:
    """A ledger entry in a few words for explanations: 'draw ¥12.00', "status 'frozen'"."""
    kind = entry["type"]
    if kind in ("draw", "repay"):
        return f"{kind} {fen(entry['amount'])}"
    if kind in ("open", "limit"):
        return f"{kind} {fen(entry['credit_line'])}"
    return f"status {entry['status']!r}"
