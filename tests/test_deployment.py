"""Deployment files: a valid one loaded, started (real processes) and stopped; every kind of bad
file a one-line UsageError naming the file and the key; `--target-cmd` as a deployment."""

from __future__ import annotations

import http.server
import importlib.util
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.deployment import (ContainerRoute, Deployment, ProcessRoute, ProcessSpec, ProxyRoute,
                                ProxySpec, deployment_from_target_cmd, load_deployment)
from harness.errors import TargetError, UsageError
from harness.faults.hooks import Hook, HttpCall
from child_server import SERVER, answers, gone

@pytest.fixture
def server_script(tmp_path) -> Path:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return script


def write(tmp_path: Path, text: str | bytes, name: str = "deploy.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path








VALID = """
name = "two servers and hooks"

[processes.api]
cmd = "{python} {script} {{port}}"
health = "/"
env = {{ LIMIT_ROLE = "api" }}
start_timeout_s = 10

[processes.projector]
cmd = "{python} {script} {{port}}"
cwd = "work"

[containers]
api = "limit-api"

[faults]
crash_restart = {{ process = "api" }}
process_pause = {{ process = "projector" }}
pause_sync = {{ process = "projector", action = "pause" }}
maintenance_reset = {{ inject = "echo $LIMIT_FAULT_MODE > {out}", timeout_s = 5 }}
drop_events = {{ inject = {{ method = "post", url = "http://127.0.0.1:9/x", body = {{ p = "{{probability}}" }} }}, remove = "true" }}
delay_sync = "true"
"""


@pytest.mark.timeout(60)
def test_a_valid_file_loads_starts_and_stops(tmp_path, server_script):
    (tmp_path / "work").mkdir()
    out = tmp_path / "reset.out"
    path = write(tmp_path, VALID.format(python=sys.executable, script=server_script, out=out))

    deployment = load_deployment(path)

    cmd = f"{sys.executable} {server_script} {{port}}"
    assert deployment.name == "two servers and hooks"
    assert deployment.processes == {
        "api": ProcessSpec("api", cmd, health="/", env={"LIMIT_ROLE": "api"}, start_timeout_s=10),
        "projector": ProcessSpec("projector", cmd, cwd=tmp_path / "work")}
    assert list(deployment.processes) == ["api", "projector"]  # declaration order is start order
    assert deployment.containers == {"api": "limit-api"}
    assert deployment.faults == {
        "crash_restart": ProcessRoute("api", "restart"),
        "process_pause": ProcessRoute("projector", "pause"),
        "pause_sync": ProcessRoute("projector", "pause"),
        "maintenance_reset": Hook(f"echo $LIMIT_FAULT_MODE > {out}", None, 5.0),
        "drop_events": Hook(HttpCall("POST", "http://127.0.0.1:9/x", {"p": "{probability}"}, {}),
                            "true", 10.0),
        "delay_sync": Hook("true")}
    assert deployment.kinds() == ("crash_restart", "process_pause", "pause_sync",
                                  "maintenance_reset", "drop_events", "delay_sync")

    providers = deployment.start(seed=7)
    try:
        assert [provider.name for provider in providers] == ["process", "hooks"]
        assert deployment.provider_for("pause_sync") is providers[0]
        assert deployment.provider_for("maintenance_reset") is providers[1]
        assert deployment.provider_for("network_latency") is None
        api, projector = deployment.running["api"], deployment.running["projector"]
        assert deployment.url == api.url and answers(api.url) and answers(projector.url)

        pid_before = api.pid
        deployment.provider_for("crash_restart").inject({"kind": "crash_restart"})
        assert api.pid != pid_before and answers(api.url)
        deployment.provider_for("maintenance_reset").inject(
            {"kind": "maintenance_reset", "mode": "clear"})
        assert out.read_text() == "clear\n"
        deployment.provider_for("pause_sync").inject({"kind": "pause_sync"})
        assert not answers(projector.url, timeout_s=0.5)
    finally:
        deployment.stop()
    assert gone(api.pid) and gone(projector.pid)
    assert deployment.running == {} and deployment.url is None


@pytest.mark.timeout(30)
def test_a_process_that_fails_to_start_stops_those_started_before(tmp_path, server_script):
    path = write(tmp_path, f"""
[processes.api]
cmd = "{sys.executable} {server_script} {{port}}"
[processes.projector]
cmd = "sh -c 'echo cannot connect to redis >&2; exit 1'"
""")
    deployment = load_deployment(path)
    started: list = []
    original = Deployment._start_process

    def remember(self, spec):
        process = original(self, spec)
        started.append(process)
        return process

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Deployment, "_start_process", remember)
        try:
            with pytest.raises(TargetError, match="process projector exited with code 1 .*cannot "
                                                  "connect to redis"):
                deployment.start()
        finally:
            deployment.stop()
    assert len(started) == 1 and gone(started[0].pid)


BAD_FILES = [
    ('nme = "x"', "nme"),
    ('name = 3', "name"),
    ('processes = 3', "processes"),
    ('[processes]\napi = "serve"', "processes.api"),
    ('[processes."a pi"]\ncmd = "x"', "processes.a pi"),
    ('[processes.api]\nhealth = "/h"', "processes.api.cmd"),
    ('[processes.api]\ncmd = 3', "processes.api.cmd"),
    ('[processes.api]\ncmd = ""', "processes.api.cmd"),
    ('[processes.api]\ncmd = "serve \'x"', "processes.api.cmd"),
    ('[processes.api]\ncmd = "x"\ncmds = "y"', "processes.api.cmds"),
    ('[processes.api]\ncmd = "x"\nport = 70000', "processes.api.port"),
    ('[processes.api]\ncmd = "x"\nport = true', "processes.api.port"),
    ('[processes.api]\ncmd = "x {port}"\nhealth = "v1/health"', "processes.api.health"),
    ('[processes.api]\ncmd = "x"\nhealth = "/v1/health"', "processes.api.health"),
    ('[processes.api]\ncmd = "x"\nenv = { A = 1 }', "processes.api.env.A"),
    ('[processes.api]\ncmd = "x"\nenv = "A=1"', "processes.api.env"),
    ('[processes.api]\ncmd = "x"\nstart_timeout_s = 0', "processes.api.start_timeout_s"),
    ('[processes.api]\ncmd = "x --redis 127.0.0.1:{proxies.db.port}"', "processes.api.cmd"),
    ('[processes.api]\ncmd = "x"\nenv = { R = "{proxies.db.port}" }', "processes.api.env.R"),
    ('[proxies.redis]\nlisten = "127.0.0.1:0"', "proxies.redis.upstream"),
    ('[proxies.redis]\nupstream = "localhost"', "proxies.redis.upstream"),
    ('[proxies.redis]\nupstream = "127.0.0.1:0"', "proxies.redis.upstream"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\nlisten = "127.0.0.1:x"',
     "proxies.redis.listen"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\ntoxics = []', "proxies.redis.toxics"),
    ('[containers]\napi = 5', "containers.api"),
    ('[faults]\nexplode = { inject = "true" }', "faults.explode"),
    ('[faults]\nmaintenance_reset = 5', "faults.maintenance_reset"),
    ('[faults]\nmaintenance_reset = ""', "faults.maintenance_reset"),
    ('[faults]\ncrash_restart = { process = "api" }', "faults.crash_restart.process"),
    ('[faults]\ncrash_restart = {}', "faults.crash_restart"),
    ('[processes.api]\ncmd = "x"\n[faults]\ncrash_restart = { process = "api", inject = "x" }',
     "faults.crash_restart"),
    ('[processes.api]\ncmd = "x"\n[faults]\ncrash_restart = { process = "api", action = "pause" }',
     "faults.crash_restart.action"),
    ('[processes.api]\ncmd = "x"\n[faults]\npause_sync = { process = "api" }',
     "faults.pause_sync.action"),
    ('[processes.api]\ncmd = "x"\n[faults]\npause_sync = { process = "api", action = "stop" }',
     "faults.pause_sync.action"),
    ('[processes.api]\ncmd = "x"\n[faults]\nnetwork_partition = { process = "api" }',
     "faults.network_partition"),
    ('[processes.api]\ncmd = "x"\n[faults]\nprocess_pause = { process = "api", timeout_s = 1 }',
     "faults.process_pause.timeout_s"),
    ('[containers]\napi = "limit-api"\n[faults]\nnetwork_partition = { container = "api" }',
     "faults.network_partition.network"),
    ('[containers]\napi = "limit-api"\n[faults]\n'
     'crash_restart = { container = "api", network = "n" }', "faults.crash_restart.network"),
    ('[faults]\nprocess_pause = { container = "db" }', "faults.process_pause.container"),
    ('[faults]\nnetwork_latency = { proxy = "redis" }', "faults.network_latency.proxy"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\ncrash_restart = { proxy = "redis" }',
     "faults.crash_restart.proxy"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\ndelay_sync = { proxy = "redis" }',
     "faults.delay_sync.toxic"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\n'
     'delay_sync = { proxy = "redis", toxic = 3 }', "faults.delay_sync.toxic"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\n'
     'delay_sync = { proxy = "redis", toxic = "latency", fixed = { direction = [] } }',
     "faults.delay_sync.fixed.direction"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\n'
     'delay_sync = { proxy = "redis", toxic = "latency", params = {} }',
     "faults.delay_sync.params"),
    ('[proxies.redis]\nupstream = "127.0.0.1:6379"\n[faults]\n'
     'delay_sync = { proxy = "redis", toxic = "latency", param = { latency_ms = 5 } }',
     "faults.delay_sync.param.latency_ms"),
    ('[faults]\ndrop_events = { inject = { method = "FETCH", url = "http://127.0.0.1:9/" } }',
     "faults.drop_events.inject.method"),
    ('[faults]\ndrop_events = { inject = { method = "POST", url = "ftp://x/" } }',
     "faults.drop_events.inject.url"),
    ('[faults]\ndrop_events = { inject = { method = "POST", url = "http://127.0.0.1:9/", '
     'body = 3 } }', "faults.drop_events.inject.body"),
    ('[faults]\ndrop_events = { inject = { method = "POST", url = "http://127.0.0.1:9/", '
     'headers = { A = 1 } } }', "faults.drop_events.inject.headers.A"),
    ('[faults]\ndrop_events = { inject = "true", remove = 3 }', "faults.drop_events.remove"),
    ('[faults]\nmaintenance_reset = { inject = "x", retries = 2 }',
     "faults.maintenance_reset.retries"),
    ('[faults]\nmaintenance_reset = { inject = "x", timeout_s = "5" }',
     "faults.maintenance_reset.timeout_s"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("text", "key"), BAD_FILES, ids=[key for _, key in BAD_FILES])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        load_deployment(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"deployment file {path}: {key}: "), message


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("content", "problem"), [
    (b"name = \n", "is not valid TOML"),
    (b'name = "\xff"\n', "is not valid TOML"),
    (None, "cannot read deployment file"),
])
def test_an_unreadable_or_malformed_file_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "deploy.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError) as raised:
        load_deployment(path)
    message = str(raised.value)
    assert "\n" not in message and problem in message and str(path) in message


@pytest.mark.timeout(30)
def test_the_routes_a_file_can_name(tmp_path):
    path = write(tmp_path, """
[proxies.redis]
upstream = "127.0.0.1:6379"
[containers]
api = "limit-api"
projector = "limit-projector"
[faults]
crash_restart = { container = "api" }
pause_sync = { container = "projector", action = "pause" }
network_partition = { container = "api", network = "limit-net" }
delay_sync = { proxy = "redis", toxic = "latency", param = { latency_ms = "delay_ms" }, fixed = { direction = "downstream" } }
connection_reset = { proxy = "redis" }
""")
    deployment = load_deployment(path)
    assert deployment.name == "deploy"
    assert deployment.proxies == {"redis": ProxySpec("redis", "127.0.0.1", 0, "127.0.0.1", 6379)}
    assert deployment.faults == {
        "crash_restart": ContainerRoute("api", "restart"),
        "pause_sync": ContainerRoute("projector", "pause"),
        "network_partition": ContainerRoute("api", "disconnect", "limit-net"),
        "delay_sync": ProxyRoute("redis", "latency", {"latency_ms": "delay_ms"},
                                 {"direction": "downstream"}),
        "connection_reset": ProxyRoute("redis")}


@pytest.mark.timeout(30)
def test_target_cmd_is_one_api_process_with_crash_and_pause(server_script):
    deployment = deployment_from_target_cmd(f"{sys.executable} {server_script} {{port}}")
    assert deployment.faults == {"crash_restart": ProcessRoute("api", "restart"),
                                 "process_pause": ProcessRoute("api", "pause")}
    with deployment:
        assert answers(deployment.url)
        provider = deployment.provider_for("process_pause")
        fault = provider.inject({"kind": "process_pause"})
        assert not answers(deployment.url, timeout_s=0.5)
        provider.remove(fault["fault_id"])
        assert answers(deployment.url)
        pid = deployment.running["api"].pid
    assert gone(pid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("cmd", "problem"), [
    ("my-service --port 8080", "must contain {port}"),
    ("my-service --port {port} 'x", "cannot be split into words"),
])
def test_a_bad_target_cmd_is_a_usage_error(cmd, problem):
    with pytest.raises(UsageError, match=problem) as raised:
        deployment_from_target_cmd(cmd)
    assert "\n" not in str(raised.value)


@pytest.mark.timeout(60)
@pytest.mark.skipif(importlib.util.find_spec("harness.faults.proxy") is None,
                    reason="harness.faults.proxy is not written yet")
def test_proxies_start_before_processes_and_carry_out_routed_kinds(tmp_path, server_script):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    seen = tmp_path / "proxy-port"
    text = f"""
[proxies.up]
upstream = "127.0.0.1:{upstream.server_port}"
[processes.api]
cmd = "sh -c 'echo $0 > {seen}; exec {sys.executable} {server_script} $1' {{proxies.up.port}} {{port}}"
[faults]
network_partition = {{ proxy = "up" }}
delay_sync = {{ proxy = "up", toxic = "latency", param = {{ latency_ms = "delay_ms" }} }}
drop_events = {{ proxy = "up", toxic = "reset_peer" }}
"""
    deployment = load_deployment(write(tmp_path, text))
    try:
        deployment.start(seed=1)
        proxy_port = deployment.listening["up"].port
        assert seen.read_text().strip() == str(proxy_port)
        through = f"http://127.0.0.1:{proxy_port}/"
        assert answers(through)

        provider = deployment.provider_for("network_partition")
        fault = provider.inject({"kind": "network_partition"})
        assert not answers(through, timeout_s=0.5)
        provider.remove(fault["fault_id"])
        assert _answers_within(through, 5)

        delayed = provider.inject({"kind": "delay_sync", "delay_ms": 700})
        assert delayed["delay_ms"] == 700 and not answers(through, timeout_s=0.3)
        provider.remove(delayed["fault_id"])
        # The proxy gets no `probability`, which no toxic takes.
        dropped = provider.inject({"kind": "drop_events", "probability": 0.5})
        assert dropped["probability"] == 0.5 and not answers(through)
        provider.clear()
        assert _answers_within(through, 5)
    finally:
        deployment.stop()
        upstream.shutdown()
        upstream.server_close()
        thread.join(5)

    bad = write(tmp_path, text.replace('toxic = "reset_peer"', 'toxic = "slow"'), "bad.toml")
    deployment = load_deployment(bad)
    with pytest.raises(UsageError, match="unknown toxic type 'slow'") as raised:
        deployment.start()
    assert "\n" not in str(raised.value) and deployment.running == {}


def _answers_within(url: str, wait_s: float) -> bool:
    deadline_s = time.monotonic() + wait_s
    while time.monotonic() < deadline_s:
        if answers(url, timeout_s=0.5):
            return True
        time.sleep(0.05)
    return False


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.timeout(30)
def test_the_example_in_the_docs_loads(tmp_path):
    docs = Path(__file__).resolve().parent.parent / "docs" / "deployments.md"
    example = docs.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    deployment = load_deployment(write(tmp_path, example))
    assert list(deployment.processes) == ["worker", "api"]
    assert deployment.faults["delay_sync"] == ProxyRoute("redis", "latency",
                                                         {"latency_ms": "delay_ms"})
    assert deployment.faults["maintenance_reset"] == Hook("redis-cli -n 1 FLUSHDB", None, 5.0)
