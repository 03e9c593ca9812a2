"""Real-world HTTP: a service behind a bearer token and a base path, driven with --header; the
token never reaches a report, a history, a summary or an error line, even when the service
echoes it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from harness.errors import UsageError
from harness.http_options import HttpOptions

pytestmark = pytest.mark.http
TOKEN = "s3cr3t-token-0f9e8d7c"
BASE_PATH = "/api/credit"


class _Gateway(BaseHTTPRequestHandler):
    """Requires `Authorization: Bearer TOKEN`, serves the contract under BASE_PATH, and echoes
    the token back in every display (as a careless gateway might)."""

    backend = ""
    pool = urllib3.PoolManager(retries=False)

    def _forward(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, b'{"error": "unauthorized"}')
        if not self.path.startswith(BASE_PATH + "/"):
            return self._answer(404, b'{"error": "not_found"}')
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        reply = self.pool.request(self.command, self.backend + self.path[len(BASE_PATH):],
                                  body=body, headers={"content-type": "application/json"})
        data = reply.data
        if self.path.endswith("/display") and reply.status == 200:
            data = json.dumps({**json.loads(data), "echo": self.headers["Authorization"]}).encode()
        self._answer(reply.status, data)

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway(start_service):
    served = start_service("--sync-lag-ms", "5")
    handler = type("Gateway", (_Gateway,), {"backend": served.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{BASE_PATH}"
    server.shutdown()


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, timeout=300,
                          capture_output=True, text=True, env={**os.environ, "LIMIT_TOKEN": TOKEN})


def _nothing_leaks(done: subprocess.CompletedProcess, folder: Path) -> None:
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token is in {path}"


def test_run_prop_and_conform_reach_a_service_behind_a_token_and_a_base_path(gateway, tmp_path):
    header = "Authorization: Bearer $LIMIT_TOKEN"
    run = _cli(tmp_path, "run", "--target", gateway, "--duration", "3", "--header", header,
               "--report-dir", "run", "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "--header 'Authorization: Bearer $LIMIT_TOKEN'" in report["replay"]
    assert "<redacted>" in (tmp_path / "run" / "history.jsonl").read_text(), \
        "the echoed token was in the answers, and is redacted from the history"
    prop = _cli(tmp_path, "prop", "--target", gateway, "--examples", "3", "--steps", "10",
                "--header", header)
    assert prop.returncode == 0, prop.stdout + prop.stderr
    conform = _cli(tmp_path, "conform", "--target", gateway, "--header", header,
                   "--report-dir", "conform")
    assert conform.returncode == 0, conform.stdout[-1500:] + conform.stderr
    for done in (run, prop, conform):
        _nothing_leaks(done, tmp_path)


def test_without_the_token_the_target_cannot_be_judged_exit_2(gateway, tmp_path):
    done = _cli(tmp_path, "run", "--target", gateway, "--duration", "2", "--quiet")
    assert done.returncode == 2 and "not reachable or not healthy" in done.stderr


def test_a_typed_in_token_is_redacted_from_the_replay_command_and_every_file(gateway, tmp_path):
    done = _cli(tmp_path, "run", "--target", gateway, "--duration", "2", "--quiet",
                "--header", f"Authorization: Bearer {TOKEN}", "--report-dir", "typed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "--header 'Authorization: <redacted>'" in done.stdout
    _nothing_leaks(done, tmp_path)


@pytest.mark.parametrize("header, words", [
    ("Authorization Bearer x", "takes 'NAME: VALUE'"),
    ("Content-Type: text/plain", "set by the harness itself"),
    ("X-Key: $LIMIT_NOT_SET_ANYWHERE", "is not set in the environment"),
])
def test_bad_headers_are_one_line_usage_errors(header, words):
    with pytest.raises(UsageError, match=words):
        HttpOptions.parse([header]).resolved_headers()


def test_tls_options_that_contradict_each_other_are_refused(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not really a CA")
    with pytest.raises(UsageError, match="contradict"):
        HttpOptions.parse([], ca_bundle=bundle, insecure=True)
    with pytest.raises(UsageError, match="not a readable file"):
        HttpOptions.parse([], ca_bundle=tmp_path / "missing.pem")


pytest_plugins = ["pytester"]


def test_the_pytest_plugin_sends_the_header_too(gateway, pytester, monkeypatch):
    monkeypatch.setenv("LIMIT_TOKEN", TOKEN)
    pytester.makepyfile(test_behind_a_token='''
        def test_open_and_draw(limit_recorder, limit_ids, reconcile):
            account = limit_ids.account()
            op = limit_recorder.write(1, "open", account, {"account_id": account,
                "product": "huabei", "credit_line": 100_000, "request_id": limit_ids.request()})
            assert op.outcome == "ok", op
            limit_recorder.write(1, "draw", account, {"amount": 1_000,
                                                      "request_id": limit_ids.request()})
            reconcile()
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--limit-target", gateway,
                                           "--limit-header", "Authorization: Bearer $LIMIT_TOKEN")
    result.assert_outcomes(passed=1)
    assert TOKEN not in result.stdout.str()


def test_the_load_test_reaches_the_service_behind_the_token_too(gateway, tmp_path):
    done = _cli(tmp_path, "load", "--target", gateway, "--users", "4", "--duration", "4s",
                "--header", "Authorization: Bearer $LIMIT_TOKEN", "--report-dir", "load")
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    _nothing_leaks(done, tmp_path)
