"""Load test: locust users with the harness's personas, every request recorded into one history,
and the same checkers as `run` judging it when the test stops.

    limit-harness serve --port 8080 &
    locust -f loadtests/locustfile.py --headless -u 32 -r 8 -t 30s --host http://127.0.0.1:8080

Locust's own statistics measure throughput and latency; the reconciliation at the end decides
the exit code (1 on any critical or major finding, through locust's `process_exit_code`), and
the four reports go to `$LIMIT_REPORT_DIR` (default `reports/load-<time>/`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from locust import User, between, events, task

import datetime as dt

from harness import gate
from harness.client import Recorder
from harness.convergence import converge_and_check
from harness.history import new_history
from harness.reports import document, write_reports
from harness.targets import HttpTarget, probe
from harness.workload import Workload, load_config

SLA_MS = int(os.environ.get("LIMIT_SLA_MS", "1000"))
SEED = int(os.environ.get("LIMIT_SEED", "0"))


class _Shared:
    """One history, one recorder and one user factory for every locust user of this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recorder: Recorder | None = None
        self.workload: Workload | None = None
        self.users = []

    def setup(self, host: str) -> None:
        with self.lock:
            if self.recorder is not None:
                return
            target = HttpTarget(host, pool_size=64)
            probe(target)
            history = new_history(target.name, False, SLA_MS, seed=SEED)
            history.meta["mode"] = "load"
            self.recorder = Recorder(target, history)
            self.recorder.phase("setup")
            tag = f"load{SEED}t{int(time.time() * 1000) % 10**9}"
            self.workload = Workload(load_config(None, None), random.Random(SEED), tag)
            self.recorder.phase("safety")

    def new_user(self):
        with self.lock:
            user = self.workload.users(len(self.users) + 1)[-1]
            self.users.append(user)
            return user


SHARED = _Shared()


class LimitUser(User):
    wait_time = between(0.005, 0.05)

    def on_start(self) -> None:
        SHARED.setup(self.host)
        self.user = SHARED.new_user()
        for action in SHARED.workload.opens(self.user):
            self._do(action)

    @task
    def act(self) -> None:
        with SHARED.lock:  # the workload's dice are shared; a choice is quick
            action = SHARED.workload.next_action(self.user)
        self._do(action)

    def _do(self, action) -> None:
        recorder = SHARED.recorder
        started = time.perf_counter()
        if action.f == "display":
            op = recorder.display(self.user.process, action.account_id)
        else:
            op = recorder.write(self.user.process, action.f, action.account_id, action.body,
                                action.retry_of)
            with SHARED.lock:
                SHARED.workload.observe(self.user, action, op.index, op.outcome, op.response)
        events.request.fire(
            request_type=action.f, name=action.f, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, context={},
            exception=None if op.outcome != "info" else RuntimeError(op.error or "unknown outcome"))


@events.test_stop.add_listener
def reconcile(environment, **_kwargs) -> None:
    recorder = SHARED.recorder
    if recorder is None:
        return
    _, verdict = converge_and_check(recorder, SLA_MS)
    stamp = dt.datetime.now(dt.timezone.utc)
    report = document.build(
        run_id=document.run_id(stamp, "load"), seed=SEED, target=environment.host,
        mode="load", started=stamp, duration_s=0.0, config={"sla_ms": SLA_MS},
        stats=verdict.stats, findings=verdict.findings,
        replay="locust -f loadtests/locustfile.py (load runs are not replayed bit for bit)",
        policy=gate.load_policy(None))
    passed = report["verdict"] == "pass"
    out = Path(os.environ.get("LIMIT_REPORT_DIR", f"reports/{report['run_id']}"))
    write_reports(report, recorder.history, out)
    print(f"reconciliation: {report['verdict'].upper()} with {len(report['findings'])} finding(s); "
          f"reports in {out}")
    if not passed:
        environment.process_exit_code = 1
