"""The load test: locust drives the reference service, every request is recorded, the chunks of
every worker merge into one history, and the same checkers and gate as `run` judge it.

The merge and the policy's `[load]` bounds are tested in this process; everything that runs
locust runs it as a subprocess (locust monkey-patches the process that imports it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import EXIT_FAIL, EXIT_PASS, HarnessError, TargetError, UsageError
from harness.history import History
from harness import gate
from harness.load import (CHUNK_OPS_MAX, PROCESS_STRIDE, Collector, LoadClock, _worker_stats,
                          LoadConfig, OpLog, WorkerLog,
                          locustfile_path, merge, parse_duration_s, recover_unshipped_writes,
                          run_load)
from harness.service import process

LOAD_S = 6.0  # each locust run: long enough for faults, retries and bursts, short for CI
LOCUST_WAIT_S = 120


# -- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1h30m", 5400),
                                           ("1m30s", 90), ("45", 45), ("2.5s", 2.5)])
def test_parse_duration_s_reads_seconds_minutes_and_hours(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5", "ten", "30x", "inf", "1m-2s", "nan"])
def test_parse_duration_s_refuses_anything_else_in_one_line(text):
    with pytest.raises(UsageError) as caught:
        parse_duration_s(text)
    assert "\n" not in str(caught.value)


# -- chunks and the merge ------------------------------------------------------------------------

class FakeClock(LoadClock):
    """Epoch milliseconds that move only when told to."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(0)
        self.t_ms = now_ms

    def now_ms(self) -> int:
        return self.t_ms


def _write(oplog: OpLog, clock: FakeClock, process: int, request_id: str, *, at_ms: int,
           answer_ms: int | None, retry_of: int | None = None):
    clock.t_ms = at_ms
    op = oplog.invoke(process, "draw", f"{oplog.tag}-a{process}",
                      {"amount": 1, "request_id": request_id}, retry_of)
    if answer_ms is not None:
        clock.t_ms = answer_ms
        oplog.complete(op, "ok", 201, {"seq": op.index + 1, "entry_id": "e"}, None)
    return op


def _master() -> History:
    history = History(meta={"mode": "load"})
    history.phase("setup", 0)
    history.phase("safety", 0)
    return history


def test_two_workers_merge_in_invocation_order_with_unique_processes_and_retries_kept():
    origin_ms = 1_000_000
    clocks = [FakeClock(origin_ms), FakeClock(origin_ms)]
    logs = [OpLog("run-1", tag, clock, {"pid": pid, "host": "h", "index": n})
            for n, (tag, clock, pid) in enumerate(zip(("ldA", "ldB"), clocks, (11, 12)))]
    collector = Collector("run-1", origin_ms)
    a0 = _write(logs[0], clocks[0], 1, "A-1", at_ms=origin_ms + 10, answer_ms=origin_ms + 30)
    _write(logs[1], clocks[1], 1, "B-1", at_ms=origin_ms + 20, answer_ms=origin_ms + 25)
    in_flight = _write(logs[0], clocks[0], 2, "A-2", at_ms=origin_ms + 40, answer_ms=None)
    for n, oplog in enumerate(logs):  # A-2 is shipped before its answer arrives
        for chunk in oplog.chunks(final=False):
            collector.receive(f"w{n}", chunk)
    _write(logs[1], clocks[1], 1, "B-2", at_ms=origin_ms + 45, answer_ms=origin_ms + 46)
    _write(logs[0], clocks[0], 1, "A-1", at_ms=origin_ms + 50, answer_ms=origin_ms + 60,
           retry_of=a0.index)
    clocks[0].t_ms = origin_ms + 70
    logs[0].complete(in_flight, "fail", 409, {"error": "insufficient_limit"}, None)
    for n, oplog in enumerate(logs):
        for chunk in oplog.chunks(final=True):
            collector.receive(f"w{n}", chunk)

    merged = merge(_master(), list(collector.logs.values()), end_ms=100)

    assert [op.index for op in merged.ops] == list(range(len(merged.ops)))
    assert [op.invoke_ms for op in merged.ops] == sorted(op.invoke_ms for op in merged.ops)
    writes = [op for op in merged.ops if op.f == "draw"]
    assert [op.request_id for op in writes] == ["A-1", "B-1", "A-2", "B-2", "A-1"]
    assert {op.process // PROCESS_STRIDE for op in writes} == {1, 2}
    assert writes[0].process != writes[1].process  # both were process 1 on their worker
    retry = writes[4]
    assert merged.ops[retry.retry_of] is writes[0], "retry_of points at the same op as before"
    assert (writes[2].outcome, writes[2].http_status, writes[2].complete_ms) == ("fail", 409, 70)
    assert all(op.outcome in ("ok", "fail", "info") for op in merged.ops)
    History.loads(merged.dumps())  # a valid history file: `check` can judge it again


def test_chunks_are_bounded_and_an_op_still_in_flight_when_a_worker_vanishes_is_info():
    origin_ms, clock = 5_000, FakeClock(5_000)
    oplog = OpLog("run-2", "ldC", clock, {"pid": 7, "host": "h", "index": 0})
    for n in range(CHUNK_OPS_MAX + 5):
        _write(oplog, clock, 1, f"C-{n}", at_ms=origin_ms + n, answer_ms=origin_ms + n)
    lost = _write(oplog, clock, 2, "C-lost", at_ms=origin_ms + 9_000, answer_ms=None)
    chunks = oplog.chunks(final=False)
    assert [len(c["ops"]) for c in chunks] == [CHUNK_OPS_MAX, 6]
    collector = Collector("run-2", origin_ms)
    for chunk in chunks:
        collector.receive("w0", chunk)
    collector.receive("w0", {"run": "an earlier test", "seq": 2, "ops": [], "done": []})
    assert collector.stale_chunks == 1

    (log,) = collector.logs.values()
    assert not log.final and log.problems == []
    merged = merge(_master(), [log], end_ms=12_000)
    op = merged.ops[-1]
    assert op.request_id == lost.request_id
    assert (op.outcome, op.complete_ms) == ("info", 12_000)
    assert "vanished" in op.error


def test_a_vanished_workers_writes_after_its_last_chunk_are_recovered_as_unknown():
    origin_ms, clock = 0, FakeClock(100)
    oplog = OpLog("run-3", "ldD", clock, {"pid": 9, "host": "h", "index": 1})
    _write(oplog, clock, 1, "D-1", at_ms=100, answer_ms=110)
    collector = Collector("run-3", origin_ms)
    for chunk in oplog.chunks(final=False):
        collector.receive("w1", chunk)
    (log,) = collector.logs.values()
    account = "ldD-a1"
    ledger = [{"seq": 1, "request_id": "D-1", "account_id": account, "type": "draw", "amount": 1},
              {"seq": 2, "request_id": "D-2", "account_id": account, "type": "repay",
               "amount": 5},
              {"seq": 3, "request_id": "D-2:cure", "account_id": account, "type": "status",
               "status": "active", "reason": "cured"},
              {"seq": 4, "request_id": "X-1", "account_id": "someone-else", "type": "draw",
               "amount": 3}]
    known = {"D-1"}
    assert recover_unshipped_writes(log, ledger, known, end_ms=900) == 1
    merged = merge(_master(), [log], end_ms=900)
    recovered = merged.ops[-1]
    assert (recovered.f, recovered.request, recovered.outcome) == \
        ("repay", {"amount": 5, "request_id": "D-2"}, "info")
    assert recovered.invoke_ms >= 100 and recovered.complete_ms == 900


# -- the policy's [load] table (judged by the gate) ----------------------------------------------

def test_a_policy_load_table_bounds_latency_and_failures_and_the_rest_is_the_gates(tmp_path):
    path = tmp_path / "gate-ci.toml"
    path.write_text('fail_on_severity = ["critical"]\nallow_kinds = ["stale_display"]\n'
                    '[max_findings]\nmajor = 2\n'
                    '[load]\nlatency_ms_p95_max = 50\nlatency_ms_p99_max = 200\n'
                    'failure_ratio_max = 0.01\n')
    policy = gate.load_policy(str(path))
    assert (policy.name, policy.fail_on_severity, policy.max_findings) == \
        ("ci", ["critical"], {"major": 2})
    assert policy.load == {"latency_ms_p95_max": 50, "latency_ms_p99_max": 200,
                           "failure_ratio_max": 0.01}
    stats = {"load": {"latency_ms": {"p95": 80, "p99": 150}, "failure_ratio": 0.02}}
    reasons = gate.judge({"findings": [], "stats": stats}, policy).reasons
    assert len(reasons) == 2
    assert "latency p95 80 ms exceeds latency_ms_p95_max = 50 ms" in reasons
    missing = gate.judge({"findings": [], "stats": {}},
                         gate.Policy(load={"latency_ms_p99_max": 1})).reasons
    assert missing[0].startswith("latency p99 is missing")


def test_load_reasons_fail_a_passing_report_and_name_a_vanished_worker():
    log = WorkerLog("vm_1", slot=2, about={"pid": 4242, "host": "vm", "index": 1}, cut_ms=1500)
    stats = {"load": {"failure_ratio": 0.5, "workers": [_worker_stats(log)]}}
    result = gate.judge({"findings": [], "stats": stats},
                        gate.Policy(load={"failure_ratio_max": 0.1}))
    assert not result.passed
    assert "worker 1 (vm pid 4242) vanished (last heard at t=1500 ms)" in result.reasons[0]
    assert "failure ratio 50.00% exceeds failure_ratio_max = 10.00%" in result.reasons
    again = gate.judge({"findings": [], "stats": stats}, gate.Policy())
    assert not again.passed, "a vanished worker fails even a policy without [load]"


def test_a_bad_load_table_is_one_line_naming_the_policy_file(tmp_path):
    path = tmp_path / "gate-bad.toml"
    path.write_text("[load]\nlatency_ms_p50_max = 3\n")
    with pytest.raises(UsageError, match=r"gate-bad.toml: 'load' has 'latency_ms_p50_max'"):
        gate.load_policy(str(path))
    path.write_text("bogus = 1\n[load]\nfailure_ratio_max = 0.5\n")
    with pytest.raises(UsageError, match=str(path)):
        gate.load_policy(str(path))


def test_the_locustfile_is_found_and_a_target_that_does_not_answer_cannot_be_judged(tmp_path):
    assert locustfile_path().name == "locustfile.py"
    with pytest.raises(TargetError):
        run_load(LoadConfig(target="http://127.0.0.1:9", duration_s=1, report_dir=tmp_path))
    with pytest.raises(UsageError):
        LoadConfig(users=0)


# -- locust against the reference service ---------------------------------------------------------

def _report(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


def _history(report_dir: Path) -> History:
    return History.loads((report_dir / "history.jsonl").read_bytes())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One load test with `--processes 2` against a correct reference service that `run_load`
    starts itself: the tests below read its reports."""
    report_dir = tmp_path_factory.mktemp("load") / "report"
    result = run_load(LoadConfig(users=16, spawn_rate=16, duration_s=LOAD_S, processes=2,
                                 report_dir=report_dir, seed=3))
    return result


@pytest.mark.http
def test_a_correct_service_passes_with_two_processes_and_every_report_is_written(two_processes):
    result = two_processes
    assert result.exit_code == EXIT_PASS, result.report["gate"]
    assert result.report["verdict"] == "pass" and result.report["mode"] == "load"
    for name in ("report.json", "junit.xml", "summary.md", "report.html", "history.jsonl",
                 "ledger.jsonl"):
        assert (result.report_dir / name).stat().st_size > 0, name
    load = result.report["stats"]["load"]
    assert load["requests"] > 0 and load["requests_per_s"] > 0
    assert {"p50", "p95", "p99"} <= set(load["latency_ms"])
    assert [w["status"] for w in load["workers"]] == ["finished", "finished"]
    assert result.report["stats"]["faults_injected"], "the nemesis ran during the load"


@pytest.mark.http
def test_two_workers_histories_merge_into_one(two_processes):
    history = _history(two_processes.report_dir)  # loads() checks indexes 0..n-1 in order
    ops = history.ops
    assert [op.invoke_ms for op in ops] == sorted(op.invoke_ms for op in ops)
    user_ops = [op for op in ops if op.process != 0]
    assert {op.process // PROCESS_STRIDE for op in user_ops} == {1, 2}, "both workers' ranges"
    accounts_by_worker: dict[int, set[str]] = {}
    for op in user_ops:
        accounts_by_worker.setdefault(op.process // PROCESS_STRIDE, set()).add(op.account_id)
    assert not accounts_by_worker[1] & accounts_by_worker[2], "ids are unique per worker"
    retries = [op for op in ops if op.retry_of is not None]
    assert retries, "users retry, some while the original is still in flight"
    for op in retries:
        original = ops[op.retry_of]
        assert original.index < op.index and original.request_id == op.request_id
        assert original.process // PROCESS_STRIDE == op.process // PROCESS_STRIDE
    in_flight = [op for op in retries if ops[op.retry_of].complete_ms > op.invoke_ms]
    assert in_flight, "a retry sent before the original was answered"


@pytest.mark.http
def test_the_nemesis_probes_the_accounts_the_workers_users_wrote(two_processes):
    """After resets and through calms the master reads the displays of the accounts written
    last; its own history has only the nemesis's ops, so they come from the workers' chunks."""
    ops = _history(two_processes.report_dir).ops
    converging = next(op.index for op in ops
                      if op.f == "phase" and op.request["name"] == "convergence")
    ops = ops[:converging]  # after it, process 0 reads every display to converge
    probes = [op for op in ops if op.process == 0 and op.f == "display"]
    assert probes, "the master probed no display during the load"
    written_before = set()
    for op in ops:  # in invocation order
        if op.process == 0 and op.f == "display":
            assert op.account_id in written_before, "a probe read an account nobody wrote"
        elif op.is_write and op.process != 0:
            written_before.add(op.account_id)


@pytest.mark.http
def test_business_answers_count_as_locust_successes(two_processes):
    history = _history(two_processes.report_dir)
    business = [op for op in history.ops if op.outcome == "fail" and op.http_status in
                (409, 422, 423, 503)]
    assert business, "the personas aim at the edges: some answers are refusals"
    load = two_processes.report["stats"]["load"]
    assert load["failures"] == 0, load["by_name"]


@pytest.mark.http
def test_a_service_that_duplicates_retried_draws_fails_the_gate(tmp_path):
    served = process.spawn(tmp_path, "--ledger", "memory://", "--bug", "retry_duplicates_draw")
    try:
        result = run_load(LoadConfig(target=served.url, users=12, spawn_rate=12,
                                     duration_s=LOAD_S, report_dir=tmp_path / "report", seed=5))
    finally:
        served.stop()
    assert result.exit_code == EXIT_FAIL
    assert "duplicate_write" in {f["kind"] for f in result.report["findings"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _locust(*args: str, log: Path, env: dict) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(locustfile_path()),
                                 *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)


def _wait_for(path: Path, text: str, wait_s: float) -> None:
    deadline_s = time.monotonic() + wait_s
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"{text!r} not in {path} within {wait_s} s")
        time.sleep(0.1)


@pytest.mark.http
def test_a_worker_killed_mid_test_is_reported_never_a_silent_pass(tmp_path):
    served = process.spawn(tmp_path, "--ledger", "memory://")
    port, report_dir = str(_free_port()), tmp_path / "report"
    env = {**os.environ, "LIMIT_REPORT_DIR": str(report_dir), "LIMIT_SEED": "8"}
    started: list[subprocess.Popen] = []
    try:
        master = _locust("--master", "--headless", "--only-summary", "-u", "12", "-r", "12",
                         "-t", "8s", "--host", served.url, "--expect-workers", "2",
                         "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                         log=tmp_path / "master.log", env=env)
        started.append(master)
        workers = [_locust("--worker", "--master-host", "127.0.0.1", "--master-port", port,
                           log=tmp_path / f"worker{n}.log", env=env) for n in range(2)]
        started.extend(workers)
        _wait_for(tmp_path / "master.log", "All users spawned", LOCUST_WAIT_S)
        time.sleep(2.5)  # some chunks shipped, then the worker dies with writes in flight
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        code = master.wait(LOCUST_WAIT_S)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        served.stop()
    log = (tmp_path / "master.log").read_text(errors="replace")
    assert code == EXIT_FAIL, log[-3000:]
    report = _report(report_dir)
    assert report["verdict"] == "fail"
    vanished = [r for r in report["gate"]["reasons"] if "vanished" in r]
    assert len(vanished) == 1 and f"pid {victim.pid}" in vanished[0], report["gate"]
    workers_seen = report["stats"]["load"]["workers"]
    assert sorted(w["status"] for w in workers_seen) == ["finished", "vanished"]
    gone = next(w for w in workers_seen if w["status"] == "vanished")
    assert gone["ops"] > 0, "its ops up to the last chunk are judged"
    assert not [f for f in report["findings"] if f["kind"] in ("phantom_write", "lost_write")]


def test_load_config_keeps_header_names_never_values_and_replays_without_them():
    config = LoadConfig(target="http://127.0.0.1:1", headers={"Authorization": "Bearer s3cr3t-tok",
                                                              "X-Api-Key": "$LOAD_TEST_KEY"})
    words = " ".join(config.replay_argv()) + json.dumps(config.to_dict())
    assert "s3cr3t-tok" not in words
    assert "X-Api-Key: $LOAD_TEST_KEY" in words and "Authorization" in words
    with pytest.raises(HarnessError):
        LoadConfig(duration_s=0)


def test_the_load_command_runs_the_reference_service_under_load_and_passes(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "harness.cli", "load", "--users", "4",
                           "--duration", "4s", "--report-dir", "load"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert (tmp_path / "load" / "report.json").is_file() and "PASS" in done.stdout
