"""`limit-harness serve` as a user runs it: options, exit codes, signals, a ledger that survives a
restart, and one-line errors for what cannot work."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from harness.service import process
from harness.service.bugs import CATALOGUE

pytestmark = pytest.mark.http

RUN_WAIT_S = 10.0


def run_serve(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "serve", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_WAIT_S, stdin=subprocess.DEVNULL)


def assert_one_line_failure(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("limit-harness: error: ")
    for word in words:
        assert word in lines[0]
    assert "serving on" not in done.stdout


def test_list_bugs_prints_every_catalogue_name(tmp_path):
    done = run_serve("--list-bugs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.strip().splitlines()]
    assert names == list(CATALOGUE)
    assert not list(tmp_path.iterdir()), "listing bugs must not create a ledger"


def test_port_0_prints_a_url_on_a_real_port_that_answers(start_service, tmp_path):
    ledger = tmp_path / "l.sqlite"
    served = start_service("--ledger", f"sqlite:///{ledger}")
    assert served.banner == (f"limit-harness serving on {served.url} "
                             f"(ledger sqlite:///{ledger}, bugs: none)")
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) <= 65535
    assert served.api.get("/v1/health") == (200, {"status": "ok"})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_cleanly_with_exit_0(start_service, sig):
    served = start_service()
    served.api.get("/v1/health")  # leaves an idle keep-alive connection open
    start_s = time.monotonic()
    assert served.stop(sig) == 0, served.stderr()
    assert time.monotonic() - start_s < 5.0
    assert "Traceback" not in served.stderr()


def test_bug_flags_are_switched_on_and_announced(start_service):
    served = start_service("--bug", "exact_available_rejected", "--bug", "no_cure")
    assert served.banner.endswith("bugs: exact_available_rejected, no_cure)")
    api = served.api
    assert api.post("/v1/accounts", {"account_id": "a", "product": "huabei", "credit_line": 10,
                                     "request_id": "o"})[0] == 201
    status, body = api.post("/v1/accounts/a/draws", {"amount": 10, "request_id": "d"})
    assert (status, body["error"]) == (409, "insufficient_limit"), "the seeded bug is on"


def test_a_sqlite_ledger_survives_a_restart(start_service, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'kept.sqlite'}"
    first = start_service("--ledger", ledger)
    api = first.api
    opened = api.post("/v1/accounts", {"account_id": "keep", "product": "jiebei",
                                       "credit_line": 1_000, "request_id": "open-keep"})
    drawn = api.post("/v1/accounts/keep/draws", {"amount": 300, "request_id": "draw-keep"})
    refused = api.post("/v1/accounts/keep/draws", {"amount": 5_000, "request_id": "too-much"})
    assert (opened[0], drawn[0], refused[0]) == (201, 201, 409)
    entries = api.get("/v1/ledger")[1]["entries"]
    assert first.stop() == 0, first.stderr()

    second = start_service("--ledger", ledger)
    api = second.api
    assert api.get("/v1/ledger")[1]["entries"] == entries
    assert api.post("/v1/accounts/keep/draws", {"amount": 300, "request_id": "draw-keep"}) == drawn
    assert api.post("/v1/accounts/keep/draws",
                    {"amount": 5_000, "request_id": "too-much"}) == refused
    assert api.get("/v1/ledger")[1]["entries"] == entries, "a replay wrote a second entry"
    expected = {"account_id": "keep", "credit_line": 1_000, "outstanding": 300, "available": 700,
                "status": "active", "usable": True, "as_of_seq": drawn[1]["seq"]}
    deadline_s = time.monotonic() + 3.0
    while api.get("/v1/accounts/keep/display") != (200, expected):
        assert time.monotonic() < deadline_s, "the display was not rebuilt after the restart"
        time.sleep(0.01)
    status, body = api.post("/v1/accounts/keep/draws", {"amount": 1, "request_id": "later"})
    assert status == 201 and body["seq"] > drawn[1]["seq"]


def test_an_unknown_bug_exits_2_with_one_line(tmp_path):
    done = run_serve("--port", "0", "--bug", "no_such", "--ledger",
                     f"sqlite:///{tmp_path / 'l.sqlite'}", cwd=tmp_path)
    assert_one_line_failure(done, "no_such")
    assert not (tmp_path / "l.sqlite").exists(), "an unusable command must not create a ledger"


def test_a_port_in_use_exits_2_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_serve("--port", str(port), "--ledger", "memory://", cwd=tmp_path)
    assert_one_line_failure(done, str(port))


def test_a_host_that_is_not_ours_exits_2_with_one_line(tmp_path):
    # 192.0.2.1 is TEST-NET-1: never assigned to this machine, so bind fails without any traffic.
    done = run_serve("--host", "192.0.2.1", "--port", "0", "--ledger", "memory://", cwd=tmp_path)
    assert_one_line_failure(done, "192.0.2.1")


@pytest.mark.parametrize("ledger", ["postgres://nowhere", "sqlite:///no/such/dir/l.sqlite"])
def test_an_unusable_ledger_exits_2_with_one_line(tmp_path, ledger):
    done = run_serve("--port", "0", "--ledger", ledger, cwd=tmp_path)
    assert_one_line_failure(done, "ledger")


def test_spawn_reports_a_serve_that_exits_before_printing_its_url(tmp_path):
    with pytest.raises(RuntimeError, match="serve exited with 2 before its URL"):
        process.spawn(tmp_path, "--ledger", "nowhere://")


def test_spawn_gives_up_on_a_silent_process(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "command", lambda *args: [sys.executable, "-c",
                                                           "import time; time.sleep(30)"])
    with pytest.raises(TimeoutError, match="printed no line within 0.5 s"):
        process.spawn(tmp_path, wait_s=0.5)
