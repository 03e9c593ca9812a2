"""Faults from outside, end to end: `limit-harness run --target-cmd ... --deployment FILE` against
an independent service with no chaos API (tests/outside_service.py: its ledger in a file,
fsynced before each acknowledgement), under crashes, pauses and network faults through a proxy
in front of it. The correct service passes with nothing lost; one that acknowledges before its
write is durable fails with lost_write; one whose idempotency does not survive a restart fails
with duplicate_write once timeouts make clients retry. Also the pieces: chaos routes answered by
providers (`RoutedTarget`), deployment files naming process ports and the target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checker_histories import Story
from harness.analysis import CheckConfig
from harness.checkers import check
from harness.checkers.display import deadline_ms
from harness.client import Recorder
from harness.deployment import (deployment_for, deployment_from_target_cmd, load_deployment)
from harness.errors import EXIT_INTERRUPTED, UsageError
from harness.faults.hooks import Hook, HookProvider
from harness.faults.routing import CHAOS_API, RoutedTarget
from harness.history import FaultWindow, History, delay_of
from harness.targets import Reply

SERVICE = Path(__file__).resolve().parent / "outside_service.py"
RUN_S = "8"


# -- the chaos routes, answered by providers -----------------------------------------------------

class Inner:
    """A target with its own chaos API listing `delay_sync`; it records what reached it."""

    name, simulated = "inner", False

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def request(self, method, path, body=None, query=None) -> Reply:
        self.sent.append((method, path))
        if path == "/v1/chaos":
            return Reply(200, {"supported": ["delay_sync"], "active": []})
        if method == "POST" and path == "/v1/chaos/faults":
            return Reply(201, {"fault_id": "f-1", **body})
        if method == "DELETE":
            return Reply(204, None)
        return Reply(200, {"status": "ok"})

    def now_ms(self) -> int:
        return len(self.sent)

    def wait_ms(self, duration_ms: int) -> None:
        pass

    def counters(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def routed(tmp_path: Path, chaos_api: bool = True) -> tuple[RoutedTarget, Inner, Path]:
    mark = tmp_path / "paused"
    hooks = HookProvider({
        "pause_sync": Hook(f"touch {mark}", f"rm {mark}"),
        "maintenance_reset": Hook("echo wiped >&2; exit 3"),
    })
    inner = Inner()
    return RoutedTarget(inner, {"pause_sync": hooks, "maintenance_reset": hooks},
                        chaos_api=chaos_api), inner, mark


def test_each_kind_goes_to_its_provider_and_the_history_says_which(tmp_path):
    target, inner, mark = routed(tmp_path)
    recorder = Recorder(target, History())
    listing = target.request("GET", "/v1/chaos").body
    assert listing["supported"] == ["delay_sync", "pause_sync", "maintenance_reset"]
    paused = recorder.add_fault(0, {"kind": "pause_sync"})
    assert paused.outcome == "ok" and paused.response["provider"] == "hooks" and mark.exists()
    assert target.request("GET", "/v1/chaos").body["active"] == [
        {"fault_id": paused.response["fault_id"], "kind": "pause_sync", "provider": "hooks"}]
    delayed = recorder.add_fault(0, {"kind": "delay_sync", "delay_ms": 100})
    assert delayed.response == {"fault_id": "f-1", "kind": "delay_sync", "delay_ms": 100,
                                "provider": CHAOS_API}
    assert ("POST", "/v1/chaos/faults") in inner.sent  # only the kind no provider carries out
    assert recorder.remove_fault(0, paused.response["fault_id"]).outcome == "ok"
    assert not mark.exists()
    assert recorder.remove_fault(0, "f-1").outcome == "ok"
    assert ("DELETE", "/v1/chaos/faults/f-1") in inner.sent
    recorder.add_fault(0, {"kind": "pause_sync"})
    assert recorder.remove_fault(0, None).outcome == "ok" and not mark.exists()
    assert ("DELETE", "/v1/chaos/faults") in inner.sent


def test_a_refused_hook_is_a_refused_injection_in_the_history(tmp_path):
    target, _, _ = routed(tmp_path)
    recorder = Recorder(target, History())
    op = recorder.add_fault(0, {"kind": "maintenance_reset", "mode": "clear"})
    assert op.outcome == "fail" and op.http_status == 409
    assert op.response["provider"] == "hooks" and "exited with 3: wiped" in op.error
    assert recorder.history.fault_windows() == []  # never counted as having acted


def test_without_the_chaos_api_unrouted_kinds_are_refused_not_sent(tmp_path):
    target, inner, _ = routed(tmp_path, chaos_api=False)
    assert target.request("GET", "/v1/chaos").body["supported"] == [
        "pause_sync", "maintenance_reset"]
    op = Recorder(target, History()).add_fault(0, {"kind": "delay_sync", "delay_ms": 1})
    assert op.outcome == "fail" and inner.sent == []


# -- what the checkers make of the outside kinds -------------------------------------------------

SLA_MS = 1000


def judged(story: Story) -> list:
    return check(story.history, story.ledger, CheckConfig(sla_ms=SLA_MS)).findings


def crashed_long_after_a_draw(crash: bool) -> Story:
    story = Story()
    story.open("a1", 100_00)
    story.draw("a1", 30_00)
    story.wait(10_000)
    if crash:
        story.fault("crash_restart")
    else:
        story.wait(2)
    return story


def test_a_restarted_service_rebuilding_its_display_is_not_a_finding():
    story = crashed_long_after_a_draw(crash=True)
    story.display("a1", as_of=story.seq_of("a1", 0), invoke_ms=story.now_ms + SLA_MS)
    assert judged(story) == []
    [window] = story.history.fault_windows()  # one shot: over once the restart was answered
    assert window.kind == "crash_restart" and window.end_ms is not None


def test_the_same_old_display_without_a_restart_is_stale():
    story = crashed_long_after_a_draw(crash=False)
    story.display("a1", as_of=story.seq_of("a1", 0), invoke_ms=story.now_ms + SLA_MS)
    assert [f.kind for f in judged(story)] == ["stale_display"]


def test_a_restarted_display_still_old_past_its_allowance_is_stale():
    story = crashed_long_after_a_draw(crash=True)
    story.display("a1", as_of=story.seq_of("a1", 0), invoke_ms=story.now_ms + SLA_MS + 1)
    assert [f.kind for f in judged(story)] == ["stale_display"]


def test_network_latency_holds_events_back_by_its_latency_and_jitter():
    latency = FaultWindow("n1", "network_latency", {"latency_ms": 300, "jitter_ms": 50}, 0, 10)
    assert delay_of(latency) == 350
    assert deadline_ms(5, [latency], CheckConfig(sla_ms=SLA_MS)) == 10 + SLA_MS + 350
    assert delay_of(FaultWindow("p1", "network_partition", {}, 0, 10)) == 0


# -- deployment files that start the target ------------------------------------------------------

FRONT = """
target = "http://127.0.0.1:{{proxies.front.port}}"
chaos_api = false

[proxies.front]
upstream = "127.0.0.1:{{processes.api.port}}"

[faults]
network_latency = {{ proxy = "front" }}
network_partition = {{ proxy = "front" }}
connection_reset = {{ proxy = "front" }}
{extra}
"""


def front(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "front.toml"
    path.write_text(FRONT.format(extra=extra))
    return path


def service_cmd(tmp_path: Path, *bugs: str) -> str:
    return (f"{sys.executable} {SERVICE} --port {{port}} --ledger {tmp_path / 'ledger.jsonl'} "
            + " ".join(bugs))


def test_a_proxy_in_front_of_the_api_the_target_cmd_starts(tmp_path):
    deployment = load_deployment(front(tmp_path), target_cmd=service_cmd(tmp_path))
    assert list(deployment.processes) == ["api"] and not deployment.chaos_api
    assert deployment.proxies["front"].upstream_process == "api"
    assert set(deployment.faults) == {"network_latency", "network_partition", "connection_reset",
                                      "crash_restart", "process_pause"}
    with deployment:
        api, proxy = deployment.running["api"], deployment.listening["front"]
        assert deployment.url == f"http://127.0.0.1:{proxy.port}" != api.url
        assert proxy.upstream_port == api.port
        assert set(deployment.routed()) == set(deployment.faults)
    assert deployment.url is None


@pytest.mark.parametrize("text, problem", [
    ('[processes.api]\ncmd = "x {port}"\n', "processes.api: --target-cmd starts the api process"),
    ('target = "http://127.0.0.1:{processes.db.port}"\n', "target: names process 'db'"),
    ('target = "tcp://127.0.0.1:1"\n', "target: must be an http:// or https:// URL"),
    ('chaos_api = "no"\n', "chaos_api: must be true or false"),
    ('[proxies.front]\nupstream = "127.0.0.1:{processes.worker.port}"\n',
     "proxies.front.upstream: names process 'worker'"),
])
def test_deployment_mistakes_are_one_line_naming_the_key(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_deployment(path, target_cmd="svc --port {port}")
    assert problem in str(caught.value) and str(path) in str(caught.value)


def test_where_the_target_is_is_said_exactly_once(tmp_path):
    with pytest.raises(UsageError, match="starts the target itself; drop --target"):
        deployment_for("http://127.0.0.1:1", "svc --port {port}", None)
    hooks = tmp_path / "hooks.toml"
    hooks.write_text('[faults]\nmaintenance_reset = "true"\n')
    with pytest.raises(UsageError, match="names no target; give --target"):
        deployment_for(None, None, hooks)
    assert deployment_for("http://127.0.0.1:1", None, hooks).faults
    assert deployment_from_target_cmd("svc --port {port}").processes["api"].cmd


# -- whole runs ----------------------------------------------------------------------------------

def run(tmp_path: Path, *args: str, name: str = "report") -> tuple[subprocess.CompletedProcess,
                                                                   dict]:
    report_dir = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--duration", RUN_S, "--timeout-s", "1",
         "--quiet", "--report-dir", str(report_dir), *args],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert (report_dir / "report.json").exists(), done.stdout + done.stderr
    return done, json.loads((report_dir / "report.json").read_text())


def still_running(ledger: Path) -> list[int]:
    """Pids of any service process still serving this ledger."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(ledger).encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in pids if pid != os.getpid()]



@pytest.mark.slow
def test_a_correct_service_passes_crashes_pauses_and_network_faults_with_nothing_lost(tmp_path):
    done, report = run(tmp_path, "--target-cmd", service_cmd(tmp_path),
                       "--deployment", str(front(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["verdict"] == "pass" and report["findings"] == []
    injected = report["stats"]["faults_injected"]
    assert {"crash_restart", "process_pause", "network_partition"} <= set(injected), injected
    effects = report["stats"]["fault_effects"]
    assert set(effects["by_provider"]) == {"process", "network"}
    assert effects["observed"] >= 3 and effects["not_observed"] == 0, effects["faults"]
    ops = report["stats"]["ops"]
    assert ops["draw"].get("info", 0) + ops["repay"].get("info", 0) > 0  # cut by the faults
    assert "fault effects:" in done.stdout and "carried out by network" in done.stdout
    assert "--target-cmd" in report["replay"] and "--deployment" in report["replay"]
    assert still_running(tmp_path / "ledger.jsonl") == []


@pytest.mark.slow
def test_acknowledging_before_the_write_is_durable_is_caught_as_lost_write(tmp_path):
    done, report = run(tmp_path, "--target-cmd", service_cmd(tmp_path, "--ack-before-durable"),
                       "--faults", "crash_restart,process_pause")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "lost_write" in {f["kind"] for f in report["findings"]}
    assert report["stats"]["faults_injected"].get("crash_restart")
    assert still_running(tmp_path / "ledger.jsonl") == []


@pytest.mark.slow
def test_broken_idempotency_is_caught_when_timeouts_make_clients_retry(tmp_path):
    done, report = run(tmp_path, "--target-cmd", service_cmd(tmp_path, "--broken-idempotency"),
                       "--faults", "crash_restart,process_pause")
    assert done.returncode == 1, done.stdout + done.stderr
    kinds = {f["kind"] for f in report["findings"]}
    assert "duplicate_write" in kinds and "lost_write" not in kinds, kinds


@pytest.mark.slow
def test_a_hook_that_does_nothing_is_ineffective_and_a_failing_one_refused(tmp_path):
    extra = ('delay_sync = { inject = "true", remove = "true" }\n'
             'maintenance_reset = { inject = "echo no such database >&2; exit 3" }\n')
    policy = tmp_path / "policy.toml"
    policy.write_text("ineffective_faults_max = 0\ncoverage_required = false\n")
    done, report = run(tmp_path, "--target-cmd", service_cmd(tmp_path), "--deployment",
                       str(front(tmp_path, extra)), "--faults", "delay_sync,maintenance_reset",
                       "--policy", str(policy))
    assert done.returncode == 1, done.stdout + done.stderr
    assert report["findings"] == []  # the service is fine: the faults did nothing
    effects = report["stats"]["fault_effects"]
    delays = [f for f in effects["faults"] if f["kind"] == "delay_sync"]
    assert delays and {f["provider"] for f in delays} == {"hooks"}
    assert "observed" not in {f["effect"] for f in delays}, delays
    assert effects["not_observed"] >= 1
    resets = [f for f in effects["faults"] if f["kind"] == "maintenance_reset"]
    assert resets and {f["effect"] for f in resets} == {"refused"}
    assert "exited with 3: no such database" in resets[0]["why"]
    assert any("had no effect the history shows" in r for r in report["gate"]["reasons"])
    assert "! ineffective: delay_sync" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_stops_the_service_it_started(tmp_path, sig):
    ledger = tmp_path / "ledger.jsonl"
    harness = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--target-cmd", service_cmd(tmp_path),
         "--duration", "60", "--quiet", "--report-dir", str(tmp_path / "report")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline_s = time.monotonic() + 30
        while time.monotonic() < deadline_s and not (ledger.exists() and ledger.stat().st_size):
            time.sleep(0.1)  # the service is up and the accounts are being opened
        assert still_running(ledger), "the service never started"
        time.sleep(1.0)  # into the safety phase: faults on, the nemesis at work
        harness.send_signal(sig)
        _, stderr = harness.communicate(timeout=60)
    finally:
        harness.kill()
    assert harness.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert still_running(ledger) == []


@pytest.mark.slow
def test_the_load_test_carries_out_a_deployments_faults_through_the_harness(tmp_path):
    """locust's master runs in another process: it reaches the providers through the harness."""
    report_dir = tmp_path / "load"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "load", "--target-cmd", service_cmd(tmp_path),
         "--deployment", str(front(tmp_path)), "--faults", "crash_restart,network_partition",
         "--duration", "5s", "--users", "6", "--timeout-s", "1", "--report-dir", str(report_dir)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["stats"]["faults_injected"]) == {"crash_restart", "network_partition"}
    assert set(report["stats"]["fault_effects"]["by_provider"]) == {"process", "network"}
    assert "--deployment" in report["replay"]
    assert still_running(tmp_path / "ledger.jsonl") == []
