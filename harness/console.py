"""The one-screen summaries the commands print: what a person reads first after a run."""

from __future__ import annotations

import shlex
from pathlib import Path

from .findings import severity_counts

FINDINGS_SHOWN_MAX = 8


def run_summary(report: dict, report_dir: Path) -> str:
    """A judged run (`run`, `check`, the load test): verdict, numbers, worst findings, where the
    reports are and how to replay."""
    stats = report.get("stats") or {}
    findings = report["findings"]
    seed = f"  seed {report['seed']}" if report.get("seed") is not None else ""
    lines = [f"{report['verdict'].upper()}{seed}  target {report['target']}"
             f"  {report['duration_s']:.1f} s"]
    if "client_ops" in stats:
        events = stats.get("events_delivered")
        lines.append(
            f"  ops: {stats['client_ops']} client ops ({stats['ops_per_s']:,.0f}/s)"
            + (f", {events} events delivered" if events is not None else "")
            + "; faults injected: "
            + (", ".join(f"{k} x{v}" for k, v in sorted(stats["faults_injected"].items()))
               or "none"))
    lag = stats.get("lag_ms") or {}
    if lag.get("count"):
        lines.append(f"  display lag: p50 {lag.get('p50')} ms, p99 {lag.get('p99')} ms, "
                     f"max {lag.get('max')} ms over {lag.get('count')} reads")
    lines.append("  findings: " + severity_counts(f["severity"] for f in findings))
    for f in findings[:FINDINGS_SHOWN_MAX]:
        lines.append(f"   - [{f['severity']}] {f['kind']} {f['account_id'] or ''}: "
                     f"{f['explanation'].splitlines()[0][:150]}")
    if len(findings) > FINDINGS_SHOWN_MAX:
        lines.append(f"   ... and {len(findings) - FINDINGS_SHOWN_MAX} more in the report")
    for reason in report["gate"]["reasons"]:
        lines.append(f"  gate: {reason}")
    lines.append(f"  reports: {report_dir}")
    lines.append(f"  replay:  {report['replay']}")
    return "\n".join(lines)


def replay_verdict(same_history: bool) -> str:
    return ("replay: the same history, bit for bit" if same_history else
            "replay: the history DIFFERS from the stored run (was it made by another version?)")


def prop_summary(result, report_dir: Path | None) -> str:
    """A property search: one line when nothing failed; else the shrunk program and findings."""
    config = result.config
    replay = shlex.join(config.replay_argv())
    if not result.failed:
        return (f"no failure in {result.examples} examples (seed {config.seed}, target "
                f"{result.target}, up to {config.steps} steps each, {result.seconds:.1f} s)")
    lines = [f"FAIL  seed {config.seed}  target {result.target}: found after {result.examples} "
             f"examples ({result.time_to_find_s or 0:.1f} s), shrunk to {result.steps} steps "
             f"({result.seconds:.1f} s in all)"]
    if result.flaky:
        lines.append("  note: the failure did not reproduce every time hypothesis replayed it "
                     "(a real target's timing); the program below is the last one that failed")
    lines += ["", "The failing program:", *(f"    {line}" for line in result.program), "",
              result.message, ""]
    if report_dir is not None:
        lines.append(f"reports: {report_dir}")
    lines.append(f"replay:  {replay}")
    return "\n".join(lines)
