"""`run` and the locust load test against the reference service over real HTTP: a correct
service passes under every fault, a buggy one fails with the right finding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.http, pytest.mark.slow]


def _run(url: str, report_dir: Path, duration_s: str = "3") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--target", url, "--duration", duration_s,
         "--accounts", "12", "--seed", "4", "--quiet", "--report-dir", str(report_dir)],
        capture_output=True, text=True, timeout=120)


def test_http_run_passes_against_the_correct_service_under_every_fault(start_service, tmp_path):
    served = start_service("--ledger", f"sqlite:///{tmp_path}/ledger.sqlite")
    done = _run(served.url, tmp_path / "report")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verdict"] == "pass" and report["mode"] == "http"
    assert report["stats"]["faults_injected"], "the nemesis must have injected faults"


def test_http_run_fails_against_a_buggy_service_with_its_finding(start_service, tmp_path):
    served = start_service("--bug", "limit_cut_hidden", "--ledger", "memory://")
    done = _run(served.url, tmp_path / "report", duration_s="4")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "inconsistent_display" in {f["kind"] for f in report["findings"]}


def _locust(url: str, report_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIMIT_REPORT_DIR": str(report_dir)}
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
         "--headless", "-u", "8", "-r", "8", "-t", "4s", "--host", url, "--only-summary"],
        capture_output=True, text=True, timeout=120, env=env, cwd=report_dir.parent)


def test_locust_load_test_reconciles_and_passes_on_the_correct_service(start_service, tmp_path):
    served = start_service("--ledger", "memory://")
    done = _locust(served.url, tmp_path / "load")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "load" / "report.json").read_text())["verdict"] == "pass"


def test_locust_load_test_exits_1_when_reconciliation_finds_a_bug(start_service, tmp_path):
    served = start_service("--bug", "limit_cut_hidden", "--ledger", "memory://")
    done = _locust(served.url, tmp_path / "load")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "load" / "report.json").read_text())
    assert report["verdict"] == "fail"
