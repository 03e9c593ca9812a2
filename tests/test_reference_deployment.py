"""The reference service as a real deployment (`serve --role api|projector`, PostgreSQL, Redis)
and the deployment file that drives it from outside (fixtures/deployments/reference.toml).

The shipped file is checked as shipped; the tests that start it use a copy that differs only in
where it keeps its data (a private schema, Redis dbs 13 and 14), so they touch nothing else on
the machine and clean up after themselves. They need the machine's PostgreSQL and Redis and
`redis-cli`: without them they skip, or fail where LIMIT_HARNESS_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from importlib import resources
from pathlib import Path

import orjson
import pytest

from conftest import Api, unavailable
from harness.deployment import ProcessRoute, ProxyRoute, load_deployment
from harness.faults.hooks import Hook

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = "deployments/reference.toml"
DISPLAY_DB, BUS_DB = 13, 14  # flushed by these tests: no other test may use them
WAIT_S = 10.0
POLL_S = 0.02


def shipped_text() -> str:
    return (resources.files("harness.fixtures") / SHIPPED).read_text(encoding="utf-8")


# -- the file as shipped --------------------------------------------------------------------------

def test_the_shipped_file_is_the_one_in_the_repository_and_loads():
    assert shipped_text() == (ROOT / "fixtures" / SHIPPED).read_text(encoding="utf-8")
    deployment = load_deployment(ROOT / "fixtures" / SHIPPED)
    assert list(deployment.processes) == ["projector", "api"]  # the projector first
    assert deployment.chaos_api is False
    api, projector = deployment.processes["api"], deployment.processes["projector"]
    for spec in (api, projector):
        assert "--no-chaos-api" in spec.cmd and "postgresql://" in spec.cmd
    assert "--role api" in api.cmd and "redis://127.0.0.1:6379/1" in api.cmd
    # Only the projector reaches Redis through the proxy: delaying it delays the sync.
    assert "{proxies.projector-redis.port}" in projector.cmd
    assert "{proxies" not in api.cmd
    assert deployment.proxies["projector-redis"].upstream_port == 6379
    faults = deployment.faults
    assert faults["pause_sync"] == ProcessRoute("projector", "pause")
    assert faults["crash_restart"] == ProcessRoute("api", "restart")
    assert faults["process_pause"] == ProcessRoute("api", "pause")
    assert faults["delay_sync"] == ProxyRoute("projector-redis", "latency",
                                              {"latency_ms": "delay_ms"})
    assert isinstance(faults["maintenance_reset"], Hook)
    assert "FLUSHDB" in faults["maintenance_reset"].inject and "-n 1" in \
        faults["maintenance_reset"].inject
    for kind in ("network_latency", "network_partition", "connection_reset"):
        assert faults[kind] == ProxyRoute("projector-redis")


# -- a private copy, started -------------------------------------------------------------------

@pytest.fixture
def private_copy(tmp_path, postgres_server, redis_server, monkeypatch):
    """The shipped file with its data moved to a private schema and Redis dbs 13 and 14 (the
    only change), `limit-harness` on PATH; everything removed afterwards."""
    import psycopg
    import redis

    if shutil.which("redis-cli") is None:
        unavailable("redis-cli is not installed (the maintenance hook runs it)")
    schema = f"lh_ref_{uuid.uuid4().hex[:10]}"
    text = shipped_text()
    replacements = [
        ("postgresql://127.0.0.1:5432/test?schema=limit_reference",
         f"{postgres_server}?schema={schema}"),
        ("{proxies.projector-redis.port}/1", f"{{proxies.projector-redis.port}}/{DISPLAY_DB}"),
        ("{proxies.projector-redis.port}/2", f"{{proxies.projector-redis.port}}/{BUS_DB}"),
        ("redis://127.0.0.1:6379/1", f"redis://127.0.0.1:6379/{DISPLAY_DB}"),
        ("redis://127.0.0.1:6379/2", f"redis://127.0.0.1:6379/{BUS_DB}"),
        ("-n 1 FLUSHDB", f"-n {DISPLAY_DB} FLUSHDB"),
    ]
    for old, new in replacements:
        assert old in text, f"the shipped file no longer has {old!r}: update this test"
        text = text.replace(old, new)
    path = tmp_path / "reference.toml"
    path.write_text(text, encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)  # where this environment's limit-harness is
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ.get("PATH", ""))
    clients = [redis.Redis.from_url(f"{redis_server}/{db}") for db in (DISPLAY_DB, BUS_DB)]
    for client in clients:
        client.flushdb()
    yield path
    for client in clients:
        client.flushdb()
        client.close()
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def until(condition, what: str, wait_s: float = WAIT_S):
    deadline_s = time.monotonic() + wait_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline_s:
            raise AssertionError(f"not within {wait_s} s: {what}")
        time.sleep(POLL_S)


class Account:
    """One account on the deployment's API, its writes and what its display shows."""

    def __init__(self, api: Api, account_id: str) -> None:
        self.api, self.id, self.writes = api, account_id, 0
        status, body = api.post("/v1/accounts", {"account_id": account_id, "product": "huabei",
                                                 "credit_line": 100_000, "request_id": self.rid()})
        assert status == 201, body
        self.last_seq = body["seq"]

    def rid(self) -> str:
        self.writes += 1
        return f"{self.id}-r{self.writes}"

    def draw(self, amount: int) -> int:
        status, body = self.api.post(f"/v1/accounts/{self.id}/draws",
                                     {"amount": amount, "request_id": self.rid()})
        assert status == 201, body
        self.last_seq = body["seq"]
        return self.last_seq

    def shown(self) -> tuple[int, dict | None]:
        return self.api.get(f"/v1/accounts/{self.id}/display")

    def caught_up(self) -> bool:
        status, body = self.shown()
        return status == 200 and body["as_of_seq"] == self.last_seq


def test_the_reference_deployment_starts_and_each_outside_fault_acts(private_copy):
    deployment = load_deployment(private_copy)
    deployment.start(seed=7)
    try:
        api = Api(deployment.url)
        assert api.get("/v1/chaos")[0] == 404  # no chaos API: faults come from outside only
        account = Account(api, f"ref-{uuid.uuid4().hex[:8]}")
        account.draw(1_000)
        until(account.caught_up, "the display shows the draw")

        # pause_sync: the projector stopped; the display stays honestly behind, then catches up.
        pause = deployment.provider_for("pause_sync")
        paused = pause.inject({"kind": "pause_sync"})
        before = account.shown()[1]
        seq = account.draw(2_000)
        time.sleep(0.5)
        status, during = account.shown()
        assert status == 200 and during == before  # honest and old: as of the first draw
        sync = api.get("/v1/sync")[1]
        assert sync["applied_seq"] < sync["ledger_seq"] == seq
        pause.remove(paused["fault_id"])
        until(account.caught_up, "the display catches up once the projector runs again")

        # delay_sync: latency on the projector's Redis link; the display lags, then catches up.
        delay = deployment.provider_for("delay_sync")
        delayed = delay.inject({"kind": "delay_sync", "delay_ms": 400})
        account.draw(3_000)
        time.sleep(0.1)
        assert not account.caught_up(), "a 400 ms delay on the sync link shows no lag"
        delay.remove(delayed["fault_id"])
        until(account.caught_up, "the display catches up once the delay is gone")

        # maintenance_reset: FLUSHDB of the display db; 503 (never a made-up value) while the
        # projector rebuilds from the ledger, then the right display again.
        wiped_seen = []
        deployment.provider_for("maintenance_reset").inject({"kind": "maintenance_reset",
                                                             "mode": "clear"})
        deadline_s = time.monotonic() + WAIT_S
        while time.monotonic() < deadline_s:
            status, body = account.shown()
            wiped_seen.append(status)
            if status == 200:
                assert body["as_of_seq"] == account.last_seq, body  # rebuilt, not invented
                break
            assert status == 503 and body["error"] == "display_unavailable", (status, body)
            time.sleep(POLL_S)
        assert wiped_seen[-1] == 200, "the display was not rebuilt"
        assert 503 in wiped_seen or _projector_saw_a_wipe(deployment), wiped_seen

        # crash_restart: SIGKILL of the API, started again; the ledger and display stand.
        deployment.provider_for("crash_restart").inject({"kind": "crash_restart"})
        api = Api(deployment.url)
        account.api = api
        assert account.caught_up()
        account.draw(4_000)
        until(account.caught_up, "the display follows writes after the restart")
        entries = api.get(f"/v1/ledger?after_seq={account.last_seq - 4}&limit=10")[1]["entries"]
        assert [e["type"] for e in entries if e["account_id"] == account.id] == ["draw"] * 4
    finally:
        deployment.stop()


def _projector_saw_a_wipe(deployment) -> bool:
    """The projector may rebuild before a read sees the 503; its log then says it did."""
    log = deployment.running["projector"].log.path
    return "the display was wiped" in log.read_text(errors="replace")


def test_chaos_routes_are_absent_with_no_chaos_api(start_service):
    served = start_service("--no-chaos-api")
    assert served.api.get("/v1/chaos") == (404, {"error": "not_found",
                                                 "detail": "no route GET /v1/chaos"})
    status, body = served.api.post("/v1/chaos/faults", {"kind": "pause_sync"})
    assert (status, body["error"]) == (404, "not_found")
    assert served.api.delete("/v1/chaos/faults/f-1")[0] == 404
    assert served.api.delete("/v1/chaos/faults")[0] == 404
    assert served.api.get("/v1/health")[0] == 200 and served.api.get("/v1/sync")[0] == 200
    # Without the option, the same service lists its chaos support.
    other = start_service()
    assert other.api.get("/v1/chaos")[0] == 200


@pytest.mark.parametrize("args, message", [
    (["--role", "api"], "--role api needs --display"),
    (["--display", "redis://127.0.0.1:6379/1"], "--display and --bus go together"),
    (["--role", "projector", "--display", "redis://h/1", "--bus", "redis://h/2",
      "--ledger", "memory://"], "lives in one process's memory"),
    (["--display", "http://h/1", "--bus", "redis://h/2"], "--display must be a redis:// URL"),
    (["--bug", "ack_before_durable", "--ledger", "memory://"], "needs --ledger sqlite:///PATH"),
])
def test_serve_refuses_a_deployment_that_cannot_work_in_one_line(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "harness.cli", "serve", "--port", "0", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_serve_says_an_unreachable_redis_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness.cli", "serve", "--port", "0",
                           "--role", "api", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite'}",
                           "--display", "redis://127.0.0.1:1/1", "--bus", "redis://127.0.0.1:1/2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "cannot reach the bus" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _run_has_deployment() -> bool:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--help"],
                          capture_output=True, text=True, timeout=60)
    return "--deployment" in done.stdout


def test_a_short_run_driven_from_outside_passes(private_copy, tmp_path):
    if not _run_has_deployment():
        pytest.skip("`run` has no --deployment yet")
    reports = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--deployment", str(private_copy),
         "--duration", "8", "--seed", "7", "--report-dir", str(reports), "--quiet"],
        capture_output=True, text=True, timeout=240, env=os.environ.copy())
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    report = orjson.loads((reports / "report.json").read_bytes())
    assert report["verdict"] == "pass"
    injected = set(report["stats"]["faults_injected"])
    # The faults came from outside: the service has no chaos API.
    assert {"pause_sync", "crash_restart", "maintenance_reset"} <= injected, injected


def test_the_split_deployment_answers_like_the_single_process_one(start_service, tmp_path,
                                                                  redis_server):
    # `--role all` with Redis: the projector as a thread beside the API, through the same bus
    # and display; on a SQLite file ledger, which both reach.
    import redis

    prefix = f"lh-all-{uuid.uuid4().hex[:8]}:"
    served = start_service("--ledger", f"sqlite:///{tmp_path / 'all.sqlite'}",
                           "--display", f"{redis_server}/{DISPLAY_DB}?prefix={prefix}",
                           "--bus", f"{redis_server}/{BUS_DB}?prefix={prefix}")
    try:
        assert "display redis://" in served.banner
        account = Account(served.api, "all-1")
        account.draw(500)
        until(account.caught_up, "the display in Redis shows the draw")
        assert redis.Redis.from_url(f"{redis_server}/{DISPLAY_DB}").exists(
            f"{prefix}display:all-1")
        fault = served.api.post("/v1/chaos/faults", {"kind": "pause_sync"})[1]
        account.draw(1)
        time.sleep(0.3)
        assert not account.caught_up()  # the chaos API's faults reach the projector
        served.api.delete(f"/v1/chaos/faults/{fault['fault_id']}")
        until(account.caught_up, "the display catches up once the pause is removed")
    finally:
        served.stop()  # first: its projector would write its keys again
        for db in (DISPLAY_DB, BUS_DB):
            client = redis.Redis.from_url(f"{redis_server}/{db}")
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


# -- the container files ---------------------------------------------------------------------------

def _serve_args(argv: list[str]):
    from harness.cli import build_parser
    from harness.service import roles

    assert argv[0] == "serve", argv
    args = build_parser().parse_args(argv)
    return args, roles.topology(args)


def test_compose_runs_an_api_and_a_projector_on_postgres_and_redis():
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"api", "projector", "postgres", "redis"} <= set(services)
    api_args, api = _serve_args(services["api"]["command"])
    _, projector = _serve_args(services["projector"]["command"])
    assert (api.role, projector.role) == ("api", "projector")
    # Both reach the same ledger, display and bus, and the display is not the bus's db.
    assert (api.ledger, api.display, api.bus) == (projector.ledger, projector.display,
                                                 projector.bus)
    assert api.ledger.startswith("postgresql://") and "@postgres:" in api.ledger
    assert api.display != api.bus and api.display.startswith("redis://redis:")
    assert api_args.host == "0.0.0.0" and f":{api_args.port}" in services["api"]["ports"][0]
    for name in ("api", "projector"):
        assert services[name]["build"] == "." and "postgres" in services[name]["depends_on"]


def test_the_image_serves_and_ships_the_deployment_extra():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install '.[deployment]'" in dockerfile
    entrypoint = orjson.loads(next(line for line in dockerfile.splitlines()
                                   if line.startswith("ENTRYPOINT")).split(None, 1)[1])
    command = orjson.loads(next(line for line in dockerfile.splitlines()
                                if line.startswith("CMD")).split(None, 1)[1])
    assert entrypoint == ["limit-harness"]
    args, topo = _serve_args(command)
    assert args.host == "0.0.0.0" and topo.role == "all"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "tests", "reports"} <= set(ignored)
