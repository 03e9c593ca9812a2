"""The one-screen summaries the commands print: what a person reads first after a run."""

from __future__ import annotations

import shlex
from pathlib import Path

from .findings import severity_counts
from .symptoms import SYMPTOMS

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
    covered = coverage_line(stats.get("fault_coverage"))
    if covered:
        lines.append(covered)
    lag = stats.get("lag_ms") or {}
    if lag.get("count"):
        lines.append(f"  display lag: p50 {lag.get('p50')} ms, p99 {lag.get('p99')} ms, "
                     f"max {lag.get('max')} ms over {lag.get('count')} reads")
    waited = symptoms_line(stats.get("symptoms"))
    if waited:
        lines.append(waited)
    lines += effects_lines(stats.get("fault_effects"))
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


def coverage_line(coverage: object) -> str | None:
    """'  fault coverage: every planned kind, class and combination (cycle 9.8 s)', or what the
    plan had that the run never did; nothing for a run that planned no fault."""
    planned = coverage.get("planned") if isinstance(coverage, dict) else None
    if not isinstance(planned, dict) or not planned.get("kinds"):
        return None
    missing = [str(m) for m in coverage.get("missing") or ()]
    missing += [str(m) for m in coverage.get("missing_combinations") or ()]
    cycle_ms = planned.get("cycle_ms")
    cycle = f" (cycle {cycle_ms / 1000:.1f} s)" if isinstance(cycle_ms, (int, float)) else ""
    if not missing:
        return f"  fault coverage: every planned kind, class and combination{cycle}"
    short = "; the run was too short for its plan" if planned.get("covers") is False else ""
    return f"  fault coverage: NOT exercised: {', '.join(missing)}{short}"


def symptoms_line(symptoms: object) -> str | None:
    """'  shown to users (p99): restore 2,210 ms, ...': what a user waited for each kind of
    write to show, from its acknowledgement to the display read that showed it."""
    if not isinstance(symptoms, dict):
        return None
    parts, never = [], 0
    for name in SYMPTOMS:
        numbers = symptoms.get(name)
        if not isinstance(numbers, dict) or not numbers.get("count"):
            continue
        p99, unseen = numbers.get("p99"), numbers.get("never_shown")
        if p99 is None or isinstance(p99, (int, float)):
            parts.append(f"{name} {'never' if p99 is None else f'{p99:,.0f} ms'}")
        never += unseen if isinstance(unseen, int) else 0
    if not parts:
        return None
    return f"  shown to users (p99): {', '.join(parts)}; {never} write(s) never shown"


INEFFECTIVE_SHOWN_MAX = 3


def effects_lines(effects: object) -> list[str]:
    """'  fault effects: 11 injected (7 observed, ...), by provider: ...', and each injection no
    client saw act (harness/effects.py): a fault that did nothing proved nothing."""
    if not isinstance(effects, dict) or not (effects.get("injected") or effects.get("refused")):
        return []
    providers = effects.get("by_provider") if isinstance(effects.get("by_provider"), dict) else {}
    carried = ", ".join(f"{name} {sum(v for k, v in counts.items() if k != 'refused')}"
                        for name, counts in sorted(providers.items())
                        if isinstance(counts, dict))
    lines = [f"  fault effects: {effects.get('injected')} injected ({effects.get('observed')} "
             f"observed, {effects.get('not_observed')} not observed, "
             f"{effects.get('undetermined')} undetermined), {effects.get('refused')} refused"
             + (f"; carried out by {carried}" if carried else "")]
    ineffective = [f for f in effects.get("ineffective") or [] if isinstance(f, dict)]
    for fault in ineffective[:INEFFECTIVE_SHOWN_MAX]:
        lines.append(f"   ! ineffective: {fault.get('label')} at t={fault.get('start_ms')} ms via "
                     f"{fault.get('provider')}: {str(fault.get('why'))[:150]}")
    if len(ineffective) > INEFFECTIVE_SHOWN_MAX:
        lines.append(f"   ... and {len(ineffective) - INEFFECTIVE_SHOWN_MAX} more in the report")
    return lines


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
