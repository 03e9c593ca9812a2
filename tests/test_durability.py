"""Durability: the API killed with SIGKILL under load and started again, CYCLES times, loses no
acknowledged write and writes no entry twice; after each restart the display is rebuilt and
converges. On the SQLite file ledger (`serve`, one process) and on PostgreSQL (the production-like
deployment: an api process, a projector process, Redis for the display and the bus).

How: a few client threads write through one `Recorder` (so every request and answer is in the
history) while the harness's own crash provider (`ProcessProvider` behind `RoutedTarget`, as
`run --deployment` uses it) SIGKILLs the API and starts it again; the kill is recorded as a
`crash_restart` fault. Writes in flight at a kill have no answer (`info`); once the API is back
each is sent again with its request id. Then the convergence phase must see every display equal
the ledger, and at the end every checker judges the whole history against the ledger read back.

The same cycles catch the seeded bug `ack_before_durable` (answers before the commit is durable)
as `lost_write`: the proof that the cycles can fail.

The PostgreSQL half needs the machine's PostgreSQL (database `test`) and Redis; each test works
in its own schema and key prefix and removes them. Without them it skips, or fails where
LIMIT_HARNESS_REQUIRE_SERVICES=1 (conftest.unavailable).
"""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from harness import checkers
from harness.analysis import CheckConfig
from harness.client import Recorder
from harness.convergence import HARNESS, converge, fetch_ledger
from harness.faults.process import ManagedProcess, ProcessProvider
from harness.faults.routing import RoutedTarget
from harness.history import new_history
from harness.targets import HttpTarget

pytestmark = [pytest.mark.slow, pytest.mark.http]

CYCLES = 20
BUG_CYCLES = 4  # the bug loses writes at every kill; a few cycles prove it is caught
SLA_MS = 1000
CLIENTS = 3
ACCOUNTS_PER_CLIENT = 3
CREDIT_LINE = 10**9  # fen: draws never run out within a test
LOAD_S = (0.15, 0.35)  # how long the clients write before each kill (seeded per cycle)
RESUME_WAIT_S = 5.0
RETRY_PAUSE_S = 0.05  # a client sends an unanswered write again after this
START_TIMEOUT_S = 30.0  # a loaded 2-core machine starts Python slowly
# Display db and bus db of the PostgreSQL deployment; the key prefix is unique per test, and
# nothing here flushes a db, so other tests may share them.
DISPLAY_DB, BUS_DB = 9, 10


def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "serve", *args]


# -- the load -------------------------------------------------------------------------------------

@dataclass
class Load:
    """CLIENTS threads, each writing draws and repayments (and reading a display now and then)
    to its own accounts, one request at a time, between `resume` and `pause`."""

    recorder: Recorder
    seed: int
    accounts: list[list[str]] = field(default_factory=list)
    unanswered: list[tuple[int, str, str, dict, int]] = field(default_factory=list)
    _go: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _idle: list[threading.Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _ids: int = 0

    def request_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"dur-{self.seed}-{self._ids}"

    def open_accounts(self) -> None:
        for n in range(CLIENTS):
            mine = [f"dur{self.seed}-c{n}-a{k}" for k in range(ACCOUNTS_PER_CLIENT)]
            for account in mine:
                op = self.recorder.write(n + 1, "open", account, {
                    "account_id": account, "product": "huabei", "credit_line": CREDIT_LINE,
                    "request_id": self.request_id()})
                assert op.outcome == "ok", op.response
            self.accounts.append(mine)

    def start(self) -> None:
        for n in range(CLIENTS):
            self._idle.append(threading.Event())
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def resume(self) -> None:
        self._go.set()

    def pause(self) -> None:
        self._go.clear()
        for idle in self._idle:
            assert idle.wait(RESUME_WAIT_S), "a client did not come to rest"

    def close(self) -> None:
        self._stop.set()
        self._go.set()
        for thread in self._threads:
            thread.join(RESUME_WAIT_S)

    def send_again(self) -> None:
        """Each write whose answer was lost, sent again with its request id (the clients are
        paused); one still unanswered is kept for the next time."""
        pending, self.unanswered = self.unanswered, []
        for process, f, account, body, index in pending:
            op = self.recorder.write(process, f, account, body, retry_of=index)
            if op.outcome == "info":
                self.unanswered.append((process, f, account, body, index))

    def _client(self, n: int) -> None:
        """As a payment client does: a write without an answer is sent again, with its request
        id, after a pause, until it is answered; whatever is still unanswered when the load
        pauses is left in `unanswered`."""
        rng = random.Random(self.seed * 1000 + n)
        process = n + 1
        retry: tuple[str, str, dict, int] | None = None
        while not self._stop.is_set():
            if not self._go.is_set():
                if retry is not None:
                    with self._lock:
                        self.unanswered.append((process, *retry))
                    retry = None
                self._idle[n].set()
                self._go.wait(0.05)
                continue
            self._idle[n].clear()
            if not self._go.is_set():
                continue
            if retry is not None:
                f, account, body, index = retry
                op = self.recorder.write(process, f, account, body, retry_of=index)
            else:
                account = rng.choice(self.accounts[n])
                if rng.random() < 0.1:
                    self.recorder.display(process, account)
                    continue
                f = "draw" if rng.random() < 0.7 else "repay"
                body = {"amount": rng.randint(1, 50_000), "request_id": self.request_id()}
                op = self.recorder.write(process, f, account, body)
                index = op.index
            if op.outcome == "info":
                retry = (f, account, body, index)
                time.sleep(RETRY_PAUSE_S)
            else:
                retry = None
        self._idle[n].set()


# -- the cycles -----------------------------------------------------------------------------------

@dataclass
class Cycled:
    verdict: checkers.Verdict
    outcomes: Counter
    crashes: int
    not_converged: list[int]

    def kinds(self) -> set[str]:
        return {f.kind for f in self.verdict.findings}

    def serious(self) -> list[str]:
        return [f"{f.severity} {f.kind} {f.account_id}: {f.explanation[:300]}"
                for f in self.verdict.findings if f.severity in ("critical", "major")]


def crash_cycles(api: ManagedProcess, cycles: int, seed: int) -> Cycled:
    """`cycles` times: the clients write for a while, the API is killed and started again
    (recorded as a crash_restart fault), lost answers are sent again, the display must
    converge. Then every checker over the whole history."""
    target = RoutedTarget(HttpTarget(api.url, pool_size=CLIENTS + 1),
                          {"crash_restart": ProcessProvider({"api": api})}, chaos_api=False)
    recorder = Recorder(target, new_history(target.name, False, SLA_MS, seed=seed))
    load = Load(recorder, seed)
    load.open_accounts()
    load.start()
    rng = random.Random(seed)
    not_converged, crashes = [], 0
    try:
        for cycle in range(cycles):
            load.resume()
            time.sleep(rng.uniform(*LOAD_S))
            crash = recorder.add_fault(HARNESS, {"kind": "crash_restart"})
            assert crash.outcome == "ok", crash.response  # killed, and back
            crashes += 1
            time.sleep(rng.uniform(0, LOAD_S[0]))  # the clients write on the new process a bit
            load.pause()
            load.send_again()
            if not converge(recorder, SLA_MS):
                not_converged.append(cycle)
        ledger = fetch_ledger(recorder)
    finally:
        load.close()
        target.close()
    verdict = checkers.check(recorder.history, ledger, CheckConfig(sla_ms=SLA_MS))
    outcomes = Counter(op.outcome for op in recorder.history.ops if op.is_write)
    return Cycled(verdict, outcomes, crashes, not_converged)


def assert_durable(result: Cycled, cycles: int) -> None:
    assert result.crashes == cycles
    # Not vacuous: writes were acknowledged, and the kills caught some in flight.
    assert result.outcomes["ok"] >= 10 * cycles, result.outcomes
    assert result.outcomes["info"] > 0, ("no write was in flight at any kill", result.outcomes)
    assert not result.not_converged, f"no convergence after the restarts of cycles " \
                                     f"{result.not_converged}"
    assert not {"lost_write", "duplicate_write", "phantom_write"} & result.kinds(), \
        result.serious()
    assert not result.serious(), result.serious()


# -- SQLite file ledger: `serve`, one process ------------------------------------------------

def sqlite_api(tmp_path, *bugs: str) -> ManagedProcess:
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    bug_args = [arg for name in bugs for arg in ("--bug", name)]
    return ManagedProcess("api", serve("--port", "{port}", "--ledger", ledger, *bug_args),
                          health_url="/v1/health", start_timeout_s=START_TIMEOUT_S,
                          log_dir=tmp_path)


def test_sqlite_ledger_loses_nothing_across_20_kills(tmp_path):
    with sqlite_api(tmp_path) as api:
        result = crash_cycles(api, CYCLES, seed=1)
    assert_durable(result, CYCLES)


def test_the_same_cycles_catch_acknowledging_before_the_commit_is_durable(tmp_path):
    with sqlite_api(tmp_path, "ack_before_durable") as api:
        result = crash_cycles(api, BUG_CYCLES, seed=2)
    assert result.outcomes["ok"] > 0
    assert "lost_write" in result.kinds(), result.serious()


# -- PostgreSQL + Redis: api and projector processes ------------------------------------------

@dataclass
class Split:
    ledger: str
    display: str
    bus: str


@pytest.fixture
def split(postgres_server, redis_server):
    """A private schema and key prefix on the machine's PostgreSQL and Redis, removed after."""
    import psycopg
    import redis

    tag = f"lh_dur_{uuid.uuid4().hex[:10]}"
    prefix = f"{tag}:"
    yield Split(f"{postgres_server}?schema={tag}",
                f"{redis_server}/{DISPLAY_DB}?prefix={prefix}",
                f"{redis_server}/{BUS_DB}?prefix={prefix}")
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
    for db in (DISPLAY_DB, BUS_DB):
        client = redis.Redis.from_url(f"{redis_server}/{db}")
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def split_processes(tmp_path, split: Split) -> tuple[ManagedProcess, ManagedProcess]:
    urls = ["--ledger", split.ledger, "--display", split.display, "--bus", split.bus]
    projector = ManagedProcess("projector", serve("--role", "projector", *urls),
                               start_timeout_s=START_TIMEOUT_S, log_dir=tmp_path)
    try:
        api = ManagedProcess("api", serve("--role", "api", "--no-chaos-api", "--port", "{port}",
                                          *urls),
                             health_url="/v1/health", start_timeout_s=START_TIMEOUT_S,
                             log_dir=tmp_path)
    except BaseException:
        projector.stop()
        raise
    return projector, api


def test_postgres_deployment_loses_nothing_across_20_kills(tmp_path, split):
    projector, api = split_processes(tmp_path, split)
    try:
        result = crash_cycles(api, CYCLES, seed=3)
        assert projector.alive, projector.log.tail()
    finally:
        api.stop()
        projector.stop()
    assert_durable(result, CYCLES)


# -- the PostgreSQL ledger's own promises ------------------------------------------------------

def _entry(seq: int, account_id: str, kind: str = "draw", **fields) -> dict:
    base = {"seq": seq, "entry_id": f"e-{seq}", "request_id": f"r-{seq}", "at": "t",
            "account_id": account_id, "type": kind}
    return {**base, **({"product": "huabei", "credit_line": 1000} if kind == "open"
                       else {"amount": 1}), **fields}


def test_a_write_judged_on_a_state_another_writer_changed_is_not_committed(split):
    from harness.service.postgres import LedgerConflict
    from harness.service.storage import open_ledger

    first = open_ledger(split.ledger)
    first.commit([_entry(1, "a", "open")], "r-1", 201, {"seq": 1})
    second = open_ledger(split.ledger)  # reads account a at seq 1
    try:
        first.commit([_entry(2, "a")], "r-2", 201, {"seq": 2})
        # The second writer still believes a's last entry is seq 1: its acceptance is stale.
        with pytest.raises(LedgerConflict):
            second.commit([_entry(3, "a")], "r-3", 201, {"seq": 3})
        assert [e["seq"] for e in second.entries()] == [1, 2]
        assert second.recall("r-3") is None
        # Another account is not held by a's lock; the first writer goes on.
        second.commit([_entry(3, "b", "open")], "r-b", 201, {"seq": 3})
        first.commit([_entry(4, "a")], "r-4", 201, {"seq": 4})
        assert [e["seq"] for e in first.account_entries("a")] == [1, 2, 4]
    finally:
        first.close()
        second.close()


def test_grouped_commits_are_durable_when_the_edge_is_told_so(split):
    import asyncio

    from harness.service.storage import open_ledger

    store = open_ledger(split.ledger)
    failures = []
    store.group_commits(failures.append)

    async def commit_and_wait() -> list[int]:
        assert store.pending() is None  # nothing queued yet
        for seq in range(1, 51):
            store.commit([_entry(seq, f"acct-{seq % 5}", "open" if seq <= 5 else "draw")],
                         f"r-{seq}", 201, {"seq": seq})
            assert store.recall(f"r-{seq}") == (201, {"seq": seq})  # at once, from memory
        durable = store.pending()
        assert durable is not None
        await asyncio.wait_for(durable, 10)
        assert store.pending() is None
        reader = open_ledger(split.ledger)  # another connection: only what is on disk
        try:
            return [e["seq"] for e in reader.entries()]
        finally:
            reader.close()

    try:
        assert asyncio.run(commit_and_wait()) == list(range(1, 51))
        assert failures == []
    finally:
        store.close()
