"""`limit-harness gate --merge`: the partial reports of `reconcile --partition K/N` (and of
several runs) joined into one report and judged once; parts that are not one whole split are
refused with exit 2 and one line saying what is missing or mixed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness import cli, gate
from harness.merge import Part, merge, merge_stats
from harness.reconcile import datagen


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> datagen.Generated:
    out = tmp_path_factory.mktemp("export")
    return datagen.generate(600, 5, seed=11, out_dir=out, mismatches=12)


def _reconcile(export: datagen.Generated, report_dir: Path, *options: str) -> int:
    return cli.main(["reconcile", "--ledger", str(export.ledger_path), "--display",
                     str(export.display_path), "--report-dir", str(report_dir), *options])


def _report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


def _found(report: dict) -> Counter:
    return Counter((f["kind"], f["severity"], f["account_id"]) for f in report["findings"])


def test_the_partitions_merge_into_the_verdict_of_the_whole(export, tmp_path, capsys):
    assert _reconcile(export, tmp_path / "whole") == 1
    for k in (1, 2, 3):
        assert _reconcile(export, tmp_path / f"part{k}", "--partition", f"{k}/3") == 1
    # In any order, as report directories or report.json files.
    code = cli.main(["gate", "--merge", str(tmp_path / "part3"), str(tmp_path / "part1"),
                     str(tmp_path / "part2" / "report.json"), "--report-dir",
                     str(tmp_path / "merged")])
    out = capsys.readouterr().out
    assert code == 1 and "partitions 3 of 3" in out and "gate: FAIL" in out
    whole, merged = _report(tmp_path / "whole"), _report(tmp_path / "merged")
    assert _found(merged) == _found(whole)
    assert len(merged["findings"]) == len(export.planted)
    for key in ("accounts", "ledger_entries", "display_rows", "findings", "findings_by_kind",
                "findings_by_severity"):
        assert merged["stats"][key] == whole["stats"][key], key
    severities = [f["severity"] for f in merged["findings"]]
    assert severities == sorted(severities, key=("critical", "major", "minor").index)
    assert merged["verdict"] == "fail" and merged["gate"]["reasons"]
    assert {p["partition"] for p in merged["config"]["merged_from"]} == {"1/3", "2/3", "3/3"}
    assert merged["config"]["ledger"] == str(export.ledger_path)
    assert {"junit.xml", "summary.md", "report.html"} <= {p.name for p in
                                                          (tmp_path / "merged").iterdir()}
    # The merged report is a report like any other: `gate` judges it again the same way.
    assert cli.main(["gate", str(tmp_path / "merged" / "report.json")]) == 1


def test_clean_partitions_merge_to_a_pass(tmp_path, capsys):
    clean = datagen.generate(300, 4, seed=5, out_dir=tmp_path / "data")
    for k in (1, 2):
        assert _reconcile(clean, tmp_path / f"part{k}", "--partition", f"{k}/2") == 0
    code = cli.main(["gate", "--merge", str(tmp_path / "part1"), str(tmp_path / "part2")])
    assert code == 0 and "gate: PASS" in capsys.readouterr().out


@pytest.fixture(scope="module")
def parts(export, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parts")
    for k in (1, 2, 3):
        _reconcile(export, root / f"p{k}of3", "--partition", f"{k}/3")
    _reconcile(export, root / "p1of2", "--partition", "1/2")
    _reconcile(export, root / "p3of3cut", "--partition", "3/3", "--as-of-seq", "2000")
    _reconcile(export, root / "whole")
    return root


@pytest.mark.parametrize("names, words", [
    (["p1of3", "p3of3"], "1 of 3 partitions missing (2/3)"),
    (["p1of3", "p2of3", "p2of3", "p3of3"], "are the same report"),
    (["p1of3", "p2of3", "p1of2"], "parts of one split share N"),
    (["p1of3", "p2of3", "p3of3cut"], "as_of_seq"),
    (["p1of3", "p2of3", "p3of3", "whole"], "would count twice"),
])
def test_parts_that_are_not_one_whole_split_are_refused(parts, names, words, capsys):
    code = cli.main(["gate", "--merge", *(str(parts / name) for name in names)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1, err


def test_gate_without_merge_judges_one_report(parts, capsys):
    assert cli.main(["gate", str(parts / "p1of3" / "report.json"),
                     str(parts / "p2of3" / "report.json")]) == 2
    assert "--merge" in capsys.readouterr().err


# -- stats -------------------------------------------------------------------------------------

def test_stats_merge_by_what_each_number_means():
    first = {"accounts": 3, "ops": {"draw": {"ok": 5, "fail": 1}}, "ops_per_s": 900.0,
             "lag_ms": {"count": 10, "p50": 4, "p99": 100, "max": 300},
             "availability": {"unavailable": 1, "reads": 10, "share": 0.1, "longest_ms": 50},
             "engine": "columnar", "fault_coverage": {"alone": ["drop_events"]},
             "load": {"workers": [{"worker": "w1", "status": "finished"}]}}
    second = {"accounts": 4, "ops": {"draw": {"ok": 2}, "repay": {"ok": 7}}, "ops_per_s": 50.0,
              "lag_ms": {"count": 30, "p50": 9, "p99": 40, "max": 700},
              "availability": {"unavailable": 0, "reads": 30, "share": 0.0, "longest_ms": 20},
              "engine": "rows", "fault_coverage": {"alone": ["delay_sync", "drop_events"]},
              "load": {"workers": [{"worker": "w2", "status": "vanished"}]}}
    merged, notes = merge_stats([first, second])
    assert merged["accounts"] == 7
    assert merged["ops"] == {"draw": {"ok": 7, "fail": 1}, "repay": {"ok": 7}}
    assert merged["lag_ms"] == {"count": 40, "p50": 9, "p99": 100, "max": 700}
    assert merged["availability"] == {"unavailable": 1, "reads": 40, "share": 1 / 40,
                                      "longest_ms": 50}
    assert merged["fault_coverage"] == {"alone": ["delay_sync", "drop_events"]}
    assert [w["worker"] for w in merged["load"]["workers"]] == ["w1", "w2"]
    assert "ops_per_s" not in merged and "engine" not in merged
    assert notes == {"upper_bounds": ["lag_ms.p50", "lag_ms.p99"],
                     "dropped": ["engine", "ops_per_s"]}


def test_one_part_keeps_its_percentiles_exact():
    merged, notes = merge_stats([{"lag_ms": {"count": 3, "p99": 12}}])
    assert merged == {"lag_ms": {"count": 3, "p99": 12}} and notes["upper_bounds"] == []


def _run_report(run_id: str, p99: int, workers: list[dict] | None = None) -> dict:
    return {"verdict": "pass", "run_id": run_id, "seed": 1, "target": "http://t", "mode": "http",
            "started_at": "2026-01-01T00:00:00Z", "duration_s": 10.0, "config": {"seed": 1},
            "stats": {"client_ops": 100, "lag_ms": {"count": 50, "p99": p99, "max": p99},
                      "load": {"workers": workers or []}},
            "findings": [], "replay": "limit-harness run", "gate": {}}


def test_a_gate_bound_on_a_percentile_judges_the_upper_bound(tmp_path):
    policy = tmp_path / "gate-lag.toml"
    policy.write_text("stale_lag_ms_p99_max = 500\n")
    bound = gate.load_policy(policy)
    fast = [Part(Path(f"r{n}"), _run_report(f"r{n}", 100 + n)) for n in range(2)]
    assert merge(fast, bound)["verdict"] == "pass"
    mixed = [Part(Path("fast"), _run_report("fast", 100)),
             Part(Path("slow"), _run_report("slow", 900))]
    report = merge(mixed, bound)
    assert report["verdict"] == "fail"
    assert any("p99 900" in reason for reason in report["gate"]["reasons"])
    assert report["stats"]["client_ops"] == 200 and report["stats"]["merge"]["parts"] == 2


def test_a_vanished_worker_in_any_part_fails_the_merged_gate():
    vanished = {"worker": "w3", "status": "vanished", "last_heard_ms": 5, "unshipped_writes": 2}
    parts = [Part(Path("a"), _run_report("a", 10)),
             Part(Path("b"), _run_report("b", 10, [vanished]))]
    report = merge(parts, gate.load_policy(None))
    assert report["verdict"] == "fail" and "w3 vanished" in report["gate"]["reasons"][0]
