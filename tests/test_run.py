"""`limit-harness run`: determinism, the self-test (every seeded bug caught, no false alarm over
200 seeds) and the command line's promises (reports, exit codes, one-line errors, replay)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.runner import RunConfig, execute
from harness.service.bugs import CATALOGUE

SELF_TEST_SEED = 7
SELF_TEST_OPS = 20_000  # enough for every fault kind, resets of both modes included, to occur


def _run(**kw):
    return execute(RunConfig(quiet=True, **kw))


def _kinds(result) -> set[str]:
    return {f["kind"] for f in result.report["findings"]}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


# -- determinism ---------------------------------------------------------------------------------
def test_a_simulated_run_replays_bit_for_bit():
    first, second = _run(seed=11, ops=1500), _run(seed=11, ops=1500)
    assert first.history.dumps() == second.history.dumps()
    assert first.ledger == second.ledger
    assert first.report["findings"] == second.report["findings"]
    assert first.report["history_sha256"] == second.report["history_sha256"]


def test_a_buggy_run_replays_its_findings_bit_for_bit():
    first = _run(seed=5, ops=3000, bugs=("no_gap_repair",))
    second = _run(seed=5, ops=3000, bugs=("no_gap_repair",))
    assert first.report["findings"], "the bug must show for this check to mean anything"
    assert first.report["findings"] == second.report["findings"]


def test_different_seeds_make_different_histories():
    assert _run(seed=1, ops=500).history.dumps() != _run(seed=2, ops=500).history.dumps()


# -- the self-test: catches every bug, never cries wolf -------------------------------------------
# A bug that only a crash shows (`Bug.crash`) has no crash in a simulated run to show it: the
# kill-and-restart cycles of tests/test_durability.py catch it instead.
@pytest.mark.parametrize("bug", sorted(name for name, bug in CATALOGUE.items() if not bug.crash))
def test_every_seeded_bug_fails_the_run_with_its_finding_kind(bug):
    expected_kind = CATALOGUE[bug].finding_kind
    result = _run(seed=SELF_TEST_SEED, ops=SELF_TEST_OPS, bugs=(bug,))
    assert result.report["verdict"] == "fail"
    assert expected_kind in _kinds(result), (bug, _kinds(result))


def test_no_false_positive_over_200_seeds_with_every_fault():
    flagged = {}
    for seed in range(1000, 1200):
        result = _run(seed=seed, ops=1200, accounts=10, faults="all")
        if result.report["verdict"] != "pass" or result.report["findings"]:
            flagged[seed] = [(f["kind"], f["explanation"][:200]) for f in result.report["findings"][:2]]
    assert not flagged, flagged


def test_every_fault_kind_is_exercised_by_the_default_profile():
    result = _run(seed=SELF_TEST_SEED, ops=SELF_TEST_OPS)
    injected = result.stats["faults_injected"]
    assert set(injected) == {"delay_sync", "drop_events", "duplicate_events", "reorder_events",
                             "pause_sync", "maintenance_reset"}
    modes = {op.request["mode"] for op in result.history.ops
             if op.f == "fault_add" and op.request["kind"] == "maintenance_reset"}
    assert modes == {"clear", "snapshot"}


def test_coverage_counts_operations_under_each_fault():
    result = _run(seed=3, ops=3000)
    coverage = result.report["stats"]["coverage"]
    assert coverage["draw"]["none"] > 0
    assert sum(v for k, v in coverage["draw"].items() if k != "none") > 0


def test_faults_none_injects_nothing():
    result = _run(seed=3, ops=500, faults="none")
    assert not [op for op in result.history.ops if op.f == "fault_add"]
    assert result.report["verdict"] == "pass"


# -- the command line ----------------------------------------------------------------------------
def test_run_writes_the_four_reports_and_exits_0_on_pass(tmp_path):
    done = cli("run", "--seed", "3", "--ops", "800", "--quiet", "--report-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("report.json", "junit.xml", "summary.md", "report.html", "history.jsonl"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("verdict", "seed", "target", "started_at", "duration_s", "stats", "findings",
                "replay"):
        assert key in report, key
    assert report["verdict"] == "pass" and report["seed"] == 3
    assert "PASS" in done.stdout and "replay:" in done.stdout


def test_run_exits_1_with_the_finding_on_a_buggy_target(tmp_path):
    done = cli("run", "--seed", "3", "--ops", "3000", "--quiet", "--bug", "no_cure",
               "--report-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "fail"
    finding = next(f for f in report["findings"] if f["kind"] == "ledger_rule_violation")
    assert finding["severity"] in ("critical", "major") and finding["account_id"]
    assert finding["explanation"]


@pytest.mark.parametrize("args, words", [
    (["run", "--ops", "0"], "must be greater than 0"),
    (["run", "--frobnicate"], "unrecognized arguments"),
    (["run", "--faults", "earthquake"], "unknown fault kind"),
    (["run", "--bug", "no_such_bug"], "unknown bug"),
    (["run", "--policy", "/nonexistent/policy.toml"], "policy"),
    (["run", "--personas", "/nonexistent/personas.toml"], "cannot read personas"),
    (["run", "--target", "http://127.0.0.1:9", "--duration", "1"], "not reachable"),
    (["run", "--target", "ftp://example"], "not an http"),
    (["run", "--duration", "3"], "--duration bounds an HTTP run"),
    (["gate", "/nonexistent/report.json"], "report"),
    (["replay", "/nonexistent/report.json"], "report"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert words in lines[0]
    assert "Traceback" not in done.stderr


def test_a_malformed_policy_file_is_exit_2(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text("fail_on_severity = [\n")
    done = cli("run", "--ops", "100", "--policy", str(policy))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_gate_rejudges_a_stored_report(tmp_path):
    assert cli("run", "--seed", "3", "--ops", "3000", "--quiet", "--bug", "no_cure",
               "--report-dir", str(tmp_path)).returncode == 1
    report = tmp_path / "report.json"
    assert cli("gate", str(report)).returncode == 1
    lenient = Path(__file__).resolve().parent.parent / "fixtures" / "gate-lenient.toml"
    findings = json.loads(report.read_text())["findings"]
    expect = 1 if any(f["severity"] == "critical" for f in findings) else 0
    assert cli("gate", str(report), "--policy", str(lenient)).returncode == expect


def test_replay_reproduces_a_simulated_run_bit_for_bit(tmp_path):
    first = tmp_path / "first"
    assert cli("run", "--seed", "9", "--ops", "1000", "--quiet", "--report-dir", str(first)).returncode == 0
    done = cli("replay", str(first / "report.json"), "--report-dir", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    assert "bit for bit" in done.stdout
    assert (tmp_path / "again" / "history.jsonl").read_bytes() == (first / "history.jsonl").read_bytes()
