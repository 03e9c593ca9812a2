"""Findings: what a checker reports, with enough context to read it as a bug report; and the
words that present them to a person (a test failure, a summary line)."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import orjson
from deepdiff import DeepDiff

from .clock import iso, parse_rfc3339
from .history import FAULT_FS, History, Op

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
    # Not a property of the target: a checker crashed, so what it checks is unknown. It always
    # fails the gate, since a check that did not run cannot vouch for anything.
    "checker_error",
)
SEVERITIES = ("critical", "major", "minor")
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
# The severities that fail a test (minor staleness is reported only).
FAILING_SEVERITIES = ("critical", "major")
SLICE_OPS_MAX = 16
DIFF_LINES_MAX = 12


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


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then earliest: the first one is the one to read first."""
    return sorted(findings, key=lambda f: (SEVERITY_RANK[f.severity],
                                           f.first_seen_ms is None, f.first_seen_ms or 0))


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
    base = parse_rfc3339(started) if isinstance(started, str) else None
    if t_ms is None or base is None:
        return None
    return iso(base.astimezone(dt.timezone.utc), t_ms)


def history_slice(history: History, account_id: str | None, until_ms: int | None) -> list[dict]:
    """The last few ops of this account up to the finding, plus the faults around them: the
    shortest story a reader needs to follow the explanation."""
    if account_id is None:
        return []
    ops: list[Op] = [
        op for op in history.ops
        if (op.account_id == account_id or op.f in FAULT_FS)
        and (until_ms is None or op.invoke_ms <= until_ms)
    ]
    return [op.to_dict() for op in ops[-SLICE_OPS_MAX:]]


def make(history: History, *, kind: str, severity: str, account_id: str | None,
         first_seen_ms: int | None, expected: Any, actual: Any, explanation: str,
         checker: str, faults_active: list[str] | None = None) -> Finding:
    assert account_id is None or type(account_id) is str, account_id
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


def view_words(view: dict | None) -> str:
    """A display view (or the oracle's) in words for explanations."""
    if view is None:
        return "nothing"
    return (f"available {fen(view['available'])} (credit line {fen(view['credit_line'])}, "
            f"outstanding {fen(view['outstanding'])}, {view['status']}, "
            f"usable={str(view['usable']).lower()})")


def entry_words(entry: dict) -> str:
    """A ledger entry in a few words for explanations: 'draw ¥12.00', "status 'frozen'"."""
    kind = entry["type"]
    if kind in ("draw", "repay"):
        return f"{kind} {fen(entry['amount'])}"
    if kind in ("open", "limit"):
        return f"{kind} {fen(entry['credit_line'])}"
    return f"status {entry['status']!r}"


# -- presenting findings to a person ------------------------------------------------------------

class FindingsError(AssertionError):
    """A critical or major finding: the message is the readable diff, `findings` the objects."""

    def __init__(self, message: str, findings: list[Finding], verdict: Any = None):
        super().__init__(message)
        self.findings = findings
        self.verdict = verdict


def failing(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that fail a test: critical and major (minor staleness is reported only)."""
    return [f for f in findings if f.severity in FAILING_SEVERITIES]


def raise_for_findings(findings: Iterable[Finding], context: str = "", verdict: Any = None) -> None:
    """Raise `FindingsError` with a readable diff when any finding is critical or major."""
    bad = failing(findings)
    if bad:
        raise FindingsError(describe_findings(bad, context), bad, verdict)


def severity_counts(severities: Iterable[str]) -> str:
    """'2 critical, 1 major' (worst first), or 'none'."""
    counts: dict[str, int] = {}
    for severity in severities:
        counts[severity] = counts.get(severity, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: SEVERITY_RANK.get(item[0], len(SEVERITIES)))
    return ", ".join(f"{n} {severity}" for severity, n in ranked) or "none"


def describe_findings(findings: list[Finding], context: str = "") -> str:
    """Each finding as: severity, kind, account, checker; the explanation; the deepdiff of
    expected against actual, one change a line."""
    counts = severity_counts(f.severity for f in findings)
    head = f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ({counts})"
    lines = [head + (f" {context}" if context else "") + ":"]
    for finding in findings:
        account = f"account {finding.account_id!r}" if finding.account_id else "no account"
        lines.append("")
        lines.append(f"[{finding.severity}] {finding.kind} on {account} "
                     f"(checker: {finding.checker})")
        lines.extend(textwrap.wrap(finding.explanation, 96, initial_indent="  ",
                                   subsequent_indent="  "))
        if finding.faults_active:
            lines.append(f"  faults on: {', '.join(finding.faults_active)}")
        lines.extend(_diff_lines(finding))
    return "\n".join(lines)


def _diff_lines(finding: Finding) -> list[str]:
    diff = finding.diff
    if not diff:
        if finding.expected is None and finding.actual is None:
            return []
        return [f"  expected: {_short(finding.expected)}", f"  actual:   {_short(finding.actual)}"]
    out = ["  diff (expected -> actual):"]
    for change, items in diff.items():
        if isinstance(items, dict):
            for path, value in items.items():
                if isinstance(value, dict) and "old_value" in value and "new_value" in value:
                    out.append(f"    {path}: {_short(value['old_value'])} -> "
                               f"{_short(value['new_value'])}")
                else:
                    out.append(f"    {change.replace('_', ' ')} {path}: {_short(value)}")
        else:
            out.append(f"    {change.replace('_', ' ')}: {_short(items)}")
    if len(out) > DIFF_LINES_MAX + 1:
        out = out[:DIFF_LINES_MAX + 1] + [f"    ... and {len(out) - DIFF_LINES_MAX - 1} more"]
    return out


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
