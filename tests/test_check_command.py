"""`limit-harness check`: a stored run judged again gives the run's own findings and exit code;
a checker that crashes is a `checker_error` finding that fails the gate, never a dead run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import checkers, gate, statistics
from harness.checkers import REGISTRY, Checker
from harness.reports import document
from harness.runner import RunConfig, execute, save
from checker_histories import opened


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _saved(tmp_path: Path, **kw) -> tuple[dict, Path]:
    result = execute(RunConfig(quiet=True, ops=2_000, **kw))
    report_dir = save(result, tmp_path / "run")
    return result.report, report_dir


def _essence(findings: list[dict]) -> list[tuple]:
    return [(f["kind"], f["severity"], f["account_id"], f["first_seen_ms"], f["explanation"])
            for f in findings]


def test_check_of_a_stored_buggy_run_gives_its_findings_and_exit_1(tmp_path):
    report, run_dir = _saved(tmp_path, seed=3, bugs=("exact_available_rejected",))
    assert report["verdict"] == "fail" and report["findings"]
    done = cli("check", str(run_dir / "history.jsonl"), str(run_dir / "ledger.jsonl"),
               "--report-dir", str(tmp_path / "again"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert _essence(again["findings"]) == _essence(report["findings"])
    assert again["history_sha256"] == report["history_sha256"]
    assert {"report.json", "junit.xml", "summary.md", "report.html"} <= \
        {p.name for p in (tmp_path / "again").iterdir()}
    assert "FAIL" in done.stdout and "wrongful_rejection" in done.stdout


def test_check_of_a_clean_run_passes_with_exit_0_into_reports_under_the_cwd(tmp_path):
    report, run_dir = _saved(tmp_path, seed=4)
    assert report["verdict"] == "pass"
    done = cli("check", str(run_dir / "history.jsonl"), str(run_dir / "ledger.jsonl"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [made] = (tmp_path / "reports").iterdir()
    assert json.loads((made / "report.json").read_text())["findings"] == []


def test_a_stricter_service_level_at_check_time_can_fail_a_passing_run(tmp_path):
    _, run_dir = _saved(tmp_path, seed=4)
    done = cli("check", str(run_dir / "history.jsonl"), str(run_dir / "ledger.jsonl"),
               "--sla-ms", "1", "--report-dir", str(tmp_path / "strict"), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    kinds = {f["kind"] for f in json.loads((tmp_path / "strict" / "report.json").read_text())
             ["findings"]}
    assert "stale_display" in kinds


@pytest.mark.parametrize("history, ledger, words", [
    ("missing.jsonl", "ledger.jsonl", "cannot read history"),
    ("bad.jsonl", "ledger.jsonl", "line 2"),
    ("history.jsonl", "garbage.jsonl", "line 1 is not JSON"),
    ("ledger.jsonl", "ledger.jsonl", "not a history file"),
])
def test_files_that_cannot_be_judged_exit_2_with_one_line(tmp_path, history, ledger, words):
    _, run_dir = _saved(tmp_path, seed=4)
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    (run_dir / "bad.jsonl").write_text(lines[0] + "\n{\"index\": \"x\"}\n")
    (run_dir / "garbage.jsonl").write_text("not json at all\n")
    done = cli("check", str(run_dir / history), str(run_dir / ledger), cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


# -- check-safe --------------------------------------------------------------------------------

def _crashing(analysis):
    raise KeyError("boom")


def test_a_checker_that_raises_is_a_checker_error_finding_and_the_others_still_judge(monkeypatch):
    b = opened()
    b.draw("a1", 30_00, entries=0)  # acknowledged, never written: a lost write
    monkeypatch.setitem(REGISTRY, "display", Checker("display", "crashes", _crashing))
    verdict = checkers.check(b.history, b.ledger)
    kinds = [f.kind for f in verdict.findings]
    assert "checker_error" in kinds and "lost_write" in kinds
    [error] = [f for f in verdict.findings if f.kind == "checker_error"]
    assert error.checker == "display" and "KeyError" in error.explanation
    assert verdict.stats["ops"], "the statistics still come"


def test_a_checker_error_fails_the_gate_whatever_the_policy_allows(tmp_path, monkeypatch):
    b = opened()
    monkeypatch.setitem(REGISTRY, "ledger", Checker("ledger", "crashes", _crashing))
    verdict = checkers.check(b.history, b.ledger)
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('fail_on_severity = []\n[max_findings]\ncritical = 99\n')
    import datetime as dt
    report = document.build(run_id="r", seed=0, target="t", mode="check",
                            started=dt.datetime.now(dt.timezone.utc), duration_s=0.0, config={},
                            stats=verdict.stats, findings=verdict.findings, replay="",
                            policy=gate.load_policy(lenient))
    assert report["verdict"] == "fail"
    assert any("checker ledger crashed" in r for r in report["gate"]["reasons"])


def test_a_policy_cannot_allow_checker_errors(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('allow_kinds = ["checker_error"]\n')
    with pytest.raises(Exception, match="cannot allow 'checker_error'"):
        gate.load_policy(policy)


def test_the_registry_names_every_checker_once_with_its_property():
    assert list(REGISTRY) == ["writes", "ledger", "rejections", "display"]
    for name, checker in REGISTRY.items():
        assert checker.name == name and len(checker.statement) > 40


# -- two processes --------------------------------------------------------------------------------

def _buggy_run():
    return execute(RunConfig(quiet=True, ops=3_000, seed=5, bugs=("no_gap_repair",)))


def test_checking_on_two_processes_gives_what_one_process_gives(monkeypatch):
    result = _buggy_run()
    one = checkers.check(result.history, result.ledger)
    monkeypatch.setattr(checkers, "SPLIT_OPS_MIN", 0)
    two = checkers.check(result.history, result.ledger)
    assert one.findings, "the bug must show for the comparison to mean anything"
    assert [f.to_dict() for f in two.findings] == [f.to_dict() for f in one.findings]
    assert two.stats == one.stats


def _dies_in_the_child(parent_pid, compute):
    def run(analysis):
        if os.getpid() != parent_pid:
            os._exit(3)
        return compute(analysis)
    return run


def test_a_child_that_dies_before_it_claims_a_checker_loses_nothing(monkeypatch):
    result = _buggy_run()
    one = checkers.check(result.history, result.ledger)
    monkeypatch.setattr(checkers, "SPLIT_OPS_MIN", 0)
    # The child starts with the costliest statistic: it dies there, before it claims any
    # checker, so this process checks everything and computes the statistics itself.
    monkeypatch.setitem(statistics.COSTLY, "symptoms", _dies_in_the_child(
        os.getpid(), statistics.COSTLY["symptoms"]))
    two = checkers.check(result.history, result.ledger)
    assert not [f for f in two.findings if f.kind == "checker_error"]
    assert [f.to_dict() for f in two.findings] == [f.to_dict() for f in one.findings]
    assert two.stats == one.stats and two.stats["symptoms"]
