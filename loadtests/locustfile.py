"""Load test: locust users with the harness's personas and weights; every request goes into a
history, and when the test stops the same convergence phase, checkers, reports and gate as
`limit-harness run` judge it. Locust measures throughput and latency; reconciliation decides.

    limit-harness serve --port 8080 &
    locust -f loadtests/locustfile.py --headless -u 32 -r 8 -t 30s --host http://127.0.0.1:8080
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080        # the web UI
    locust -f loadtests/locustfile.py ... --processes 4                    # master + 4 workers

`limit-harness load` runs this file for you (harness/load.py). Roles: every process that runs
users records their operations (`OpLog`) and ships them to the master in chunks; the master (or
the single local process) runs the seeded fault schedule of `$LIMIT_FAULTS` against the target's
chaos API (`limit-harness load` passes `--faults`, default all; by hand the default is none),
and at test stop merges the chunks, converges, checks, writes the reports to `$LIMIT_REPORT_DIR`
(default reports/<run id>/) and sets locust's exit code: 0 pass, 1 gate failed, 2 not judged.
Settings come from LIMIT_* environment variables (harness.load.LoadSettings).

A user sometimes sends two requests for one account at once on purpose: a double tap (two draws),
two devices (a draw and a repay) or a retry of a request still in flight (same request_id).
"""

from __future__ import annotations

import contextlib
import logging
import functools
import os
import ssl
import socket
import sys
import time
import uuid
from pathlib import Path

import gevent
import gevent.lock
import orjson
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import LocustBadStatusCode
from locust.exception import RPCSendError, StopUser
from locust.runners import STATE_MISSING, STATE_STOPPED, MasterRunner, WorkerRunner

from harness import contract
from harness.client import _WRITE_ROUTES, classify_display, classify_write
from harness.driver import dice
from harness.errors import EXIT_UNJUDGED, HarnessError, exit_code
from harness.load import (FLUSH_WAIT_S, PROCESS_STRIDE, REQUEST_TIMEOUT_S, SHIP_INTERVAL_S,
                          LoadClock, LoadRun, LoadSettings, OpLog, http_options,
                          import_judging, save)
from harness.secrets import redact
from harness.targets import Reply
from harness.workload import Action, Race, Workload, load_config

MSG_START = "limit_start"   # master -> workers: this test's run id and seed
MSG_OPS = "limit_ops"       # worker -> master: a chunk of ops
MSG_FLUSH = "limit_flush"   # master -> workers: stop your users and send your final chunk
LOCAL = "local"             # the worker id of a single local process's own users
SHIP_ROUNDS_MAX = 10**8     # shipping rounds per test: years at SHIP_INTERVAL_S
NEMESIS_SLEEP_MAX_S = 0.25  # so a stop is noticed quickly between two distant moves
NEMESIS_MOVES_MAX = 10**7
FLUSH_POLL_S = 0.05
# Business answers the contract gives a well-formed request: successes in locust's statistics
# (the checkers still judge whether each was right). Anything else that is not 2xx fails.
BUSINESS_ANSWERS = ("exists", "insufficient_limit", "outstanding_balance", "overpayment",
                    "account_not_active", "display_unavailable")

log = logging.getLogger("limit-harness.load")

try:
    SETTINGS = LoadSettings.from_env(os.environ)
    PERSONAS = load_config(None, None)
    HEADERS = http_options(SETTINGS.headers).resolved_headers()  # secrets from here on
except HarnessError as exc:
    print(redact(f"limit-harness load: error: {exc}"), file=sys.stderr)
    sys.exit(EXIT_UNJUDGED)


class _Process:
    """This locust process's part in the current test (one test at a time; the web UI may run
    several one after the other)."""

    def __init__(self) -> None:
        self.run: LoadRun | None = None           # master or local: the test being judged
        self.error: str | None = None             # why there is no run
        self.nemesis: gevent.Greenlet | None = None
        self.expected: set[str] = set()           # worker ids that should send a final chunk
        self.log: OpLog | None = None             # worker or local: this process's ops
        self.tag = "ld"                           # unique per process and test: ids start with it
        self.seed = SETTINGS.seed
        self.announced: dict = {}                 # what the master said in MSG_START
        self.users = 0                            # users started in this test
        self.streams = 0                          # this worker's first dice stream
        self.shipping = gevent.lock.Semaphore()   # one sender at a time keeps chunks in order


STATE = _Process()


def _masters(runner) -> bool:
    return not isinstance(runner, WorkerRunner)


def _runs_users(runner) -> bool:
    return not isinstance(runner, MasterRunner)


# == users ======================================================================================

class LimitUser(FastHttpUser):
    """One generated user with a persona; a subclass per persona carries its weight."""

    abstract = True
    persona = ""
    network_timeout = SETTINGS.timeout_s
    connection_timeout = SETTINGS.timeout_s
    # Verify the target's certificate, as `run` does, unless told not to (locust's default is
    # not to verify); a --ca-bundle is what it is verified against.
    insecure = SETTINGS.insecure
    if SETTINGS.ca_bundle is not None:
        ssl_context_factory = staticmethod(functools.partial(
            ssl.create_default_context, cafile=str(SETTINGS.ca_bundle)))
    concurrency = 4  # a race sends two requests on this user's own connections
    wait_time = between(*(ms / 1000 for ms in SETTINGS.think_ms or
                          (PERSONAS.think_ms_min, PERSONAS.think_ms_max)))

    def on_start(self) -> None:
        STATE.users += 1
        process = STATE.users
        assert process < PROCESS_STRIDE, "more users in one process than process ids"
        self.process = process
        # A workload per user: its own dice (apart from every other user's, on any worker), and
        # a tag that keeps its ids apart from every other user's, worker's and run's.
        self.workload = Workload(PERSONAS, dice(STATE.seed, 10 + STATE.streams + process),
                                 f"{STATE.tag}-p{process}")
        self.user = _user_for(self.workload, self.persona, process)
        self._post_headers = {**HEADERS, "Content-Type": "application/json"}
        self._get_headers = dict(HEADERS)
        for action in self.workload.opens(self.user):
            self._observed(action)

    @task
    def act(self) -> None:
        if STATE.log is not None and STATE.log.full:
            raise StopUser()  # past the recording bound: load the judge cannot see is not sent
        race = self.workload.next_race(self.user)  # the workload's races, as `run` sends them
        if race is None:
            self._observed(self.workload.next_action(self.user))
        else:
            self._race(race)

    def _observed(self, action: Action) -> None:
        self.workload.observe(self.user, action, *self._send(action))

    # -- same-account concurrency, on purpose ----------------------------------------------------
    def _race(self, race: Race) -> None:
        """The first write from a second greenlet, then the second from this one, before the
        first has been answered; both folded into the user's belief in commit order."""
        sent: dict = {}
        first = gevent.spawn(self._send, race.first, sent)
        gevent.sleep(0)  # the other greenlet invokes and sends until it waits for its answer
        index = sent.get("index")
        race.first_invoked(-1 if index is None else index)  # -1: not recorded, still a retry
        second = self._send(race.second)
        first.join(timeout=REQUEST_TIMEOUT_S * 2)
        if first.successful():
            self.workload.observe_race(self.user, [(race.first, *first.value),
                                                   (race.second, *second)])

    # -- one request, recorded and classified --------------------------------------------------
    def _send(self, action: Action, sent: dict | None = None) -> tuple[int, str, object]:
        """(its op index, -1 unrecorded; its outcome; the answer's body)."""
        oplog = STATE.log
        if oplog is not None and oplog.full:
            raise StopUser()
        op = oplog.invoke(self.process, action.f, action.account_id, action.body,
                          action.retry_of) if oplog is not None else None
        if sent is not None:
            sent["index"] = op.index if op is not None else None
        method, path = _route(action)
        body = orjson.dumps(action.body) if action.body is not None else None
        with self.client.request(method, path, name=action.f, data=body, catch_response=True,
                                 headers=self._post_headers if body else self._get_headers
                                 ) as response:
            reply = reply_of(response)
            outcome, error = (classify_display(reply) if action.f == "display"
                              else classify_write(action.f, reply))
            problem = locust_problem(reply, outcome, error)
            if problem is None:
                response.success()
            else:
                response.failure(problem)
        if op is not None:
            oplog.complete(op, outcome, reply.status, reply.body, error)
        return (op.index if op is not None else -1), outcome, reply.body


def _user_for(workload: Workload, persona: str, process: int):
    """The workload's user for `persona`: `Workload.users` gives every persona with a weight
    one user first, in name order, so user n+1 of n+1 has the n-th persona."""
    names = sorted(name for name, weight in PERSONAS.mix.items() if weight > 0)
    user = workload.users(names.index(persona) + 1)[-1]
    assert user.persona == persona, (user.persona, persona)
    user.process = process
    return user


def _route(action: Action) -> tuple[str, str]:
    if action.f == "display":
        return "GET", f"/v1/accounts/{action.account_id}/display"
    if action.f == "open":
        return "POST", "/v1/accounts"
    return "POST", f"/v1/accounts/{action.account_id}/{_WRITE_ROUTES[action.f]}"


def reply_of(response) -> Reply:
    """A FastHttpUser response as the harness's Reply: no status when nothing usable came back
    (a timeout, a reset, a body cut short), so the classification calls it `info`."""
    error = getattr(response, "error", None)
    status = response.status_code or None
    if status is None or (error is not None and not isinstance(error, LocustBadStatusCode)):
        return Reply(None, None, f"{type(error).__name__}: {error}" if error else "no answer")
    try:
        raw = response.content
    except Exception as exc:  # noqa: BLE001 - any failure to read the body: outcome unknown
        return Reply(None, None, f"{type(exc).__name__}: {exc}")
    if not raw:
        return Reply(status, None)
    try:
        return Reply(status, orjson.loads(raw))
    except orjson.JSONDecodeError:
        return Reply(status, None, f"contract: body is not JSON: {raw[:80]!r}")


def locust_problem(reply: Reply, outcome: str, error: str | None) -> str | None:
    """None when locust should count the answer a success: an acknowledgement, or a business
    answer with the status the contract gives it; else why it is a failure."""
    if outcome == "ok":
        return None
    if outcome == "fail" and error is None:
        code = reply.body.get("error") if isinstance(reply.body, dict) else None
        if code in BUSINESS_ANSWERS and contract.ERRORS[code] == reply.status:
            return None
        return f"unexpected {reply.status} {code or '(no error code)'}"
    return error or f"status {reply.status}"


for _persona, _weight in PERSONAS.mix.items():
    if _weight > 0:  # locust finds user classes among the module's names
        _name = "".join(part.title() for part in _persona.split("_")) + "User"
        globals()[_name] = type(_name, (LimitUser,), {"persona": _persona, "weight": _weight,
                                                      "__module__": __name__})


# == every role: start and stop ===================================================================

@events.init.add_listener
def _on_init(environment, runner=None, **_kwargs) -> None:
    # gevent's loop caches "now" since it was created, before this file's imports: without a
    # refresh locust's --run-time timer starts seconds in the past and the test runs short.
    if _masters(runner) and SETTINGS.record:
        import_judging()  # after locust forked its workers, before the test's clock starts
    gevent.get_hub().loop.update_now()
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_OPS, _on_ops)
        environment.events.worker_connect.add_listener(
            lambda client_id, **_kwargs: _on_worker_connect(runner, client_id))
    elif isinstance(runner, WorkerRunner):
        runner.register_message(MSG_START, _on_announce)
        runner.register_message(MSG_FLUSH, _on_flush)


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    runner = environment.runner
    if _masters(runner):
        _start_judging(environment)
    if _runs_users(runner):
        _start_recording(environment)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    runner = environment.runner
    if _runs_users(runner) and STATE.log is not None:
        _ship(environment, STATE.log, final=True)
    if _masters(runner):
        _finish(environment)


# == the users' side: record and ship ===========================================================

def _start_recording(environment) -> None:
    runner = environment.runner
    STATE.users = 0
    STATE.tag = f"ld{uuid.uuid4().hex[:8]}"
    local = not isinstance(runner, WorkerRunner)
    STATE.seed = SETTINGS.seed if local else STATE.announced.get("seed", SETTINGS.seed)
    STATE.streams = max(0, getattr(runner, "worker_index", 0)) * PROCESS_STRIDE
    STATE.log = None
    if not SETTINGS.record or (local and STATE.run is None):
        return
    run_id = STATE.run.run_id if local else STATE.announced.get("run")
    about = {"pid": os.getpid(), "host": socket.gethostname(),
             "index": max(0, getattr(runner, "worker_index", 0))}
    STATE.log = OpLog(run_id, STATE.tag, LoadClock(), about)
    gevent.spawn(_ship_loop, environment, STATE.log)


def _ship_loop(environment, oplog: OpLog) -> None:
    for _ in range(SHIP_ROUNDS_MAX):
        gevent.sleep(SHIP_INTERVAL_S)
        if oplog.closed:
            return
        _ship(environment, oplog, final=False)


def _ship(environment, oplog: OpLog, final: bool) -> None:
    runner = environment.runner
    with STATE.shipping:
        if oplog.closed:
            return
        if final and isinstance(runner, WorkerRunner):
            _send_stats(environment)  # before the final chunk: the master's numbers are whole
        for chunk in oplog.chunks(final):
            if isinstance(runner, WorkerRunner):
                runner.send_message(MSG_OPS, chunk)
            elif STATE.run is not None:
                STATE.run.collector.receive(LOCAL, chunk)


def _send_stats(environment) -> None:
    """Locust's latest numbers now, not at the next 3 s report: what the master judges must
    include every request up to the stop."""
    runner = environment.runner
    data: dict = {}
    environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
    runner.send_message("stats", data)


def _on_announce(environment, msg, **_kwargs) -> None:
    STATE.announced = dict(msg.data or {})


def _on_flush(environment, msg, **_kwargs) -> None:
    runner = environment.runner
    if runner.state != STATE_STOPPED:
        runner.stop()  # its test_stop ships the final chunk
    if STATE.log is not None and not STATE.log.closed:
        _ship(environment, STATE.log, final=True)
    elif STATE.log is None or STATE.log.run != (msg.data or {}).get("run"):
        # Joined after the test began, or never got users: say so, with nothing in it.
        empty = OpLog((msg.data or {}).get("run"), STATE.tag, LoadClock(),
                      {"pid": os.getpid(), "host": socket.gethostname(),
                       "index": max(0, runner.worker_index)})
        for chunk in empty.chunks(final=True):
            runner.send_message(MSG_OPS, chunk)


# == the master's side: faults, then the judgment =================================================

def _start_judging(environment) -> None:
    STATE.run, STATE.error, STATE.expected = None, None, set()
    if not SETTINGS.record:
        return
    if not environment.host:
        STATE.error = "no target: pass --host URL (or fill in the host in locust's web UI)"
        log.error("limit-harness load: %s", STATE.error)
        return
    try:
        STATE.run = LoadRun(SETTINGS, environment.host)
    except HarnessError as exc:
        STATE.error = str(exc)
        log.error("limit-harness load: %s", redact(str(exc)))
        return
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        STATE.expected = {node.id for node in runner.clients.all if node.state != STATE_MISSING}
        runner.send_message(MSG_START, _announcement())
    STATE.nemesis = gevent.spawn(_nemesis_loop, STATE.run)


def _announcement() -> dict:
    return {"run": STATE.run.run_id, "seed": SETTINGS.seed}


def _on_worker_connect(runner: MasterRunner, client_id: str) -> None:
    if STATE.run is not None:  # joined mid-test: it must know the run, and answer the flush
        STATE.expected.add(client_id)
        runner.send_message(MSG_START, _announcement(), client_id=client_id)


def _on_ops(environment, msg, **_kwargs) -> None:
    if STATE.run is not None:
        STATE.run.collector.receive(msg.node_id, msg.data)


def _nemesis_loop(run: LoadRun) -> None:
    for _ in range(NEMESIS_MOVES_MAX):
        if run is not STATE.run or run.stopping:
            return
        gevent.sleep(min(run.nemesis_step(), NEMESIS_SLEEP_MAX_S))


def _finish(environment) -> None:
    run = STATE.run
    if not SETTINGS.record:
        print("limit-harness load: recording is off (LIMIT_RECORD=0): nothing was judged")
        environment.process_exit_code = EXIT_UNJUDGED
        return
    if run is None:
        print(redact(f"limit-harness load: error: {STATE.error or 'the load test never started'}"))
        environment.process_exit_code = EXIT_UNJUDGED
        return
    try:
        _stop_nemesis(run)
        expected = _await_final_chunks(environment, run)
        judged = run.finish(expected, _locust_stats(environment), _config(environment))
        report_dir = SETTINGS.report_dir or Path("reports") / judged.report["run_id"]
        save(judged, report_dir)
    except HarnessError as exc:
        print(redact(f"limit-harness load: error: {exc}"))
        environment.process_exit_code = EXIT_UNJUDGED
        return
    except Exception:  # noqa: BLE001 - a harness bug must not pass for a verdict
        log.exception("limit-harness load: internal error while judging the load test")
        environment.process_exit_code = EXIT_UNJUDGED
        return
    finally:
        STATE.run = None
    from harness import console  # after the fork: see harness.load's docstring

    print(redact(console.run_summary(judged.report, report_dir)))
    environment.process_exit_code = exit_code(judged.report["verdict"] == "pass")


def _stop_nemesis(run: LoadRun) -> None:
    run.stopping = True
    if STATE.nemesis is not None:
        STATE.nemesis.join(timeout=REQUEST_TIMEOUT_S * 2)
        STATE.nemesis.kill(block=False)  # a fault request still unanswered is `info`


def _await_final_chunks(environment, run: LoadRun) -> set[str]:
    """Ask every worker for its final chunk and wait for them, at most FLUSH_WAIT_S: no longer
    for a worker locust already knows is gone."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return set()
    expected = STATE.expected | set(run.collector.logs)
    for worker_id in expected:
        if not _final(run, worker_id) and _alive(runner, worker_id):
            with contextlib.suppress(RPCSendError):  # gone since: it will not answer either
                runner.send_message(MSG_FLUSH, _announcement(), client_id=worker_id)
    deadline_s = time.monotonic() + FLUSH_WAIT_S
    while time.monotonic() < deadline_s:
        if all(_final(run, w) or not _alive(runner, w) for w in expected):
            break
        gevent.sleep(FLUSH_POLL_S)
    return expected


def _final(run: LoadRun, worker_id: str) -> bool:
    found = run.collector.logs.get(worker_id)
    return found is not None and found.final


def _alive(runner, worker_id: str) -> bool:
    node = runner.clients.get(worker_id)
    return node is not None and node.state != STATE_MISSING


def _locust_stats(environment) -> dict:
    """Locust's numbers for the report: requests, failures, rates, latency percentiles."""
    stats = environment.stats
    out = _entry_stats(stats.total)
    out["failure_ratio"] = round(stats.total.fail_ratio, 6)
    out["by_name"] = {f"{e.method} {e.name}": _entry_stats(e)
                      for e in sorted(stats.entries.values(), key=lambda e: (e.name, e.method))}
    out["users"] = getattr(environment.runner, "target_user_count", None)
    return out


def _entry_stats(entry) -> dict:
    return {"requests": entry.num_requests, "failures": entry.num_failures,
            "requests_per_s": round(entry.total_rps, 1),
            "latency_ms": {"p50": entry.get_response_time_percentile(0.50),
                           "p95": entry.get_response_time_percentile(0.95),
                           "p99": entry.get_response_time_percentile(0.99),
                           "max": round(entry.max_response_time or 0, 1),
                           "avg": round(entry.avg_response_time, 1)}}


def _config(environment) -> dict:
    """The report's config: what `limit-harness load` passed, else what this locust ran with."""
    if SETTINGS.config is not None:
        return dict(SETTINGS.config)
    options, runner = environment.parsed_options, environment.runner
    return {"target": environment.host, "users": getattr(runner, "target_user_count", None),
            "spawn_rate": getattr(options, "spawn_rate", None),
            "duration_s": getattr(options, "run_time", None),
            "processes": max(1, len(STATE.expected)), "faults": SETTINGS.faults,
            "policy": SETTINGS.policy, "seed": SETTINGS.seed, "sla_ms": SETTINGS.sla_ms,
            "headers": sorted(SETTINGS.headers)}
