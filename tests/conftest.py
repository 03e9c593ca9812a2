"""Shared fixtures: the reference service started through the real CLI, as a user would.

`service_url` is one server for the whole session (tests using it must pick unique ids and leave
no fault behind); `start_service` starts private ones, e.g. with `--bug` flags or a given ledger.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import urllib3

START_WAIT_S = 10.0
STOP_WAIT_S = 10.0
URL_LINE = re.compile(r"^limit-harness serving on (http://\S+) \(ledger .*, bugs: .*\)$")


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


class Served:
    """One `limit-harness serve` subprocess."""

    def __init__(self, proc: subprocess.Popen, banner: str, url: str, stderr_path: Path) -> None:
        self.proc, self.banner, self.url, self.stderr_path = proc, banner, url, stderr_path
        self.api = Api(url)
        self.exit_code: int | None = None  # set by `stop`

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server, wait for it, and return its exit code (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_WAIT_S)
        self.proc.stdout.close()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "serve", *args]


def launch(workdir: Path, *args: str) -> Served:
    """Start `serve --port 0 ARGS` and return once its URL answers /v1/health."""
    stderr_path = workdir / f"serve-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "wb") as stderr:  # a file, not a pipe: nothing can block on it
        proc = subprocess.Popen(serve_command("--port", "0", *args), cwd=workdir,
                                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        line = _first_line(proc, START_WAIT_S)
        match = URL_LINE.match(line)
        assert match, f"unexpected first line from serve: {line!r}"
        served = Served(proc, line, match.group(1), stderr_path)
        _wait_healthy(served.api, START_WAIT_S)
        return served
    except BaseException:
        proc.kill()
        proc.wait(STOP_WAIT_S)
        raise


def _first_line(proc: subprocess.Popen, wait_s: float) -> str:
    deadline_s = time.monotonic() + wait_s
    data = b""
    fd = proc.stdout.fileno()
    while b"\n" not in data:
        left_s = deadline_s - time.monotonic()
        if left_s <= 0:
            raise TimeoutError(f"serve printed no line within {wait_s} s (got {data!r})")
        ready, _, _ = select.select([fd], [], [], left_s)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"serve exited with {proc.wait(STOP_WAIT_S)} before its URL")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


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
