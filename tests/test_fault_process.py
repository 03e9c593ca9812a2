"""ManagedProcess and ProcessProvider against real children: a tiny HTTP server killed, restarted,
stopped and continued, and processes that never become ready."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import harness.faults.process as process_module
from harness.errors import TargetError
from harness.faults import FaultRefused
from harness.faults.process import ManagedProcess, ProcessProvider
from child_server import SERVER, answers, gone

SERVER_CMD = [sys.executable, "-c", SERVER, "{port}"]
PAUSED_READ_S = 0.5








def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def server():
    with ManagedProcess("api", SERVER_CMD, health_url="/", start_timeout_s=10) as process:
        yield process


@pytest.mark.timeout(30)
def test_crash_restart_answers_again_on_the_same_port(server):
    provider = ProcessProvider({"api": server})
    pid_before, port_before = server.pid, server.port
    assert answers(server.url)

    done = provider.inject({"kind": "crash_restart"})

    assert done == {"fault_id": done["fault_id"], "kind": "crash_restart", "process": "api",
                    "provider": "process"}
    assert server.pid != pid_before and gone(pid_before)
    assert server.port == port_before and server.url.endswith(f":{port_before}")
    assert answers(server.url)
    assert provider.active() == []  # one shot: never listed active


@pytest.mark.timeout(30)
def test_pause_makes_requests_time_out_until_removed(server):
    provider = ProcessProvider({"api": server})

    done = provider.inject({"kind": "process_pause"})
    assert state(server.pid) == "T"
    assert not answers(server.url, timeout_s=PAUSED_READ_S)
    assert [fault["fault_id"] for fault in provider.active()] == [done["fault_id"]]

    provider.remove(done["fault_id"])
    assert answers(server.url)
    assert provider.active() == []


@pytest.mark.timeout(30)
def test_overlapping_pauses_resume_only_when_the_last_is_removed(server):
    provider = ProcessProvider({"projector": server}, {"pause_sync": "projector"},
                               actions={"pause_sync": "pause"})
    first = provider.inject({"kind": "pause_sync"})
    second = provider.inject({"kind": "pause_sync"})

    provider.remove(first["fault_id"])
    assert state(server.pid) == "T"
    provider.remove(second["fault_id"])
    assert state(server.pid) != "T" and answers(server.url)


@pytest.mark.timeout(30)
def test_restart_of_a_paused_process_keeps_it_paused_and_clear_resumes(server):
    provider = ProcessProvider({"api": server})
    provider.inject({"kind": "process_pause"})
    provider.inject({"kind": "crash_restart"})

    assert state(server.pid) == "T"
    provider.clear()
    assert answers(server.url)


@pytest.mark.timeout(30)
def test_refusals_are_one_line(server):
    provider = ProcessProvider({"api": server})
    with pytest.raises(FaultRefused, match="does not carry out 'delay_sync'") as unknown_kind:
        provider.inject({"kind": "delay_sync", "delay_ms": 100})
    with pytest.raises(FaultRefused, match="no managed process named 'db'") as unknown_process:
        provider.inject({"kind": "process_pause", "process": "db"})
    server.kill()
    with pytest.raises(FaultRefused, match="process api is not running") as dead:
        provider.inject({"kind": "crash_restart"})
    for refusal in (unknown_kind, unknown_process, dead):
        assert "\n" not in str(refusal.value)


@pytest.mark.timeout(30)
def test_readiness_timeout_is_one_line_with_the_log_tail_and_kills_the_child(tmp_path):
    pid_file = tmp_path / "pid"
    cmd = ["sh", "-c", f'echo $$ > {pid_file}; echo "still booting" >&2; exec sleep 60']
    started_s = time.monotonic()

    with pytest.raises(TargetError) as raised:
        ManagedProcess("slow", cmd, port=process_module.free_port(), start_timeout_s=1,
                       log_dir=tmp_path)

    assert time.monotonic() - started_s < 5
    message = str(raised.value)
    assert "\n" not in message
    assert "process slow was not ready within 1 s" in message and "still booting" in message
    assert gone(int(pid_file.read_text()))


@pytest.mark.timeout(30)
def test_a_child_that_exits_early_is_reported_with_its_exit_code(tmp_path):
    with pytest.raises(TargetError, match="process broken exited with code 3 before it was "
                                          "ready.*no such config") as raised:
        ManagedProcess("broken", "sh -c 'echo no such config; exit 3' {port}",
                       start_timeout_s=10, log_dir=tmp_path)
    assert "\n" not in str(raised.value)


@pytest.mark.timeout(30)
def test_stop_leaves_no_process_of_the_group_behind(tmp_path):
    child_file = tmp_path / "child"
    cmd = f"sh -c 'sleep 60 & echo $! > {child_file}; exec \"$0\" -c \"$1\" \"$2\"' " \
          f"{sys.executable} '{SERVER}' {{port}}"
    process = ManagedProcess("api", cmd, health_url="/", start_timeout_s=10)
    pid, child_pid = process.pid, int(child_file.read_text())
    log_dir = process.log.path.parent
    assert answers(process.url) and not gone(child_pid)

    code = process.stop()

    assert code is not None and not process.alive
    assert gone(pid) and gone(child_pid)
    assert not log_dir.exists()


@pytest.mark.timeout(30)
def test_stop_of_a_paused_process_is_bounded(server):
    server.pause()
    started_s = time.monotonic()
    server.stop()
    assert gone(server.pid)
    assert time.monotonic() - started_s < process_module.STOP_TIMEOUT_S


@pytest.mark.timeout(30)
def test_the_log_file_is_rotated_at_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "LOG_MAX_BYTES", 10_000)
    cmd = [sys.executable, "-c", "import sys, time\nfor i in range(2000): print('x' * 50)\n"
           "sys.stdout.flush(); time.sleep(60)"]
    process = ManagedProcess("chatty", cmd, log_dir=tmp_path)
    try:
        deadline_s = time.monotonic() + 10
        while time.monotonic() < deadline_s and not (tmp_path / "chatty.log.1").exists():
            time.sleep(0.05)
        time.sleep(0.2)  # let the drain catch up with the last lines
        assert (tmp_path / "chatty.log.1").exists()
        assert all(path.stat().st_size <= 10_000 for path in tmp_path.iterdir())
    finally:
        process.stop()
    assert (tmp_path / "chatty.log").exists()  # a log dir the caller named is kept


@pytest.mark.timeout(30)
def test_close_stops_owned_processes():
    process = ManagedProcess("api", SERVER_CMD, health_url="/", start_timeout_s=10)
    provider = ProcessProvider({"api": process}, own=True)
    provider.inject({"kind": "process_pause"})
    provider.close()
    assert gone(process.pid)


def test_the_harness_own_command_runs_from_its_installation_when_not_on_path(monkeypatch):
    # The shipped deployment file starts `limit-harness serve ...`; in a virtual environment
    # that is not activated, that name is not on PATH, yet the harness running it is installed.
    from harness.faults.process import ManagedProcess

    monkeypatch.setenv("PATH", "/nonexistent")
    process = ManagedProcess("api", "limit-harness serve --port {port}")
    try:
        assert process.argv[:3] == [sys.executable, "-m", "harness.cli"]
        assert process.argv[3:5] == ["serve", "--port"]
        assert process.alive
    finally:
        process.stop()
    with pytest.raises(Exception, match="my-service"):
        ManagedProcess("api", "my-service --port {port}")  # only our own command is resolved
