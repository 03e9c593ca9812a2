"""The release gate: policies from TOML, and judging a report by one."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.gate import GateResult, Policy, judge, load_policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def finding(severity: str, kind: str = "stale_display") -> dict:
    return {"kind": kind, "severity": severity, "account_id": "acct-张伟",
            "explanation": "made up for the gate", "checker": "display"}


def report(*findings: dict, lag_p99_ms: float = 300, lag_max_ms: float = 900,
           share: float = 0.0, longest_ms: float = 0) -> dict:
    return {
        "verdict": "fail" if findings else "pass",
        "findings": list(findings),
        "stats": {"lag_ms": {"count": 50, "p50": 40, "p90": 100, "p99": lag_p99_ms,
                             "max": lag_max_ms},
                  "availability": {"reads": 100, "unavailable": round(share * 100),
                                   "share": share, "longest_ms": longest_ms},
                  # What users waited for each kind of write to show (tests/test_symptoms.py).
                  "symptoms": {name: {"count": 40, "never_shown": 0, "p50": 400, "p90": 900,
                                      "p99": 1_200, "max": 1_500}
                               for name in ("restore", "limit_shown", "usable", "draw_shown")}},
    }


def policy_file(tmp_path: Path, text: str, name: str = "gate-custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped policies ---------------------------------------------------------------------

def test_default_policy_fails_on_a_major_finding() -> None:
    result = judge(report(finding("minor"), finding("major", "lost_write")), load_policy(None))
    assert not result.passed
    assert result.reasons == ["1 major finding(s) (lost_write), policy allows 0"]


def test_default_policy_passes_on_minor_findings_only() -> None:
    result = judge(report(finding("minor"), finding("minor")), load_policy(None))
    assert result == GateResult(passed=True, reasons=[])


def test_default_file_matches_the_built_in_default() -> None:
    assert asdict(load_policy(FIXTURES / "gate-default.toml")) == asdict(load_policy(None))


def test_strict_policy_fails_on_lag_p99_over_its_bound() -> None:
    strict = load_policy(FIXTURES / "gate-strict.toml")
    assert strict.name == "strict"
    assert judge(report(lag_p99_ms=900), strict).passed
    result = judge(report(lag_p99_ms=1500), strict)
    assert not result.passed
    assert result.reasons == ["display lag p99 1,500 ms exceeds stale_lag_ms_p99_max = 1,000 ms"]


def test_strict_policy_bounds_unavailability() -> None:
    strict = load_policy(FIXTURES / "gate-strict.toml")
    result = judge(report(share=0.05, longest_ms=2500), strict)
    assert result.reasons == [
        "unavailability share 5.00% exceeds unavailable_share_max = 1.00%",
        "unavailability longest_ms 2,500 ms exceeds unavailable_ms_max = 2,000 ms",
    ]


def test_strict_policy_fails_when_the_stats_it_bounds_are_missing() -> None:
    strict = load_policy(FIXTURES / "gate-strict.toml")
    result = judge({"verdict": "pass", "findings": []}, strict)
    assert not result.passed
    assert len(result.reasons) == 8  # lag p99 and max, unavailability twice, four symptoms
    assert all("missing from the stats" in reason for reason in result.reasons)


def test_lag_bounds_hold_trivially_when_no_read_lagged() -> None:
    strict = load_policy(FIXTURES / "gate-strict.toml")
    bare = report()
    bare["stats"]["lag_ms"] = {"count": 0}
    assert judge(bare, strict).passed


def test_lenient_policy_fails_on_critical_only() -> None:
    lenient = load_policy(FIXTURES / "gate-lenient.toml")
    assert judge(report(finding("major", "display_divergence")), lenient).passed
    assert not judge(report(finding("critical", "duplicate_write")), lenient).passed


# -- policy semantics ---------------------------------------------------------------------------

def test_allow_kinds_never_fail_the_gate() -> None:
    allowing = Policy(allow_kinds=["stale_display"])
    assert judge(report(finding("major", "stale_display")), allowing).passed
    assert not judge(report(finding("major", "inconsistent_display")), allowing).passed


def test_max_findings_is_a_budget_per_severity(tmp_path: Path) -> None:
    policy = load_policy(policy_file(tmp_path, "[max_findings]\nmajor = 1\nminor = 2\n"))
    assert judge(report(finding("major"), finding("minor"), finding("minor")), policy).passed
    result = judge(report(finding("major"), finding("major"), finding("minor")), policy)
    assert result.reasons == ["2 major finding(s) (stale_display), policy allows 1"]
    assert not judge(report(*[finding("minor")] * 3), policy).passed
    assert not judge(report(finding("critical")), policy).passed, "critical still fails"


def test_gate_result_as_the_reports_gate_entry() -> None:
    result = judge(report(finding("critical")), load_policy(None))
    assert result.to_dict(load_policy(None)) == {
        "policy": "default", "passed": False,
        "reasons": ["1 critical finding(s) (stale_display), policy allows 0"]}


# -- bad policy files -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, needles", [
    ("fail_on_severity = [critical]\n", ["not valid TOML", "'fail_on_severity'", "line 1"]),
    ("[max_findings\n", ["not valid TOML", "line 1"]),
    ("fail_on_severity = [\"critical\"]\nmax_lag = 5\n", ["unknown key 'max_lag'"]),
    ("stale_lag_ms_p99_max = \"1s\"\n", ["'stale_lag_ms_p99_max'", "number"]),
    ("unavailable_ms_max = true\n", ["'unavailable_ms_max'", "number"]),
    ("unavailable_share_max = 5\n", ["'unavailable_share_max'", "between 0 and 1"]),
    ("fail_on_severity = \"critical\"\n", ["'fail_on_severity'", "list of strings"]),
    ("fail_on_severity = [\"blocker\"]\n", ["'fail_on_severity'", "'blocker'"]),
    ("allow_kinds = [\"stale_dispaly\"]\n", ["'allow_kinds'", "'stale_dispaly'"]),
    ("[max_findings]\nminor = -1\n", ["'max_findings'", "minor"]),
    ("[max_findings]\ntrivial = 3\n", ["'max_findings'", "'trivial'"]),
    ("max_findings = 3\n", ["'max_findings'", "table"]),
])
def test_bad_policy_files_raise_usage_errors_naming_the_key(tmp_path: Path, text: str,
                                                              needles: list[str]) -> None:
    path = policy_file(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        load_policy(path)
    message = str(raised.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_a_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read gate policy"):
        load_policy(tmp_path / "gate-nowhere.toml")


# -- coverage_required -----------------------------------------------------------------------------

def covering(missing: list[str], *, kinds: dict | None = None, covers: bool = True) -> dict:
    """A passing report whose nemesis planned `kinds` and never injected `missing`."""
    planned = {"kinds": {"maintenance_reset": ["clear", "snapshot"], "pause_sync": []}
               if kinds is None else kinds, "covers": covers}
    base = report()
    base["stats"]["fault_coverage"] = {"planned": planned, "missing": missing,
                                       "missing_combinations": ["pause_sync alone"]}
    return base


def test_coverage_required_fails_naming_each_planned_fault_never_injected() -> None:
    result = judge(covering(["maintenance_reset(snapshot)", "pause_sync"]), load_policy(None))
    assert not result.passed
    assert result.reasons == ["planned faults never injected: maintenance_reset(snapshot), "
                              "pause_sync (coverage_required)"]
    short = judge(covering(["pause_sync"], covers=False), load_policy("strict"))
    assert short.reasons[-1].endswith("the run was too short for its plan")


def test_coverage_required_passes_when_every_planned_fault_was_injected() -> None:
    # A combination missed (alone, overlapping) is reported, never gated.
    assert judge(covering([]), load_policy(None)).passed


def test_coverage_required_judges_only_what_a_nemesis_planned() -> None:
    default = load_policy(None)
    assert judge(report(), default).passed                    # `check` of an old history
    no_plan = report()
    no_plan["stats"]["fault_coverage"] = {"planned": None, "missing": []}
    assert judge(no_plan, default).passed                     # a load test, prop
    assert judge(covering(["x"], kinds={}), default).passed   # --faults none
    broken = covering([])
    del broken["stats"]["fault_coverage"]["missing"]
    assert judge(broken, default).reasons == [
        "fault coverage is missing from the stats, the policy requires it (coverage_required)"]


def test_coverage_required_is_on_in_default_and_strict_off_in_lenient(tmp_path: Path) -> None:
    assert load_policy(None).coverage_required and load_policy("default").coverage_required
    assert load_policy("strict").coverage_required
    assert not load_policy("lenient").coverage_required
    assert judge(covering(["pause_sync"]), load_policy("lenient")).passed
    off = load_policy(policy_file(tmp_path, "coverage_required = false\n"))
    assert judge(covering(["pause_sync"]), off).passed
    with pytest.raises(UsageError, match="'coverage_required' must be true or false"):
        load_policy(policy_file(tmp_path, "coverage_required = 1\n"))
