"""Wall-clock bounds: a target that stalls, trickles or streams forever cannot hold a command
past its bound; the command says which phase and why in one line, exits 2, and keeps what it
recorded, marked incomplete (never a report that looks whole)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from harness import cli, runner
from harness.conform import CHECK_NAMES
from harness.deadline import BoundedTarget, Deadline, DeadlineExceeded
from harness.errors import HarnessError
from harness.targets import Reply

from hostile_target import HostileTarget

pytestmark = pytest.mark.timeout(120)
pytest_plugins = ["pytester"]

HTTP_QUICK = ["--timeout-s", "0.5", "--accounts", "2", "--workers", "2", "--faults", "none",
              "--quiet"]


class _Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


# -- the Deadline itself ------------------------------------------------------------------------

def test_a_phase_past_its_own_bound_is_named_with_that_bound():
    clock = _Clock()
    deadline = Deadline("run", 1000, clock=clock)
    deadline.enter("setup", 5)
    clock.now_s += 4.9
    deadline.check()  # within
    deadline.enter("safety", 10)  # a new phase, a new bound from now
    clock.now_s += 9.9
    deadline.check()
    clock.now_s += 0.2
    with pytest.raises(DeadlineExceeded) as caught:
        deadline.check()
    exc = caught.value
    assert isinstance(exc, HarnessError)
    assert (exc.phase, exc.bound_s, exc.whole) == ("safety", 10, False)
    assert "cut short in the safety phase after 15.0 s" in str(exc)
    assert "its bound of 10 s" in str(exc) and "\n" not in str(exc)


def test_the_whole_bound_cuts_whatever_phase_is_running_and_overshoot_is_blamed_on_its_phase():
    clock = _Clock()
    deadline = Deadline("run", 30, clock=clock)
    deadline.enter("setup", 100)
    clock.now_s += 31
    with pytest.raises(DeadlineExceeded) as caught:
        deadline.enter("safety", 100)  # the setup phase took the time: it is the one named
    assert (caught.value.phase, caught.value.whole) == ("setup", True)
    assert "it ran past --max-run-s 30" in str(caught.value)


def test_a_bounded_target_checks_before_each_request_and_never_refuses_clearing_faults():
    class Stub:
        simulated = False
        name = "stub"

        def __init__(self) -> None:
            self.sent: list[str] = []

        def request(self, method, path, body=None, query=None):
            self.sent.append(f"{method} {path}")
            return Reply(None, None, "timeout: read timed out")

    clock = _Clock()
    stub = Stub()
    target = BoundedTarget(stub, Deadline("conform", 5, clock=clock))
    target.request("GET", "/v1/health")
    clock.now_s += 6
    with pytest.raises(DeadlineExceeded, match="target's last trouble: GET /v1/health: timeout"):
        target.request("GET", "/v1/accounts/a/display")
    target.request("DELETE", "/v1/chaos/faults")  # a shared service is left as it was found
    assert stub.sent == ["GET /v1/health", "DELETE /v1/chaos/faults"]
    assert target.name == "stub"


def test_default_bounds_grow_with_the_run():
    short = runner.RunConfig(ops=1_000)
    long = runner.RunConfig(ops=100_000)
    assert runner.default_max_run_s(long) > runner.default_max_run_s(short) >= 5 * 60
    http = runner.RunConfig(target="http://x", duration_s=20)
    longer = runner.RunConfig(target="http://x", duration_s=600)
    assert runner.default_max_run_s(longer) - runner.default_max_run_s(http) >= 580
    assert runner.phase_bound_s(http, "check", 200_000, 0) > \
        runner.phase_bound_s(http, "check", 0, 0)


# -- a real run against a stalling target -------------------------------------------------------

def _run(capsys, *argv: str) -> tuple[int, list[str], float]:
    started = time.monotonic()
    code = cli.main(list(argv))
    took_s = time.monotonic() - started
    err = capsys.readouterr().err
    return code, err.splitlines(), took_s


def _displays(how: str):
    return lambda method, path, query: how if path.endswith("/display") else None


def test_a_run_whose_target_stops_answering_displays_is_cut_short_within_its_bound(tmp_path,
                                                                                    capsys):
    with HostileTarget(_displays("stall")) as target:
        code, err, took_s = _run(capsys, "run", "--target", target.url, "--duration", "1",
                                 "--max-run-s", "4", "--report-dir", str(tmp_path), *HTTP_QUICK)
    # One request past the bound at most: three times --timeout-s.
    assert code == 2 and took_s < 4 + 3 * 0.5 + 2, took_s
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "run cut short in the convergence phase" in err[0] and "--max-run-s 4" in err[0]
    assert "GET /v1/accounts/" in err[0] and str(tmp_path) in err[0]
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["verdict"] == "incomplete" and report["incomplete"]["phase"] == "convergence"
    assert "findings" not in report and "gate" not in report
    assert not (tmp_path / "junit.xml").exists() and not (tmp_path / "report.html").exists()
    history = (tmp_path / "history.jsonl").read_bytes().splitlines()
    assert len(history) > 5 and b'"incomplete"' in history[0]
    # Nothing downstream mistakes it for a judged run.
    assert cli.main(["gate", str(tmp_path / "report.json")]) == 2
    assert cli.main(["check", str(tmp_path / "history.jsonl"), str(tmp_path / "history.jsonl"),
                     "--report-dir", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "cut short" in err and "Traceback" not in err


def test_a_long_safety_phase_stops_at_the_bound_not_at_its_planned_end(tmp_path, capsys):
    with HostileTarget(lambda method, path, query: None) as target:
        code, err, took_s = _run(capsys, "run", "--target", target.url, "--duration", "60",
                                 "--max-run-s", "3", "--report-dir", str(tmp_path), *HTTP_QUICK)
    assert code == 2 and took_s < 3 + 3 * 0.5 + 2, took_s
    assert len(err) == 1 and "run cut short in the safety phase" in err[0], err


def test_a_phase_bound_cuts_a_stalled_setup_without_any_max_run_s(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "PHASE_BASE_S", 1.0)
    monkeypatch.setattr(runner, "OPEN_S_MAX", 0.5)  # setup bound: 1 + 2 accounts x 0.5 = 2 s
    opens = lambda method, path, query: "trickle" if path == "/v1/accounts" else None  # noqa: E731
    with HostileTarget(opens) as target:
        code, err, took_s = _run(capsys, "run", "--target", target.url, "--duration", "1",
                                 "--report-dir", str(tmp_path), *HTTP_QUICK)
    assert code == 2 and took_s < 2 + 3 * 0.5 + 2, took_s
    assert len(err) == 1 and "run cut short in the setup phase" in err[0], err
    assert "its bound of 2 s" in err[0] and "timeout" in err[0]
    assert orjson.loads((tmp_path / "report.json").read_bytes())["verdict"] == "incomplete"


def test_a_report_dir_reused_keeps_no_whole_looking_report_of_an_earlier_run(tmp_path, capsys):
    assert cli.main(["run", "--seed", "3", "--ops", "300", "--accounts", "3", "--quiet",
                     "--report-dir", str(tmp_path)]) == 0
    assert (tmp_path / "junit.xml").exists()
    code = cli.main(["run", "--seed", "3", "--ops", "200000", "--accounts", "3", "--quiet",
                     "--max-run-s", "0.5", "--report-dir", str(tmp_path)])
    assert code == 2 and "run cut short in the safety phase" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", "ledger.jsonl",
                                                          "report.json"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", "report.json"]
    assert orjson.loads((tmp_path / "report.json").read_bytes())["verdict"] == "incomplete"


# -- the other commands -------------------------------------------------------------------------

def test_conform_against_a_stalling_target_is_cut_short_and_keeps_the_rules_judged(tmp_path,
                                                                                    capsys):
    with HostileTarget(_displays("stall")) as target:
        code, err, took_s = _run(capsys, "conform", "--target", target.url, "--timeout-s", "0.5",
                                 "--max-run-s", "3", "--report-dir", str(tmp_path))
    assert code == 2 and took_s < 3 + 3 * 0.5 + 2, took_s
    assert len(err) == 1 and "conform cut short in the" in err[0] and "--max-run-s 3" in err[0]
    saved = orjson.loads((tmp_path / "conform.json").read_bytes())
    # The rules judged before the one it was cut short in, in order; none after.
    cut_at = CHECK_NAMES.index(saved["incomplete"]["phase"])
    assert [c["name"] for c in saved["checks"]] == list(CHECK_NAMES[:cut_at]) and cut_at > 0
    assert f"in the {CHECK_NAMES[cut_at]} phase" in err[0]
    assert not (tmp_path / "junit.xml").exists()


def test_prop_against_a_stalling_target_is_cut_short_not_shrunk(tmp_path, capsys):
    with HostileTarget(_displays("stall")) as target:
        code, err, took_s = _run(capsys, "prop", "--target", target.url, "--timeout-s", "0.5",
                                 "--examples", "50", "--max-run-s", "3",
                                 "--report-dir", str(tmp_path))
    assert code == 2 and took_s < 3 + 3 * 0.5 + 3, took_s
    assert err[-1].startswith("limit-harness: error: prop cut short in the search phase"), err
    assert "--max-run-s 3" in err[-1] and not any("Traceback" in line for line in err)


def test_a_load_test_past_its_bound_is_killed_and_says_so(tmp_path, capsys):
    if importlib.util.find_spec("locust") is None:  # not imported here: it patches the process
        pytest.skip("locust is not installed (the [load] extra)")
    code, err, took_s = _run(capsys, "load", "--duration", "60s", "--users", "2",
                             "--max-run-s", "8", "--report-dir", str(tmp_path))
    assert code == 2 and took_s < 8 + 5, took_s
    assert len(err) == 1 and "load cut short in the locust phase" in err[0], err
    assert "locust.log" in err[0] and not (tmp_path / "report.json").exists()


def test_check_is_bounded_too(tmp_path, capsys):
    assert cli.main(["run", "--seed", "4", "--ops", "2000", "--accounts", "4", "--quiet",
                     "--report-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    code = cli.main(["check", str(tmp_path / "run" / "history.jsonl"),
                     str(tmp_path / "run" / "ledger.jsonl"), "--max-run-s", "0.001",
                     "--report-dir", str(tmp_path / "again")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "check cut short in the" in err[0], err
    assert not (tmp_path / "again" / "report.json").exists()


STALLED_USER_TEST = '''
def test_reads_a_display_that_never_answers(limit_recorder, limit_ids):
    account = limit_ids.account("huabei")
    limit_recorder.write(1, "open", account, {
        "account_id": account, "product": "huabei", "credit_line": 1000,
        "request_id": limit_ids.request()})
    for _ in range(1000):
        limit_recorder.display(1, account)
'''


def test_the_pytest_plugin_fails_a_test_past_its_bound_in_one_line(pytester):
    pytester.makepyfile(test_user=STALLED_USER_TEST)
    with HostileTarget(_displays("stall")) as target:
        result = pytester.runpytest_subprocess("--limit-target", target.url, "--limit-timeout-s",
                                               "0.5", "--limit-max-run-s", "2", "-p",
                                               "no:cacheprovider", "--durations=0",
                                               "--durations-min=0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test cut short in the body phase after * s: it ran past "
                                 "--limit-max-run-s 2*GET /v1/accounts/*"])
    out = result.stdout.str()
    assert "Traceback" not in out and "During handling" not in out, out
    took_s = float(re.search(r"([0-9.]+)s call ", out).group(1))  # the test's own time
    assert took_s < 2 + 3 * 0.5 + 1, took_s


# -- an endless body, in a child process: time and memory ---------------------------------------

def _endless_ledger_pages(method, path, query):
    # The ledger's pages never end (the head search's one-entry probes still answer).
    return "endless" if path == "/v1/ledger" and query.get("limit") != "1" else None


def _endless_displays(method, path, query):
    return "endless" if path.endswith("/display") else None


_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


@pytest.mark.parametrize("rule, code, says", [
    (_endless_ledger_pages, 2, "GET /v1/ledger failed (contract: the answer is over"),
    (_endless_displays, 1, None),  # every display cut off and judged; the run reaches a verdict
])
def test_endless_answers_end_the_run_within_10_s_under_300_mib(tmp_path, rule, code, says):
    with HostileTarget(rule) as target:
        argv = [sys.executable, "-m", "harness.cli", "run", "--target", target.url,
                "--duration", "1", "--report-dir", str(tmp_path), "--timeout-s", "2",
                "--accounts", "2", "--workers", "2", "--faults", "none", "--quiet"]
        # Linux counts in a child's ru_maxrss the memory of the process it was forked from,
        # until its exec: a big pytest process would be measured, not the run. So a small
        # launcher starts the run and reports the run's own peak.
        child = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(
                                   Path(__file__).resolve().parent.parent)}, timeout=60)
        ended_s = time.monotonic()
        err = child.stderr.decode()
        started_s = target.misbehaved_at_s.get("endless")
    exit_status, maxrss_kib = map(int, child.stdout.split())
    assert started_s is not None and exit_status == code, err
    assert ended_s - started_s < 10, ended_s - started_s
    assert maxrss_kib / 1024 < 300, maxrss_kib / 1024  # KiB on Linux
    assert "Traceback" not in err and (says is None or err.count("\n") == 1 and says in err), err
