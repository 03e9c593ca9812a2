"""Shared fixtures: the reference service started through the real CLI, as a user would.

`service_url` is one server for the whole session (tests using it must pick unique ids and leave
no fault behind); `start_service` starts private ones, e.g. with `--bug` flags or a given ledger.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest
import urllib3

from harness.service.process import ServeProcess, spawn

START_WAIT_S = 10.0


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
