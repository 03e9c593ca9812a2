"""HookProvider with real shell commands and a real local HTTP server."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from harness.faults import FaultRefused
from harness.faults.hooks import Hook, HookProvider, HttpCall


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status its path names (/status/503), records what came."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append((self.command, self.path, dict(self.headers),
                                 self.rfile.read(length)))
        path = self.path.split("?")[0]
        status = int(path.split("/")[2]) if path.startswith("/status/") else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_DELETE = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


@pytest.mark.timeout(30)
def test_a_command_hook_gets_params_as_placeholders_and_env(tmp_path):
    out = tmp_path / "out"
    provider = HookProvider({"delay_sync": Hook(
        inject=f'echo "arg={{delay_ms}} env=$LIMIT_FAULT_DELAY_MS kind=$LIMIT_FAULT_KIND" > {out}',
        remove=f"echo removed {{fault_id}} >> {out}")})

    done = provider.inject({"kind": "delay_sync", "delay_ms": 300})

    assert done == {"fault_id": done["fault_id"], "kind": "delay_sync", "delay_ms": 300,
                    "provider": "hooks"}
    assert out.read_text() == "arg=300 env=300 kind=delay_sync\n"
    assert [fault["fault_id"] for fault in provider.active()] == [done["fault_id"]]
    provider.remove(done["fault_id"])
    assert out.read_text().endswith(f"removed {done['fault_id']}\n")
    assert provider.active() == []


@pytest.mark.timeout(30)
def test_a_placeholder_value_is_shell_quoted(tmp_path):
    out = tmp_path / "out"
    provider = HookProvider({"maintenance_reset": Hook(inject=f"printf %s {{mode}} > {out}")})
    provider.inject({"kind": "maintenance_reset", "mode": "clear; touch pwned"})
    assert out.read_text() == "clear; touch pwned"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.timeout(30)
def test_a_one_shot_hook_is_never_listed_active(tmp_path):
    provider = HookProvider({"maintenance_reset": Hook(inject=f"touch {tmp_path / 'reset'}")})
    provider.inject({"kind": "maintenance_reset", "mode": "clear"})
    assert (tmp_path / "reset").exists()
    assert provider.active() == []


@pytest.mark.timeout(30)
def test_a_failing_command_is_refused_with_exit_code_and_last_stderr_line(monkeypatch):
    monkeypatch.setenv("LIMIT_TEST_SECRET", "hunter2")
    provider = HookProvider({"maintenance_reset": Hook(
        inject='echo first >&2; echo "redis down $LIMIT_TEST_SECRET_NOT" >&2; exit 3')})
    with pytest.raises(FaultRefused) as refused:
        provider.inject({"kind": "maintenance_reset", "mode": "clear"})
    message = str(refused.value)
    assert message == "hook maintenance_reset inject: command exited with 3: redis down"
    assert provider.active() == []


@pytest.mark.timeout(30)
def test_a_slow_command_is_killed_and_refused_within_its_bound(tmp_path):
    child = tmp_path / "child"
    provider = HookProvider({"pause_sync": Hook(
        inject=f"sleep 30 & echo $! > {child}; wait", timeout_s=0.5)})
    started_s = time.monotonic()
    with pytest.raises(FaultRefused, match=r"did not finish within 0\.5 s") as refused:
        provider.inject({"kind": "pause_sync"})
    assert time.monotonic() - started_s < 3
    assert "\n" not in str(refused.value)
    pid = int(child.read_text())
    deadline_s = time.monotonic() + 2  # SIGKILL is delivered asynchronously
    while time.monotonic() < deadline_s and _running(pid):
        time.sleep(0.02)
    assert not _running(pid), "the command's own children are killed too"


@pytest.mark.timeout(30)
def test_a_failed_remove_keeps_the_fault_active(tmp_path):
    provider = HookProvider({"pause_sync": Hook(inject="true", remove="exit 4")})
    done = provider.inject({"kind": "pause_sync"})
    with pytest.raises(FaultRefused, match="hook pause_sync remove: command exited with 4"):
        provider.clear()
    assert [fault["fault_id"] for fault in provider.active()] == [done["fault_id"]]


@pytest.mark.timeout(30)
def test_an_http_hook_sends_params_as_json(endpoint):
    provider = HookProvider({"drop_events": Hook(
        inject=HttpCall("POST", url(endpoint, "/faults/{kind}"),
                        body={"p": "{probability}", "note": "id {fault_id}"},
                        headers={"X-Fault": "{fault_id}"}),
        remove=HttpCall("DELETE", url(endpoint, "/faults/{fault_id}")))})

    done = provider.inject({"kind": "drop_events", "probability": 0.3})
    provider.remove(done["fault_id"])

    (method, path, headers, body), (method2, path2, _, _) = endpoint.seen
    assert (method, path) == ("POST", "/faults/drop_events")
    assert json.loads(body) == {"p": 0.3, "note": f"id {done['fault_id']}"}
    assert headers["X-Fault"] == done["fault_id"]
    assert (method2, path2) == ("DELETE", f"/faults/{done['fault_id']}")


@pytest.mark.timeout(30)
def test_a_non_2xx_answer_is_refused_without_credentials_or_query(endpoint):
    secret_url = url(endpoint, "/status/503?token=s3cret").replace("http://", "http://u:pw@")
    provider = HookProvider({"pause_sync": Hook(inject=HttpCall("POST", secret_url))})
    with pytest.raises(FaultRefused) as refused:
        provider.inject({"kind": "pause_sync"})
    message = str(refused.value)
    assert message == (f"hook pause_sync inject: POST http://127.0.0.1:{endpoint.server_port}"
                       f"/status/503 answered 503, not 2xx")
    assert provider.active() == []


@pytest.mark.timeout(30)
def test_an_unreachable_endpoint_and_an_unknown_kind_are_refused(endpoint):
    port = endpoint.server_port
    endpoint.shutdown()
    endpoint.server_close()
    provider = HookProvider({"pause_sync": Hook(
        inject=HttpCall("POST", f"http://127.0.0.1:{port}/x"), timeout_s=2)})
    with pytest.raises(FaultRefused, match="could not be reached"):
        provider.inject({"kind": "pause_sync"})
    with pytest.raises(FaultRefused, match="no hook for 'delay_sync'; hooks: pause_sync"):
        provider.inject({"kind": "delay_sync", "delay_ms": 5})


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
