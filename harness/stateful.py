"""The stateful property test: hypothesis writes programs of limit-service operations and faults,
the checkers judge what each program did, and a failing program is shrunk to a short one.

- `LimitMachine`: a `RuleBasedStateMachine` over the embedded reference service.
- `machine_for(target_factory=None, sla_ms=1000, bugs=(), ...)`: a machine class for any target
  (its `.TestCase` runs under pytest or unittest).

Every operation goes through one `Recorder` into one `History` per program. The machine keeps a
tiny model of each account, built from acknowledged writes, only to aim amounts at its edges
(exactly the available, one fen over, ...); it never judges anything. Judging is the checkers'
alone: after each step the cheap ones run over the history so far, and at teardown the whole
check runs after a convergence phase.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from hypothesis import HealthCheck, Phase
from hypothesis.errors import StopTest
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize,
                                 multiple, precondition, rule)

from . import checkers, contract, oracle, strategies
from .analysis import CheckConfig
from .checkers import Verdict
from .client import Recorder, ledger_head_seq
from .convergence import HARNESS, accounts_of, converge_and_check, fetch_ledger, let_sync
from .errors import UsageError
from .findings import Finding, FindingsError, raise_for_findings
from .history import new_history
from .service import bugs as catalogue
from .targets import Target, open_target, probe
from .workload import RACES, committed_seq

__all__ = ["LimitMachine", "MachineStats", "machine_for", "machine_settings"]

CLIENT = 1  # the process number of the machine's client ops; 0 is the harness's own
# Simulated time is free, so a program may hold events back for seconds; against a real
# service every millisecond of delay is waited out at teardown, so it stays short.
SIM_DELAY_MS_MAX = 5_000
REAL_DELAY_MS_MAX = 250
REAL_WAIT_MS_MAX = 300  # `let_time_pass` on a real target sleeps at most this
# Short waits let the reference service sync (20 ms lag) and repair (100 ms anti-entropy + 200 ms
# grace); long ones outlast its display snapshots (every 2 s), which a restore-from-snapshot story
# needs. Time only passes when a program says so (plus 1 ms per op), so both get rules of their own.
WAITS_MS = (25, 250, 1_000)
WAIT_MS_MAX = 1_500
LONG_WAITS_MS = (2_500, 5_000)
LONG_WAIT_MS_MAX = 10_000
OP_MS = 1
STORY_PAUSE_MS = 10  # less than the reference service's 20 ms sync lag
SYNC_WAIT_MS = 25  # more than it: what an operator's maintenance waits for before it starts
STATUS_REASONS = {"active": "restored", "frozen": "risk-review", "overdue": "payment-overdue",
                  "closed": "user-closed"}
LIMIT_REASON = "risk-policy"
REAL_TAG_MAX = 16  # characters of run tag prefixed to ids on a shared, real service


# -- the machine ----------------------------------------------------------------------------------

@dataclass
class Sent:
    """A write the machine sent: what `retry` resends with the same request_id."""

    kind: str
    account_id: str
    body: dict
    index: int  # its op in the history

    def __repr__(self) -> str:  # what a failing program shows if it ever prints one
        return f"Sent({self.kind} {self.account_id} {self.body.get('request_id')})"


@dataclass
class MachineStats:
    """Counts over all programs of one machine class, for progress lines and benchmarks."""

    started: int = 0
    finished: int = 0  # programs run to the end (or to a failure): hypothesis's examples
    abandoned: int = 0  # programs hypothesis gave up on (out of choices): not examples
    failures: int = 0
    started_at_s: float = field(default_factory=time.monotonic)
    first_failure_s: float | None = None
    examples_to_failure: int | None = None
    on_program: Callable[["MachineStats"], None] | None = None

    def failed(self) -> None:
        self.failures += 1
        if self.first_failure_s is None:
            self.first_failure_s = time.monotonic() - self.started_at_s
            self.examples_to_failure = self.finished + 1  # this one, not finished yet


def machine_settings(max_examples: int = 100, stateful_step_count: int = 30,
                     **overrides) -> Settings:
    """Settings for running a machine on a small (2-core) machine."""
    chosen = dict(
        max_examples=max_examples,
        stateful_step_count=stateful_step_count,
        # Every example is a whole program against a service plus a full reconciliation; on a
        # 2-core CI box next to other suites a slow example is not a failing one, so neither a
        # per-example deadline nor the too_slow check says anything about the service.
        deadline=None,
        # Programs of 30+ steps, each with an amount aimed at an edge, legitimately use a lot of
        # the choice buffer, and aimed strategies filter (ids, edges); neither is a mistake in
        # the test, so the checks for them would only abort long runs.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
        # No explain phase: it re-runs the failing program many times to annotate it, which
        # doubles the time to report a bug for little the checkers' diff does not already say.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
    chosen.update(overrides)
    return Settings(**chosen)


def _sync_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The fault kinds `inject_fault` draws from: maintenance has rules of its own."""
    return tuple(k for k in kinds if k != "maintenance_reset")


def _inject_fault_rule(bundle: Bundle, kinds: tuple[str, ...], delay_ms_max: int):
    """The rule that injects a sync fault drawn from `kinds`: the machine's own, and one per
    target whose kinds or delays differ (`machine_for`)."""
    @precondition(lambda self: bool(_sync_kinds(self.fault_kinds)))
    @rule(target=bundle, fault=strategies.faults(kinds, max_delay_ms=delay_ms_max))
    def inject_fault(self, fault):
        return self._inject(fault)
    return inject_fault


def _embedded(bugs: tuple[str, ...]) -> Callable[[], Target]:
    def make() -> Target:
        # A constant seed: the service's fault dice must replay identically when hypothesis
        # replays a program, or shrinking would chase a moving target.
        return open_target(None, seed=0, bugs=bugs)
    return make


class LimitMachine(RuleBasedStateMachine):
    """Programs of account opens, draws, repayments, limit and status changes, idempotent
    retries, faults and time passing against one target; judged by the checkers."""

    accounts = Bundle("accounts")
    requests = Bundle("requests")
    faults_on = Bundle("faults_on")

    # Configuration; `machine_for` makes a subclass with its own.
    target_factory: Callable[[], Target] = staticmethod(_embedded(()))
    sla_ms: int = 1000
    fault_kinds: tuple[str, ...] = contract.FAULT_KINDS
    step_checks: bool | None = None  # None: on for simulated targets only
    run_tag: str = ""
    ledger_seen_seq: int = 0  # a seq the shared service's ledger has surely reached
    stats: MachineStats = MachineStats()
    _programs = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        cls.stats.started += 1
        self.target = cls.target_factory()
        n = next(cls._programs)
        # A real service outlives the program: ids get a per-program prefix so that programs
        # never see each other's accounts or request ids. A fresh embedded service needs none,
        # which keeps the ids in a failing program's findings as short as they were drawn.
        self.tag = "" if self.target.simulated else f"{cls.run_tag}p{n}-"[-REAL_TAG_MAX:]
        history = new_history(self.target.name, self.target.simulated, cls.sla_ms, program=n)
        # On a shared service, only what follows the ledger's head now is this program's;
        # the last program's head is where the search for it starts.
        if not self.target.simulated:
            cls.ledger_seen_seq = ledger_head_seq(self.target, cls.ledger_seen_seq)
        self.recorder = Recorder(self.target, history, ledger_after_seq=cls.ledger_seen_seq)
        self.model: dict[str, oracle.State] = {}
        self.requests_sent = 0
        self.checked_ops = 0
        self.failed = False
        self.verdict: Verdict | None = None  # the whole check's, once teardown ran it
        self.step_checks_on = (self.target.simulated if cls.step_checks is None
                               else cls.step_checks)

    # -- helpers -----------------------------------------------------------------------------
    def _request_id(self) -> str:
        self.requests_sent += 1
        return f"{self.tag}r{self.requests_sent}"

    def _done(self, tick: bool = True) -> None:
        """After a write or fault on simulated time, 1 ms passes, so the history orders the ops
        one after the other (the checkers order by timestamps; ops sharing a millisecond count
        as racing). No more, and nothing for a read: time that single ops stood for would tie
        a failing program's timing to how many steps it has, and the shrinker could not delete
        a step without also moving the failure (an explicit wait says the same in one step).
        Then the cheap checkers judge the history so far."""
        if tick and self.target.simulated:
            self.target.wait_ms(OP_MS)
        self._check_so_far()

    def _write(self, kind: str, account_id: str, body: dict) -> Sent:
        op = self.recorder.write(CLIENT, kind, account_id, body)
        if op.outcome == "ok":
            self._believe(kind, account_id, body)
        self._done()
        return Sent(kind, account_id, body, op.index)

    def _believe(self, kind: str, account_id: str, body: dict) -> None:
        """Fold an acknowledged write into the aiming model (by the oracle's own rules)."""
        if kind != "open" and account_id not in self.model:
            return
        self.model[account_id] = oracle.after_write(self.model.get(account_id), kind,
                                                    body[oracle.VALUE_FIELD[kind]])

    def _headroom(self, account_id: str) -> int | None:
        # What the account could lend if it were active: for a frozen, overdue or closed
        # account that is what a bug in the status check would hand out.
        state = self.model.get(account_id)
        return None if state is None else max(0, state.credit_line - state.outstanding)

    def _outstanding(self, account_id: str) -> int | None:
        state = self.model.get(account_id)
        return None if state is None else max(0, state.outstanding)

    def _fail(self, findings: list[Finding], context: str, verdict: Verdict | None = None) -> None:
        try:
            raise_for_findings(findings, context, verdict)
        except FindingsError:
            self.failed = True
            type(self).stats.failed()
            raise

    # -- rules -------------------------------------------------------------------------------
    # Rule names and arguments are what a failing program shows, so they say what a user did.

    _open_args = dict(account_id=strategies.account_ids(),
                      product=st.sampled_from(contract.PRODUCTS),
                      credit_line=strategies.credit_lines())

    # Every story needs an account, and an initialize rule is exempt from hypothesis's swarm
    # testing (which switches rules off per program): without it a good share of programs
    # would only inject faults into an empty service.
    @initialize(target=accounts, **_open_args)
    def open_account(self, account_id, product, credit_line):
        return self._open(account_id, product, credit_line)

    @rule(target=accounts, **_open_args)
    def open_another_account(self, account_id, product, credit_line):
        return self._open(account_id, product, credit_line)

    def _open(self, account_id: str, product: str, credit_line: int):
        account_id = (self.tag + account_id)[:64]
        known = account_id in self.model
        self._write("open", account_id, {"account_id": account_id, "product": product,
                                         "credit_line": credit_line,
                                         "request_id": self._request_id()})
        # The same id drawn twice is a (wanted) re-open attempt; one bundle entry is enough.
        return multiple() if known else account_id

    @rule(target=requests, account=accounts, data=st.data())
    def draw(self, account, data):
        amount = data.draw(strategies.amounts(available=self._headroom(account)), label="amount")
        return self._write("draw", account, {"amount": amount, "request_id": self._request_id()})

    @rule(target=requests, account=accounts, data=st.data())
    def repay(self, account, data):
        amount = data.draw(strategies.amounts(outstanding=self._outstanding(account)),
                           label="amount")
        return self._write("repay", account, {"amount": amount, "request_id": self._request_id()})

    @rule(target=requests, account=accounts, data=st.data())
    def change_limit(self, account, data):
        state = self.model.get(account)
        line = data.draw(strategies.credit_lines(
            current=None if state is None else state.credit_line,
            outstanding=self._outstanding(account)), label="credit_line")
        return self._write("limit", account, {"credit_line": line, "reason": LIMIT_REASON,
                                              "request_id": self._request_id()})

    @rule(target=requests, account=accounts, status=st.sampled_from(contract.STATUSES))
    def change_status(self, account, status):
        return self._set_status(account, status)

    def _set_status(self, account: str, status: str) -> Sent:
        kind, body = self._status_write(status)
        return self._write(kind, account, body)

    @rule(target=requests, account=accounts, story=strategies.persona_stories())
    def act_out_persona_story(self, account, story):
        # A persona's whole story in one step (e.g. overdue_repayer: draw, go overdue, repay
        # everything, draw again). Single-op rules reach the same states, but only by luck
        # of ordering: a story is how a sequence that real users follow gets tried often.
        sent: list[Sent] = []
        for step in story:
            # A person acting a story pauses between steps (as `run`'s users think), long
            # enough that the service syncs now and then within it: a later step may meet
            # the display with or without an earlier one, as it would in the app.
            self._wait(STORY_PAUSE_MS)
            if step.f == "wait":
                self._wait(step.value)
            elif step.f == "display":
                self.read_display(account)
            elif step.f == "retry":
                if sent:
                    self.retry(sent[-1])
            else:
                state = self.model.get(account, oracle.State(0, 0, "active"))
                sent.append(self._write(step.f, account, step.request(state, self._request_id())))
        return multiple(*sent)

    @rule(target=requests, account=accounts, race=st.sampled_from(RACES), data=st.data())
    def send_two_at_once(self, account, race, data):
        # Two requests for one account at once (workload.RACES tells the stories). On a
        # simulated target hypothesis also picks how they interleave over the service's await
        # points, so a race shrinks like any other step; a real target interleaves as it will.
        state = self.model.get(account, oracle.State(0, 0, "active"))
        first, second = self._race_writes(race, state, data)
        ops = [self.recorder.invoke_write(CLIENT, first[0], account, first[1])]
        retry_of = ops[0].index if race == "retry_in_flight" else None
        ops.append(self.recorder.invoke_write(CLIENT, second[0], account, second[1], retry_of))
        choose = None
        if self.target.simulated:
            def choose(n: int) -> int:
                return data.draw(st.integers(0, n - 1), label="which runs next")
        self.recorder.send_at_once(ops, choose)
        # Acknowledged writes are believed in the order they committed (their seq).
        for op in sorted(ops, key=lambda op: committed_seq(op.response)):
            if op.outcome == "ok" and op.retry_of is None:
                self._believe(op.f, account, op.request)
        self._done()
        return multiple(*(Sent(op.f, account, op.request, op.index) for op in ops
                          if op.retry_of is None))

    def _race_writes(self, race: str, state: oracle.State, data) -> tuple[tuple, tuple]:
        """(f, body) of the two writes of a race, aimed at the edges like single writes."""
        headroom = max(0, state.credit_line - state.outstanding)
        owed = max(0, state.outstanding)
        if race == "double_tap":
            amount = data.draw(strategies.amounts(available=headroom), label="amount")
            return (("draw", {"amount": amount, "request_id": self._request_id()}),
                    ("draw", {"amount": amount, "request_id": self._request_id()}))
        if race == "retry_in_flight":
            body = {"amount": data.draw(strategies.amounts(available=headroom), label="amount"),
                    "request_id": self._request_id()}
            return ("draw", body), ("draw", dict(body))
        if race == "back_office":
            return (("repay", {"amount": max(1, owed), "request_id": self._request_id()}),
                    self._status_write("overdue"))
        if owed > 1:  # two devices repay the balance in two parts
            part = data.draw(st.integers(1, owed - 1), label="part")
            return (("repay", {"amount": part, "request_id": self._request_id()}),
                    ("repay", {"amount": owed - part, "request_id": self._request_id()}))
        amount = data.draw(strategies.amounts(available=headroom), label="amount")
        return (("draw", {"amount": amount, "request_id": self._request_id()}),
                ("repay", {"amount": max(1, owed), "request_id": self._request_id()}))

    def _status_write(self, status: str) -> tuple[str, dict]:
        return "status", {"status": status, "reason": STATUS_REASONS[status],
                          "request_id": self._request_id()}

    @rule(request=requests)
    def retry(self, request):
        # The same request_id again: the contract says the original outcome comes back and no
        # second entry is written. The model is not touched: a retry changes nothing.
        self.recorder.write(CLIENT, request.kind, request.account_id, dict(request.body),
                            retry_of=request.index)
        self._done()

    @rule(account=accounts)
    def read_display(self, account):
        self.recorder.display(CLIENT, account)
        # A read changes nothing, so it takes no time either: what follows meets the service
        # exactly as it would without the read, and the shrinker may delete reads freely.
        self._done(tick=False)

    # Zero arguments and a name that sorts first on purpose: hypothesis orders rules by
    # target, arguments, then name, and the shrinker turns steps into the first rule where it
    # can. That rule had better change nothing and take no time, or piles of it would stand
    # in for the time or the effect of the steps they replaced.
    @rule()
    def check_all_displays(self):
        for account_id in accounts_of(self.recorder.history):
            self.recorder.display(CLIENT, account_id)
            self._done(tick=False)

    @rule(ms=st.one_of(st.sampled_from(WAITS_MS), st.integers(1, WAIT_MS_MAX)))
    def let_time_pass(self, ms):
        self._wait(ms)

    @rule(ms=st.one_of(st.sampled_from(LONG_WAITS_MS), st.integers(WAIT_MS_MAX, LONG_WAIT_MS_MAX)))
    def come_back_later(self, ms):
        self._wait(ms)

    def _wait(self, ms: int) -> None:
        # Real time is not free: a real target waits for its read model to catch up, at most
        # a bounded while (simulated time has already shown the long stories; against a real
        # service they would cost seconds each).
        if self.target.simulated:
            self.target.wait_ms(ms)
        else:
            let_sync(self.target, min(ms, REAL_WAIT_MS_MAX))

    inject_fault = _inject_fault_rule(faults_on, _sync_kinds(contract.FAULT_KINDS),
                                      SIM_DELAY_MS_MAX)

    # A botched maintenance is an operator's story, not the sync pipe's, and each of its two
    # modes is a story of its own (the app shows nothing; the app shows older numbers): rules
    # of their own give each the share of steps any other fault gets, instead of a twelfth of
    # inject_fault's. Maintenance starts on a settled service (what was written has synced),
    # as an operator's would; events still in flight under a delay or pause stay in flight.
    # (Without the settling wait, a restore mostly lands before the last change reached the
    # display, and the snapshot-watermark story was missed in 2 of 7 seeded searches.)
    @precondition(lambda self: "maintenance_reset" in self.fault_kinds)
    @rule()
    def maintenance_wipes_display(self):
        self._wait(SYNC_WAIT_MS)
        self._inject({"kind": "maintenance_reset", "mode": "clear"})

    @precondition(lambda self: "maintenance_reset" in self.fault_kinds)
    @rule()
    def maintenance_restores_old_snapshot(self):
        self._wait(SYNC_WAIT_MS)
        self._inject({"kind": "maintenance_reset", "mode": "snapshot"})

    def _inject(self, fault: dict):
        op = self.recorder.add_fault(HARNESS, dict(fault))
        self._done()
        if op.outcome != "ok" or fault["kind"] == "maintenance_reset":
            return multiple()  # nothing to remove later: refused, unknown, or one shot
        return op.response["fault_id"]

    @rule(fault_id=consumes(faults_on))
    def remove_fault(self, fault_id):
        self.recorder.remove_fault(HARNESS, fault_id)
        self._done()

    # -- judging -----------------------------------------------------------------------------
    def _check_so_far(self) -> None:
        """The cheap checkers over the history so far, after every step that added an op. A
        rule-level check rather than an @invariant: hypothesis prints every invariant call in
        the failing program, which would double its length for nothing."""
        history = self.recorder.history
        if not self.step_checks_on or self.failed:
            return
        judged = sum(1 for op in history.ops if op.f != "ledger")
        if judged == self.checked_ops or not any(op.is_write for op in history.ops):
            return
        self.checked_ops = judged
        ledger = fetch_ledger(self.recorder)
        # Convergence is judged at the end; mid-program there is no convergence phase yet, so
        # every checker judges what it can of the history so far.
        verdict = checkers.check(history, ledger, CheckConfig(sla_ms=self.sla_ms),
                                 with_stats=False)
        self._fail(verdict.findings, f"during the program, against {self.target.name}")

    def teardown(self):
        cls = type(self)
        # Hypothesis abandons a program that ran out of choices (StopTest) and calls teardown
        # on the way out: that program is not an example, and judging its half would only
        # waste a convergence phase.
        abandoned = isinstance(sys.exc_info()[1], StopTest)
        try:
            if not (self.failed or abandoned) and self.recorder.history.ops:
                _, verdict = converge_and_check(self.recorder, self.sla_ms)
                self.verdict = verdict
                self._fail(verdict.findings, f"after convergence, against {self.target.name}",
                           verdict)
        finally:
            try:
                history = self.recorder.history
                if not self.target.simulated and any(op.f == "fault_add" for op in history.ops):
                    # Leave a shared service as we found it, even when the program failed.
                    self.recorder.remove_fault(HARNESS, None)
            finally:
                self.target.close()
                if abandoned:
                    cls.stats.abandoned += 1
                else:
                    cls.stats.finished += 1
                if cls.stats.on_program is not None:
                    cls.stats.on_program(cls.stats)


LimitMachine.TestCase.settings = machine_settings()


def machine_for(target_factory: Callable[[], Target] | None = None, sla_ms: int = 1000,
                bugs: Iterable[str] = (), *, max_examples: int = 100,
                stateful_step_count: int = 30, fault_kinds: Iterable[str] | None = None,
                step_checks: bool | None = None, **settings_overrides) -> type[LimitMachine]:
    """A `LimitMachine` class for one target, ready to run: `machine_for(...).TestCase` is a
    unittest/pytest test case, or pass the class to `run_state_machine_as_test`.

    `target_factory` makes a fresh target per program (e.g. `lambda: open_target(URL)`); None
    is the embedded reference service with the seeded `bugs` switched on. The target is probed
    once here (TargetError when it is unreachable) and faults are drawn only from the kinds it
    supports, further narrowed by `fault_kinds`. `step_checks` runs the cheap checkers after
    every step (default: on simulated targets only, since each check re-reads the ledger)."""
    bugs = tuple(bugs)
    catalogue.check(bugs)
    catalogue.require_embedded(None if target_factory is None else "a target factory", bugs)
    if target_factory is None:
        target_factory = _embedded(bugs)
    if sla_ms <= 0:
        raise UsageError("sla_ms must be greater than 0")
    first = target_factory()
    try:
        supported = probe(first)
        simulated = first.simulated
    finally:
        first.close()
    kinds = tuple(k for k in contract.FAULT_KINDS if k in supported
                  and (fault_kinds is None or k in tuple(fault_kinds)))
    namespace: dict[str, Any] = {
        "target_factory": staticmethod(target_factory),
        "sla_ms": sla_ms,
        "fault_kinds": kinds,
        "step_checks": step_checks,
        "run_tag": "" if simulated else f"t{int(time.time() * 1000) % 10**7}",
        "stats": MachineStats(),
        "ledger_seen_seq": 0,
        "_programs": itertools.count(1),
    }
    sync_kinds = _sync_kinds(kinds)
    if sync_kinds and (sync_kinds != _sync_kinds(contract.FAULT_KINDS) or not simulated):
        namespace["inject_fault"] = _inject_fault_rule(
            LimitMachine.faults_on, sync_kinds,
            SIM_DELAY_MS_MAX if simulated else REAL_DELAY_MS_MAX)
    name = "LimitMachine" + ("" if simulated else "OverHttp")
    machine = type(name, (LimitMachine,), namespace)
    machine.__qualname__ = name
    machine.TestCase.settings = machine_settings(max_examples, stateful_step_count,
                                                 **settings_overrides)
    return machine
