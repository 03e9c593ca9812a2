"""How findings are ordered, counted and shortened for people, shared by every human-facing report
so that summary.md, junit.xml and report.html tell the same story in the same order."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from ..checkers import REGISTRY
from ..findings import SEVERITIES, SEVERITY_RANK, severity_counts as _severity_counts

# Each checker gets a JUnit testcase even when it found nothing, so a CI test tab shows what
# was checked, not only what failed.
CHECKERS = tuple(REGISTRY)


def severity_rank(finding: dict) -> int:
    return SEVERITY_RANK.get(finding.get("severity"), len(SEVERITIES))


def ordered(findings: Iterable[dict]) -> list[dict]:
    """Worst first, then earliest: the first row is the one to read first."""
    def key(finding: dict) -> tuple:
        first_seen_ms = finding.get("first_seen_ms")
        return (severity_rank(finding), first_seen_ms is None, first_seen_ms or 0,
                str(finding.get("account_id")))
    return sorted(findings, key=key)


def by_severity(findings: Iterable[dict]) -> dict[str, list[dict]]:
    """Findings grouped by severity in SEVERITIES order, only the severities present."""
    groups: dict[str, list[dict]] = {}
    for finding in ordered(findings):
        groups.setdefault(str(finding.get("severity")), []).append(finding)
    return groups


def severity_counts(findings: Iterable[dict]) -> str:
    """'2 critical, 1 major' (worst first), or 'none'."""
    return _severity_counts(str(f.get("severity")) for f in findings)


def kind_counts(findings: Iterable[dict]) -> str:
    counts = Counter(str(f.get("kind")) for f in findings)
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common()) or "none"


def one_line(text: object, limit: int = 140, whole: bool = False) -> str:
    """The first sentence of an explanation (all of it when `whole`), on one line and at most
    `limit` characters."""
    flat = " ".join(str(text if text is not None else "").split())
    sentence_end = -1 if whole else _first_sentence_end(flat)
    if 0 < sentence_end < len(flat):
        flat = flat[:sentence_end]
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def _first_sentence_end(text: str) -> int:
    # Explanations mix English and Chinese punctuation.
    ends = [i + 1 for i, ch in enumerate(text) if ch in "。！？" or
            (ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " "))]
    return ends[0] if ends else -1


def first_seen(finding: dict) -> str:
    """When a finding was first seen, as run-relative seconds (comparable across rows)."""
    first_seen_ms = finding.get("first_seen_ms")
    if not isinstance(first_seen_ms, (int, float)):
        return "–"
    return f"{first_seen_ms / 1000:.3f} s"


def account(finding: dict) -> str:
    account_id = finding.get("account_id")
    return "–" if account_id is None else str(account_id)
