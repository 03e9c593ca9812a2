"""summary.md: the run as a pull-request comment. Short by construction (about 60 lines however
many findings): the verdict, how to replay it, the worst findings, what was covered, how long
users waited to see their writes and what the faults did."""

from __future__ import annotations

import re

from .. import console
from .findings_view import (account, first_seen, kind_counts, one_line, ordered,
                            severity_counts)

FINDING_ROWS_MAX = 20
GATE_REASONS_MAX = 5
COVERAGE_ROWS_MAX = 10
COVERAGE_COLUMNS_MAX = 8


def render(report: dict) -> str:
    stats = report.get("stats") if isinstance(report.get("stats"), dict) else {}
    blocks = [
        _verdict(report),
        _replay(report.get("replay")),
        _findings(report.get("findings") or []),
        _coverage(stats.get("coverage")),
        _health(stats),
    ]
    return "\n\n".join(block for block in blocks if block) + "\n"


def _verdict(report: dict) -> str:
    badge = "PASS" if report.get("verdict") == "pass" else "FAIL"
    facts = [f"seed `{_code(report.get('seed', '?'))}`",
             f"target `{_code(report.get('target', '?'))}`"]
    if report.get("mode"):
        facts.append(f"mode {_cell(report['mode'])}")
    if isinstance(report.get("duration_s"), (int, float)):
        facts.append(f"{report['duration_s']:.1f} s")
    if report.get("run_id"):
        facts.append(f"run `{_code(report['run_id'])}`")
    lines = [f"### limit-harness: **{badge}**", "", " · ".join(facts)]
    lines.extend(_gate_lines(report.get("gate")))
    return "\n".join(lines)


def _gate_lines(gate: object) -> list[str]:
    if not isinstance(gate, dict):
        return []
    outcome = "passed" if gate.get("passed") else "failed"
    lines = ["", f"Gate `{_code(gate.get('policy', '?'))}` {outcome}."]
    reasons = [str(r) for r in gate.get("reasons") or []]
    lines.extend(f"- {_cell(r)}" for r in reasons[:GATE_REASONS_MAX])
    if len(reasons) > GATE_REASONS_MAX:
        lines.append(f"- … and {len(reasons) - GATE_REASONS_MAX} more reasons")
    return lines


def _replay(replay: object) -> str:
    if not replay:
        return ""
    text = " ".join(str(replay).split())
    # A fence longer than any backtick run inside, so a quoted argument cannot end the block.
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"Replay:\n{fence}sh\n{text}\n{fence}"


def _findings(findings: list[dict]) -> str:
    if not findings:
        return "**Findings:** none."
    worst_first = ordered(findings)
    shown, rest = worst_first[:FINDING_ROWS_MAX], worst_first[FINDING_ROWS_MAX:]
    lines = [f"**Findings:** {len(findings)} ({severity_counts(findings)})", "",
             "| severity | kind | account | first seen | explanation |",
             "| --- | --- | --- | --- | --- |"]
    lines.extend(_finding_row(f) for f in shown)
    if rest:
        lines.append("")
        lines.append(f"… and {len(rest)} more ({_cell(severity_counts(rest))}; by kind: "
                     f"{_cell(one_line(kind_counts(rest), limit=200))}). "
                     "All of them are in report.json and report.html.")
    return "\n".join(lines)


def _finding_row(finding: dict) -> str:
    cells = [finding.get("severity"), finding.get("kind"), account(finding),
             first_seen(finding), one_line(finding.get("explanation"), limit=120)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _coverage(coverage: object) -> str:
    if not isinstance(coverage, dict) or not coverage:
        return ""
    rows = [(str(f), counts) for f, counts in coverage.items() if isinstance(counts, dict)]
    columns = _coverage_columns(counts for _, counts in rows)
    if not rows or not columns:
        return ""
    lines = ["**Coverage** (operations × faults active):", "",
             "| op | " + " | ".join(_cell(c) for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for f, counts in rows[:COVERAGE_ROWS_MAX]:
        lines.append(f"| {_cell(f)} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    if len(rows) > COVERAGE_ROWS_MAX:
        lines.append(f"\n… and {len(rows) - COVERAGE_ROWS_MAX} more operations in report.html.")
    return "\n".join(lines)


def _coverage_columns(all_counts) -> list[str]:
    """'none' first (the baseline), then fault kinds by name; capped so the table stays legible
    in a comment."""
    kinds = sorted({str(k) for counts in all_counts for k in counts} - {"none"})
    return (["none"] + kinds)[:COVERAGE_COLUMNS_MAX]


def _health(stats: dict) -> str:
    # The console's words for fault coverage, what users waited for and what the faults did
    # (one wording for both places), as list items with the label in bold.
    said = [console.coverage_line(stats.get("fault_coverage")),
            console.symptoms_line(stats.get("symptoms")),
            *console.effects_lines(stats.get("fault_effects"))[:1]]
    lines = [line for line in (_lag_line(stats.get("lag_ms")),
                               _availability_line(stats.get("availability")),
                               *(_bold_label(text) for text in said if text)) if line]
    return "\n".join(f"- {line}" for line in lines)


def _bold_label(text: str) -> str:
    label, _, rest = text.strip().partition(": ")
    return f"**{_cell(label[:1].upper() + label[1:])}:** {_cell(rest)}"


def _lag_line(lag: object) -> str:
    if not isinstance(lag, dict):
        return ""
    if not lag.get("count"):
        return "**Display lag:** no samples."
    parts = [f"{name} {_ms(lag.get(name))}" for name in ("p50", "p99", "max")]
    return f"**Display lag** ({lag['count']} samples): " + ", ".join(parts)


def _availability_line(availability: object) -> str:
    if not isinstance(availability, dict):
        return ""
    share = availability.get("share")
    share_text = f"{share:.2%}" if isinstance(share, (int, float)) else "?"
    return (f"**Availability:** {availability.get('unavailable', '?')} of "
            f"{availability.get('reads', '?')} display reads unavailable ({share_text}), "
            f"longest {_ms(availability.get('longest_ms'))}")


def _ms(value: object) -> str:
    return f"{value:,.0f} ms" if isinstance(value, (int, float)) else "?"


def _cell(value: object) -> str:
    """Text safe inside a GitHub table cell: one line, no pipe, no live HTML."""
    text = " ".join(str(value if value is not None else "").split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")


def _code(value: object) -> str:
    # Inside an inline code span nothing is interpreted, only a backtick would end it.
    return " ".join(str(value).split()).replace("`", "'")
