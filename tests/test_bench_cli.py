"""`limit-harness bench`: the benchmarks run from the installed package (the scripts in
benchmarks/ only wrap them). `bench reconcile` must find exactly what it planted, and say so
loudly when it does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "bench", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    data = tmp_path_factory.mktemp("bench-data")
    done = _bench("reconcile", "--accounts", "400", "--entries-per-account", "5",
                  "--mismatches", "12", "--repeat", "1", "--data-dir", str(data), cwd=data)
    return done, data


@pytest.mark.slow
def test_bench_reconcile_compares_side_by_side_and_finds_what_it_planted(reconciled):
    done, _ = reconciled
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in ("ours: limit-harness reconcile", "floor: polars aggregate + join",
                  "DuckDB aggregate + join", "datacompy PolarsCompare",
                  "datacompy PandasCompare"):
        assert label in out, label
    assert "400 accounts x 5 entries = 2,000 ledger entries, 12 planted" in out
    assert "planted: 12 of 12 found, 0 missed, 0 unexpected -> OK" in out
    for ratio in ("datacompy polars / ours", "datacompy pandas / ours", "ours / polars floor",
                  "ours, peak RSS MiB"):
        assert ratio in out, ratio
    assert "ours, stages of the best run (s): read " in out
    assert "bench reconcile: ours (run 1 of 1)..." in done.stderr  # progress on stderr


@pytest.mark.slow
def test_a_planted_mismatch_not_found_fails_loudly(reconciled, tmp_path):
    _, data = reconciled
    (cached,) = [d for d in data.iterdir() if (d / "planted.json").exists()]
    planted = json.loads((cached / "planted.json").read_text())
    planted.append({"account_id": "acct-99999999", "defect": "overdraw",
                    "kind": "ledger_rule_violation", "severity": "critical"})
    (cached / "planted.json").write_text(json.dumps(planted))
    done = _bench("reconcile", "--accounts", "400", "--entries-per-account", "5",
                  "--mismatches", "12", "--repeat", "1", "--data-dir", str(data), "--skip",
                  "floor", "floor_duckdb", "datacompy_polars", "datacompy_pandas", cwd=tmp_path)
    assert done.returncode == 1
    assert "12 of 13 found, 1 missed" in done.stdout and "-> FAIL" in done.stdout
    assert "missed: ('acct-99999999'" in done.stdout
    assert "did not find exactly the planted mismatches" in done.stderr


def test_a_bad_option_is_one_line_and_exit_2(tmp_path):
    done = _bench("reconcile", "--accounts", "10", "--mismatches", "11", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--mismatches" in done.stderr


def test_bench_check_prints_operations_checked_per_second(tmp_path):
    done = _bench("check", "--ops", "600", "--seed", "3", "--repeat", "1", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr  # 1: under the 50,000/s target
    rate = [line for line in done.stdout.splitlines() if "operations checked per second" in line]
    assert rate and int(rate[0].split("|")[2].replace(",", "")) > 0


def test_the_script_wraps_the_package(tmp_path):
    # The same options through the script as through `limit-harness bench check`.
    script = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_check.py"),
                             "--help"], capture_output=True, text=True, cwd=tmp_path)
    command = _bench("check", "--help", cwd=tmp_path)
    for option in ("--ops", "--seed", "--repeat"):
        assert option in script.stdout and option in command.stdout


def test_simulated_rate_is_measured_in_process():
    from harness.bench import run

    rate, client_rate = run.simulated("memory://", 300, 1)
    assert rate > client_rate > 0


@pytest.mark.http
def test_bench_http_drives_a_served_reference_service(tmp_path):
    done = _bench("http", "--duration", "1", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    assert "HTTP run vs reference service, safety-phase ops/s (1 s)" in done.stdout
