"""Shared fixtures: the reference service started through the real CLI, as a user would.

`service_url` is one server for the whole session (tests using it must pick unique ids and leave
no fault behind); `start_service` starts private ones, e.g. with `--bug` flags or a given ledger.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
import urllib3

from harness.service.process import ServeProcess, spawn

START_WAIT_S = 10.0
# The machine's own services (CI runs them): tests that need one skip without it, saying why,
# or fail where LIMIT_HARNESS_REQUIRE_SERVICES=1 promises it (a silent skip proves nothing).
POSTGRES_URL = os.environ.get("LIMIT_HARNESS_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LIMIT_HARNESS_REDIS_URL", "redis://127.0.0.1:6379")


class Api:
    """A tiny JSON client: `request` answers (status, parsed body or None, headers), the
    shorthands (status, body)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.pool = urllib3.PoolManager(maxsize=4, retries=False,
                                        timeout=urllib3.Timeout(connect=2.0, read=5.0))

    def request(self, method: str, path: str, json=None, *, body: bytes | None = None,
                headers: dict | None = None):
        if json is not None:
            body = orjson.dumps(json)
        response = self.pool.request(method, self.base_url + path, body=body, headers=headers)
        data = orjson.loads(response.data) if response.data else None
        return response.status, data, response.headers

    def get(self, path: str):
        return self.request("GET", path)[:2]

    def post(self, path: str, json):
        return self.request("POST", path, json)[:2]

    def delete(self, path: str):
        return self.request("DELETE", path)[:2]


class Served(ServeProcess):
    """One `limit-harness serve` subprocess, with a client on it."""

    def __init__(self, started: ServeProcess) -> None:
        super().__init__(started.proc, started.banner, started.url, started.stderr_path)
        self.api = Api(self.url)


def launch(workdir: Path, *args: str) -> Served:
    """Start `serve --port 0 ARGS` and return once its URL answers /v1/health."""
    served = Served(spawn(workdir, *args, wait_s=START_WAIT_S))
    try:
        _wait_healthy(served.api, START_WAIT_S)
        return served
    except BaseException:
        served.stop(signal.SIGKILL)
        raise


def _wait_healthy(api: Api, wait_s: float) -> None:
    deadline_s = time.monotonic() + wait_s
    while True:
        try:
            if api.get("/v1/health") == (200, {"status": "ok"}):
                return
        except urllib3.exceptions.HTTPError:
            pass
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"{api.base_url}/v1/health did not answer within {wait_s} s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def service_url(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("service")
    served = launch(workdir, "--ledger", f"sqlite:///{workdir / 'ledger.sqlite'}")
    try:
        yield served.url
    finally:
        code = served.stop()
    assert code == 0, f"serve exited with {code}: {served.stderr()}"


@pytest.fixture(scope="session")
def api(service_url) -> Api:
    return Api(service_url)


@pytest.fixture
def start_service(tmp_path):
    """`start_service(*extra_args)` -> Served on a free port (default ledger: a fresh SQLite file
    in tmp_path unless `--ledger` is given); whatever is still running at teardown is stopped
    with SIGTERM and must exit 0."""
    started: list[Served] = []

    def start(*extra_args: str) -> Served:
        args = list(extra_args)
        if "--ledger" not in args:
            args += ["--ledger", f"sqlite:///{tmp_path / f'ledger-{len(started)}.sqlite'}"]
        served = launch(tmp_path, *args)
        started.append(served)
        return served

    yield start
    codes = {served.url: served.stop() for served in started if served.exit_code is None}
    assert all(code == 0 for code in codes.values()), f"serve exit codes: {codes}"


# -- the machine's PostgreSQL and Redis ------------------------------------------------------------

def unavailable(why_not: str):
    """Skip, saying why; fail instead where LIMIT_HARNESS_REQUIRE_SERVICES=1 (CI)."""
    if os.environ.get("LIMIT_HARNESS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LIMIT_HARNESS_REQUIRE_SERVICES=1 but {why_not}", pytrace=False)
    pytest.skip(why_not)


def postgres_probe() -> tuple[str | None, str]:
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg is not installed ({exc})"
    candidates = [POSTGRES_URL]
    if "@" not in POSTGRES_URL:  # trust auth: the OS user may have no role; `postgres` has
        candidates.append(POSTGRES_URL.replace("://", "://postgres@", 1))
    errors = []
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url, ""
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    return None, "PostgreSQL unreachable: " + "; ".join(errors)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A URL of the machine's PostgreSQL database `test` that connects (trust auth)."""
    url, why_not = postgres_probe()
    if url is None:
        unavailable(why_not)
    return url


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The machine's Redis, as `redis://host:port` (add `/DB`: tests pick distinct ones)."""
    try:
        import redis
    except ImportError as exc:
        unavailable(f"redis-py is not installed ({exc})")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {REDIS_URL}: {exc}")
    return REDIS_URL.rstrip("/")
