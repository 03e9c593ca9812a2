"""The release gate: a policy file turns a run's findings and stats into pass or fail.

A policy is a small TOML file (fixtures/gate-*.toml), for example:

    fail_on_severity = ["critical", "major"]   # any one such finding fails the gate
    allow_kinds = ["stale_display"]            # kinds that never fail it (known, accepted)
    stale_lag_ms_p99_max = 1000                # bounds on stats["lag_ms"]
    stale_lag_ms_max = 5000
    unavailable_share_max = 0.01               # bounds on stats["availability"]
    unavailable_ms_max = 2000
    restore_ms_p99_max = 3000                  # bounds on stats["symptoms"]: what users wait
    limit_shown_ms_p99_max = 3000              # for a write to show (harness/symptoms.py)
    usable_ms_p99_max = 3000
    draw_shown_ms_p99_max = 3000

    coverage_required = true                   # every fault kind and class the run's
                                               # nemesis planned was injected
    ineffective_faults_max = 0                 # injections with no effect the history shows
                                               # (stats["fault_effects"], harness/effects.py)

    [max_findings]                             # budgets per severity
    minor = 20

    [load]                                     # bounds on a load test's locust numbers
    latency_ms_p95_max = 50
    latency_ms_p99_max = 200
    failure_ratio_max = 0.01

A severity's budget is `max_findings[severity]` when given, else 0 when it is listed in
`fail_on_severity`, else unlimited: so `major = 2` tolerates two majors even under the default
list, and `minor = 20` caps minors that would otherwise never fail. Allowed kinds are not counted.

A policy that bounds a stat the report does not carry fails the gate rather than passing it
silently: a release gate that cannot see must not say yes. So does a load test whose worker
vanished (part of its history is unknown), whatever the policy. A symptom's p99 that lands on a
write never shown before the run ended is unknown, and fails its bound too.

`coverage_required` (true unless a policy says false) judges only what the run's nemesis planned
(stats["fault_coverage"]["planned"]): a report without a plan (`--faults none`, a history
recorded before plans were, `reconcile`) has nothing it must have covered.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError
from .findings import KINDS, SEVERITIES
from .packaged import fixture
from .symptoms import SYMPTOMS

DEFAULT_NAME = "default"
UNJUDGED_KIND = "checker_error"


@dataclass
class Policy:
    name: str = DEFAULT_NAME
    description: str = ""
    fail_on_severity: list[str] = field(default_factory=lambda: ["critical", "major"])
    allow_kinds: list[str] = field(default_factory=list)
    max_findings: dict[str, int] = field(default_factory=dict)
    stale_lag_ms_p99_max: float | None = None
    stale_lag_ms_max: float | None = None
    unavailable_share_max: float | None = None
    unavailable_ms_max: float | None = None
    restore_ms_p99_max: float | None = None
    limit_shown_ms_p99_max: float | None = None
    usable_ms_p99_max: float | None = None
    draw_shown_ms_p99_max: float | None = None
    load: dict[str, float] = field(default_factory=dict)  # LOAD_BOUNDS -> bound
    coverage_required: bool = True  # every planned fault kind and class was injected
    # Injections whose effect the history never showed (stats["fault_effects"], harness/effects.py)
    ineffective_faults_max: int | None = None

    def budget(self, severity: str) -> float:
        """How many findings of this severity the gate tolerates."""
        if severity in self.max_findings:
            return self.max_findings[severity]
        return 0 if severity in self.fail_on_severity else float("inf")


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self, policy: Policy) -> dict:
        """The report's "gate" entry."""
        return {"policy": policy.name, "passed": self.passed, "reasons": list(self.reasons)}


# -- loading --------------------------------------------------------------------------------

# The file's keys: every Policy field but the name, which is the file's stem.
_KEYS = tuple(f.name for f in fields(Policy) if f.name != "name")
# `<symptom>_ms_p99_max` -> the symptom in stats["symptoms"] it bounds.
SYMPTOM_BOUNDS = {f"{name}_ms_p99_max": name for name in SYMPTOMS}
_BOUNDS = ("stale_lag_ms_p99_max", "stale_lag_ms_max", "unavailable_share_max",
           "unavailable_ms_max", *SYMPTOM_BOUNDS)
# [load]: (what, where in stats["load"], shown as)
LOAD_BOUNDS = {
    "latency_ms_p95_max": ("latency p95", ("latency_ms", "p95"), "{:,.0f} ms"),
    "latency_ms_p99_max": ("latency p99", ("latency_ms", "p99"), "{:,.0f} ms"),
    "failure_ratio_max": ("failure ratio", ("failure_ratio",), "{:.2%}"),
}


def load_policy(path: Path | str | None) -> Policy:
    """The policy in `path`; None is the built-in default (no critical or major finding), the
    same as fixtures/gate-default.toml."""
    if path is None:
        return Policy(description="No critical or major finding.")
    shipped = fixture(f"gate-{path}.toml") if "/" not in str(path) else None
    path = shipped if shipped is not None and not Path(path).exists() else Path(path)
    raw = _read_toml(path)
    values = {key: _validated(key, value, path) for key, value in raw.items()}
    return Policy(name=Path(path.name).stem.removeprefix("gate-"), **values)


def _read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read gate policy {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"gate policy {path} is not valid TOML{_near_key(text, exc)}: "
                         f"{exc}") from None
    except RecursionError:  # tomllib recurses once per level of `[[[...]]]`
        raise UsageError(f"gate policy {path}: values nested too deeply to read") from None


def _near_key(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The key on the line tomllib complains about, so the message points at the setting."""
    match = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if not match or not 0 < int(match.group(1)) <= len(lines):
        return ""
    key, equals, _ = lines[int(match.group(1)) - 1].partition("=")
    return f" at key {key.strip()!r}" if equals and key.strip() else ""


def _validated(key: str, value: Any, path: Path) -> Any:
    if key not in _KEYS:
        raise UsageError(f"gate policy {path}: unknown key {key!r} "
                         f"(known: {', '.join(_KEYS)})")
    problem = _problem(key, value)
    if problem:
        raise UsageError(f"gate policy {path}: {key!r} {problem}")
    return dict(value) if isinstance(value, dict) else value


def _problem(key: str, value: Any) -> str | None:
    if key == "description":
        return None if isinstance(value, str) else "must be a string"
    if key == "fail_on_severity":
        return _names_problem(value, SEVERITIES, "severities")
    if key == "allow_kinds":
        if isinstance(value, list) and UNJUDGED_KIND in value:
            return f"cannot allow {UNJUDGED_KIND!r}: a checker that crashed vouches for nothing"
        return _names_problem(value, KINDS, "finding kinds")
    if key == "max_findings":
        return _budgets_problem(value)
    if key in _BOUNDS:
        return _bound_problem(key, value)
    if key == "ineffective_faults_max":
        return None if _is_number(value, integer=True) and value >= 0 else \
            "must be a non-negative integer"
    if key == "load":
        return _load_problem(value)
    if key == "coverage_required":
        return None if isinstance(value, bool) else "must be true or false"
    raise AssertionError(key)


def _load_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a table of bounds"
    for key, bound in value.items():
        if key not in LOAD_BOUNDS:
            return f"has {key!r}, not among {', '.join(LOAD_BOUNDS)}"
        if not _is_number(bound) or bound < 0:
            return f"{key} must be a non-negative number"
        if key == "failure_ratio_max" and bound > 1:
            return f"{key} is a ratio between 0 and 1"
    return None


def _names_problem(value: Any, known: tuple[str, ...], what: str) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    unknown = [v for v in value if v not in known]
    if unknown:
        return f"has {', '.join(map(repr, unknown))}, not among the {what} {', '.join(known)}"
    return None


def _budgets_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a table of severity = count"
    for severity, count in value.items():
        if severity not in SEVERITIES:
            return f"has {severity!r}, not among the severities {', '.join(SEVERITIES)}"
        if not _is_number(count, integer=True) or count < 0:
            return f"{severity} must be a non-negative integer"
    return None


def _bound_problem(key: str, value: Any) -> str | None:
    if not _is_number(value) or value < 0:
        return "must be a non-negative number"
    if key == "unavailable_share_max" and value > 1:
        return "is a share and must be between 0 and 1"
    return None


def _is_number(value: Any, integer: bool = False) -> bool:
    # TOML booleans arrive as bool, a subclass of int: `max = true` is a typo, not 1.
    # NaN and infinity are no bound: every comparison with NaN is false, so the gate would pass.
    kinds = (int,) if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and \
        (type(value) is int or math.isfinite(value))


# -- judging --------------------------------------------------------------------------------

def judge(report: dict, policy: Policy) -> GateResult:
    """Pass or fail, with every reason it failed (all of them, so one run says what to fix)."""
    stats = report.get("stats") if isinstance(report.get("stats"), dict) else {}
    reasons = _finding_reasons(report.get("findings") or [], policy)
    reasons += _lag_reasons(stats, policy)
    reasons += _availability_reasons(stats, policy)
    reasons += _symptom_reasons(stats, policy)
    reasons += _load_reasons(stats.get("load"), policy)
    reasons += _coverage_reasons(stats.get("fault_coverage"), policy)
    reasons += _effect_reasons(stats.get("fault_effects"), policy)
    return GateResult(passed=not reasons, reasons=reasons)


def _effect_reasons(effects: Any, policy: Policy) -> list[str]:
    """Injections no client saw act, over the policy's bound. Like `coverage_required`, it
    judges only what a run injected: a report without fault effects (`reconcile`, a report
    made before they were) injected nothing to judge."""
    bound = policy.ineffective_faults_max
    if bound is None or not isinstance(effects, dict):
        return []
    count = effects.get("not_observed")
    if not _is_number(count, integer=True):
        return ["fault effects carry no count of ineffective faults, the policy bounds it "
                "(ineffective_faults_max)"]
    if count <= bound:
        return []
    named = [f"{f.get('label')} at t={f.get('start_ms')} ms via {f.get('provider')}"
             for f in (effects.get("ineffective") or [])[:3] if isinstance(f, dict)]
    more = f" and {count - len(named)} more" if count > len(named) else ""
    return [f"{count} injected fault(s) had no effect the history shows ({'; '.join(named)}"
            f"{more}), policy allows {bound} (ineffective_faults_max)"]


def _coverage_reasons(coverage: Any, policy: Policy) -> list[str]:
    """The planned fault kinds and classes the run never injected (see the module's doc)."""
    planned = coverage.get("planned") if isinstance(coverage, dict) else None
    if not policy.coverage_required or not isinstance(planned, dict) or not planned.get("kinds"):
        return []
    missing = coverage.get("missing")
    if not isinstance(missing, list):
        return ["fault coverage is missing from the stats, the policy requires it "
                "(coverage_required)"]
    if not missing:
        return []
    short = "; the run was too short for its plan" if planned.get("covers") is False else ""
    return [f"planned faults never injected: {', '.join(map(str, missing))} "
            f"(coverage_required){short}"]


def _finding_reasons(findings: list[dict], policy: Policy) -> list[str]:
    # A checker that crashed vouches for nothing, whatever the policy tolerates.
    crashed = sorted({str(f.get("checker")) for f in findings if f.get("kind") == UNJUDGED_KIND})
    reasons = [f"checker {name} crashed: what it checks is unknown" for name in crashed]
    counted = [f for f in findings
               if f.get("kind") not in policy.allow_kinds and f.get("kind") != UNJUDGED_KIND]
    for severity in SEVERITIES:
        mine = [f for f in counted if f.get("severity") == severity]
        budget = policy.budget(severity)
        if len(mine) > budget:
            kinds = sorted({str(f.get("kind")) for f in mine})
            reasons.append(f"{len(mine)} {severity} finding(s) ({', '.join(kinds)}), "
                           f"policy allows {budget:g}")
    return reasons


def _lag_reasons(stats: dict, policy: Policy) -> list[str]:
    lag = stats.get("lag_ms")
    bounds = [("p99", policy.stale_lag_ms_p99_max, "stale_lag_ms_p99_max"),
              ("max", policy.stale_lag_ms_max, "stale_lag_ms_max")]
    reasons = []
    for stat, bound, key in bounds:
        reason = _lag_reason(lag, stat, bound, key) if bound is not None else None
        if reason:
            reasons.append(reason)
    return reasons


def _lag_reason(lag: Any, stat: str, bound: float, key: str) -> str | None:
    if isinstance(lag, dict) and lag.get("count") == 0:
        return None  # no display read was ever behind: nothing to bound
    value = lag.get(stat) if isinstance(lag, dict) else None
    if not _is_number(value):
        return f"display lag {stat} is missing from the stats, the policy bounds it ({key})"
    if value > bound:
        return f"display lag {stat} {value:,.0f} ms exceeds {key} = {bound:,.0f} ms"
    return None


def _availability_reasons(stats: dict, policy: Policy) -> list[str]:
    availability = stats.get("availability")
    bounds = [("share", policy.unavailable_share_max, "unavailable_share_max", "{:.2%}"),
              ("longest_ms", policy.unavailable_ms_max, "unavailable_ms_max", "{:,.0f} ms")]
    reasons = []
    for stat, bound, key, shown in bounds:
        if bound is None:
            continue
        value = availability.get(stat) if isinstance(availability, dict) else None
        if not _is_number(value):
            reasons.append(f"unavailability {stat} is missing from the stats, the policy "
                           f"bounds it ({key})")
        elif value > bound:
            reasons.append(f"unavailability {stat} {shown.format(value)} exceeds {key} = "
                           f"{shown.format(bound)}")
    return reasons


def _symptom_reasons(stats: dict, policy: Policy) -> list[str]:
    found = stats.get("symptoms")
    reasons = []
    for key, name in SYMPTOM_BOUNDS.items():
        bound = getattr(policy, key)
        if bound is None:
            continue
        numbers = found.get(name) if isinstance(found, dict) else None
        reason = _symptom_reason(name, numbers, bound, key)
        if reason:
            reasons.append(reason)
    return reasons


def _symptom_reason(name: str, numbers: Any, bound: float, key: str) -> str | None:
    what = f"{name} ({SYMPTOMS[name].words})"
    count = numbers.get("count") if isinstance(numbers, dict) else None
    if count == 0:
        return None  # no such write in this run: nothing to bound
    p99, never = (numbers.get("p99"), numbers.get("never_shown")) if count else (None, None)
    if p99 is None and _is_number(never, integer=True) and never > 0:
        return (f"{what} p99 unknown: {never} of {count} {SYMPTOMS[name].writes} never shown "
                f"before the run ended, {key} = {bound:,.0f} ms")
    if not _is_number(p99):
        return f"{what} p99 is missing from the stats, the policy bounds it ({key})"
    if p99 > bound:
        return f"{what} p99 {p99:,.0f} ms exceeds {key} = {bound:,.0f} ms"
    return None


def _load_reasons(load: Any, policy: Policy) -> list[str]:
    """A load test's workers that vanished or were cut short, and locust's numbers over the
    policy's [load] bounds (a bounded number missing from the stats fails)."""
    load = load if isinstance(load, dict) else {}
    reasons = [f"{w.get('worker')} vanished (last heard at t={w.get('last_heard_ms')} ms): ops "
               f"after its last chunk are unknown ({w.get('unshipped_writes')} of its writes "
               f"recovered from the ledger as unknown outcomes); rerun the load test"
               for w in _workers(load) if w.get("status") == "vanished"]
    reasons += [f"{w.get('worker')} {problem}" for w in _workers(load)
                for problem in (w.get("problems") or [])[:3]]
    for key, bound in policy.load.items():
        what, path, shown = LOAD_BOUNDS[key]
        value: Any = load
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if not _is_number(value):
            reasons.append(f"{what} is missing from the load stats, the policy bounds it ({key})")
        elif value > bound:
            reasons.append(f"{what} {shown.format(value)} exceeds {key} = {shown.format(bound)}")
    return reasons


def _workers(load: dict) -> list[dict]:
    workers = load.get("workers")
    return [w for w in workers if isinstance(w, dict)] if isinstance(workers, list) else []
