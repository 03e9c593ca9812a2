"""The reference limit service, sans-IO: ledger rules, event path and projector behind plain
method calls that take time from an injected clock. The HTTP edge (`app.py`) and the embedded
target both call into it, so they run the very same code.

Every handler returns an `Answer`, `(status, body)`; 400s raise `contract.BadRequest` and are
answered (and never remembered) by `dispatch`. Seeded bugs (bugs.py) are chosen when the service
is built: each replaces one of the hooks named in `__init__`.

A write has one await point, its call to the risk engine between authorisation and commit.
Started with `begin` (or `start`), the core stops there and returns the write as an `Awaiting`
value; whoever holds it waits as it will and hands it to `resume`: the HTTP edge really awaits,
so concurrent requests interleave on the event loop, and the simulation's scheduler
(targets.py) interleaves them in a seeded order. The plain path (`call`, `dispatch`) goes
straight on through the same code, with nothing built to hold the write. Anything may commit
during the await, so the rest of the write checks idempotency again and, if the account moved,
decides again, then commits with no await in between: every interleaving commits as some
sequential order would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from .. import contract, oracle
from ..contract import BadRequest, error_body
from ..oracle import VALUE_FIELD, State
from . import bugs as bug_catalogue
from .chaos import FaultSet
from .events import Event, EventPipe
from .projector import REPAIR_GRACE_MS, Projector
from .routes import Route, route
from .storage import LedgerStore

Answer = tuple[int, dict | None]
# One entry to commit, before the ledger gives it a seq and a time: (account_id, type, its
# oracle.VALUE_FIELD, its other fields or None, request_id). A plain tuple, not a NamedTuple:
# one is built per write, and a NamedTuple's constructor is a Python-level call.
Change = tuple[str, str, int | str, dict | None, str]
_new = tuple.__new__  # an Event or Awaiting without the NamedTuple's Python-level __new__ (hot)
RISK_ENGINE = "risk_engine"  # the await point of every write but an open
SEQ_MAX = 2**63 - 1
DELIVERIES_PER_TICK_MAX = 1_000_000  # a bound on one `advance`; the rest waits for the next


@dataclass(frozen=True)
class ServiceConfig:
    # Base time an event needs from commit to the read model, before any injected delay.
    sync_lag_ms: int = 20
    seed: int = 0


def _judge_by_ledger(account_id: str, state: State, kind: str, value) -> str | None:
    return oracle.judge(state, kind, value)


class Awaiting(NamedTuple):
    """A write stopped at an await point, with what it decided before it: the state it was
    authorised against and whether it cures. Only `resume` goes on from here."""

    point: str  # what it awaits (RISK_ENGINE)
    account_id: str
    kind: str
    value: int | str
    request_id: str
    reason: str | None
    state: State
    cures: bool
    commits: int  # the service's `commits` when it was authorised


class LimitService:
    def __init__(self, store: LedgerStore, clock, config: ServiceConfig = ServiceConfig(),
                 bugs=()) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.states: dict[str, State] = {}
        self.tail: dict[str, int] = {}  # last seq per account: each event's prev_seq
        self.seq = 0
        self.faults = FaultSet()
        self.pipe = EventPipe(self.faults, random.Random(config.seed), config.sync_lag_ms)
        self.projector = Projector(store.account_entries)
        self.writes = self.reads = self.delivered = 0
        # Every store commit (entries, or a refusal's remembered answer): a write that finds it
        # unchanged after its await knows nothing it decided on can have moved.
        self.commits = 0
        # Whether a write stops at its await point (while `begin` runs) or goes straight on
        # (the plain path: nothing can run in between, so nothing is built to hold it).
        self.holding = False
        # Hooks a seeded bug may replace (bugs.py); these are the correct behaviours. A
        # remembered answer, per write kind, as a write arrives and again as it commits; the
        # acceptance rules; the cure rule; what is decided again when the account moved while
        # a write awaited.
        self.recall_for = {kind: store.recall for kind in contract.WRITE_KINDS}
        self.recall_at_commit = dict(self.recall_for)
        self.judge = _judge_by_ledger
        self.cures = oracle.cures
        self.decide_again = self._decide_again
        self.bugs = bug_catalogue.check(bugs)
        bug_catalogue.install(self, self.bugs)
        self._recover()

    def _recover(self) -> None:
        # The ledger outlives the process; the read model does not, so it is rebuilt on demand.
        for entry in self.store.entries():
            self.states[entry["account_id"]] = oracle.apply(
                self.states.get(entry["account_id"]), entry)
            self.tail[entry["account_id"]] = entry["seq"]
            self.seq = entry["seq"]
        for account_id, last_seq in self.tail.items():
            self.projector.note_recovered(account_id, last_seq)

    # -- time ------------------------------------------------------------------------------
    def advance(self, now_ms: int | None = None) -> int:
        """Deliver the events that are due and run the periodic jobs; returns events delivered."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        projector = self.projector
        events = self.pipe.due(now_ms)
        assert len(events) <= DELIVERIES_PER_TICK_MAX
        deliver = projector.deliver
        for event in events:
            deliver(event, now_ms)
        late_ms = self.config.sync_lag_ms + self.faults.delay_ms + REPAIR_GRACE_MS
        projector.tick(now_ms, late_ms, self.faults.paused)
        self.delivered += len(events)
        return len(events)

    def next_wakeup_ms(self) -> int:
        """When `advance` next has something to do."""
        due = self.pipe.next_due_ms()
        wake = self.projector.next_wakeup_ms()
        return wake if due is None else min(due, wake)

    # -- the one entry point -----------------------------------------------------------------
    def call(self, method: str, path: str, body=None, query: dict[str, str] | None = None) -> Answer:
        """Answer one request; `body` is already-parsed JSON (or None)."""
        return self._routed(method, path, body, query, hold=False)

    def dispatch(self, found: Route, method: str, path: str, body=None,
                 query: dict[str, str] | None = None) -> Answer:
        """Answer one request whose route is already resolved (`routes.route`)."""
        return self._handled(found, method, path, body, query, hold=False)

    def start(self, method: str, path: str, body=None,
              query: dict[str, str] | None = None) -> Answer | Awaiting:
        """`call` up to the request's await point: its answer, or the write awaiting."""
        return self._routed(method, path, body, query, hold=True)

    def begin(self, found: Route, method: str, path: str, body=None,
              query: dict[str, str] | None = None) -> Answer | Awaiting:
        """`dispatch` up to the request's await point: its answer, or the write awaiting."""
        return self._handled(found, method, path, body, query, hold=True)

    def _routed(self, method: str, path: str, body, query: dict[str, str] | None,
                hold: bool) -> Answer | Awaiting:
        try:
            found = route(method, path)
        except BadRequest as exc:
            return 400, error_body("bad_request", str(exc))
        return self._handled(found, method, path, body, query, hold)

    def _handled(self, found: Route, method: str, path: str, body,
                 query: dict[str, str] | None, hold: bool) -> Answer | Awaiting:
        """`hold`: a write stops at its await point (`holding`) instead of running through."""
        handler, path_id = found
        if handler is None:
            return 404, error_body("not_found", f"no route {method} {path}")
        self.holding = hold
        try:
            return handler(self, path_id, body, query)
        except BadRequest as exc:
            return 400, error_body("bad_request", str(exc))
        finally:
            self.holding = False

    # -- writes ----------------------------------------------------------------------------
    def open_account(self, body) -> Answer:
        req = contract.parse_open(body)
        account_id, request_id = req["account_id"], req["request_id"]
        remembered = self.store.recall(request_id)
        if remembered is not None:
            return remembered
        if account_id in self.states:
            return self._refuse(request_id, "exists", f"account {account_id} already exists")
        state = oracle.opened(req["credit_line"])
        change = (account_id, "open", req["credit_line"], {"product": req["product"]}, request_id)
        return self._commit(request_id, [change], {"account_id": account_id,
                                                   "product": req["product"], **state.view()})

    def draw(self, account_id: str, body) -> Answer:
        req = contract.parse_amount(body)
        return self._write(account_id, "draw", req["amount"], req["request_id"])

    def repay(self, account_id: str, body) -> Answer:
        req = contract.parse_amount(body)
        return self._write(account_id, "repay", req["amount"], req["request_id"])

    def set_limit(self, account_id: str, body) -> Answer:
        req = contract.parse_limit(body)
        return self._write(account_id, "limit", req["credit_line"], req["request_id"],
                           req["reason"])

    def set_status(self, account_id: str, body) -> Answer:
        req = contract.parse_status(body)
        return self._write(account_id, "status", req["status"], req["request_id"], req["reason"])

    def _write(self, account_id: str, kind: str, value, request_id: str,
               reason: str | None = None) -> Answer | Awaiting:
        """Authorise a write, up to its call to the risk engine (`_settle` does the rest)."""
        remembered = self.recall_for[kind](request_id)
        if remembered is not None:
            return remembered
        state = self.states.get(account_id)
        if state is None:
            return self._refuse(request_id, "not_found", f"no account {account_id}")
        error = self.judge(account_id, state, kind, value)
        if error is not None:
            return self._refuse(request_id, error, _detail(error, state, value))
        # Decided before the commit, so the repay and its cure share one transaction.
        cures = kind == "repay" and self.cures(state, kind, value)
        if self.holding:
            return _new(Awaiting, (RISK_ENGINE, account_id, kind, value, request_id, reason,
                                   state, cures, self.commits))
        return self._settle(account_id, kind, value, request_id, reason, state, cures,
                            self.commits)

    def resume(self, waiting: Awaiting) -> Answer:
        """A write after its await point, to its answer, with no await in between."""
        assert not self.holding and waiting.point == RISK_ENGINE, waiting.point
        return self._settle(*waiting[1:])

    def _settle(self, account_id: str, kind: str, value, request_id: str, reason: str | None,
                state: State, cures: bool, commits: int) -> Answer:
        """The rest of a write after its await point, authorised against `state` when the
        service had made `commits` commits: sees what any write that committed meanwhile did."""
        if commits != self.commits:  # something committed while this write awaited
            # A retry of this very request, perhaps.
            remembered = self.recall_at_commit[kind](request_id)
            if remembered is not None:
                return remembered
            now = self.states[account_id]  # an account, once open, is never removed
            if now is not state:  # states are immutable: a write moved the account
                error, cures = self.decide_again(_new(Awaiting, (
                    RISK_ENGINE, account_id, kind, value, request_id, reason, state, cures,
                    commits)), now)
                if error is not None:
                    return self._refuse(request_id, error, _detail(error, now, value))
        change = (account_id, kind, value, None if reason is None else {"reason": reason},
                  request_id)
        if cures:
            cure = (account_id, "status", "active", {"reason": contract.CURE_REASON},
                    contract.cure_request_id(request_id))
            return self._commit(request_id, [change, cure])
        return self._commit(request_id, [change])

    def _decide_again(self, waiting: Awaiting, state: State) -> tuple[str | None, bool]:
        """The verdict and the cure of a write whose account moved while it awaited."""
        kind, value = waiting.kind, waiting.value
        error = self.judge(waiting.account_id, state, kind, value)
        return error, error is None and kind == "repay" and self.cures(state, kind, value)

    def _refuse(self, request_id: str, code: str, detail: str) -> Answer:
        status, body = contract.ERRORS[code], error_body(code, detail)
        assert 400 < status < 500, code  # a 400 is never remembered; nothing else is refused
        self.store.commit([], request_id, status, body)
        self.commits += 1
        return status, body

    def _commit(self, request_id: str, changes: list[Change], body: dict | None = None) -> Answer:
        """Append the changes as entries; answer `body` (default: nothing) plus the first
        entry's `entry_id` and `seq`."""
        assert changes
        clock = self.clock
        now_ms = clock.now_ms()
        at = clock.iso(now_ms)
        entries = []
        seq = self.seq
        for account_id, kind, value, extra, entry_request_id in changes:
            seq += 1
            entry = {"seq": seq, "entry_id": f"e-{seq}", "request_id": entry_request_id,
                     "at": at, "account_id": account_id, "type": kind, VALUE_FIELD[kind]: value}
            if extra is not None:
                entry.update(extra)
            entries.append(entry)
        first = entries[0]
        answer = {"entry_id": first["entry_id"], "seq": first["seq"]}
        if body is not None:
            answer = {**body, **answer}
        self.store.commit(entries, request_id, 201, answer)  # durable before anything changes here
        self.commits += 1
        seq = self.seq
        states, tail, step = self.states, self.tail, oracle.step
        note_commit, publish = self.projector.note_commit, self.pipe.publish
        for account_id, kind, value, _, _ in changes:
            seq += 1
            states[account_id] = step(states.get(account_id), kind, value)
            prev_seq = tail.get(account_id)
            tail[account_id] = seq
            note_commit(account_id, seq, now_ms)
            publish(_new(Event, (seq, account_id, prev_seq, kind, value)), now_ms)
        assert seq == entries[-1]["seq"]
        assert states[changes[0][0]].outstanding >= 0 or self.bugs, "an accepted write overdrew"
        self.seq = seq
        self.writes += 1
        return 201, answer

    # -- reads -----------------------------------------------------------------------------
    def display(self, account_id: str) -> Answer:
        self.reads += 1
        if account_id not in self.states:
            return 404, error_body("not_found", f"no account {account_id}")
        shown = self.projector.display(account_id)
        if shown is None:
            return 503, error_body("display_unavailable",
                                   "the display is being rebuilt; retry shortly")
        return 200, shown

    def ledger_page(self, query: dict[str, str] | None) -> Answer:
        after_seq, limit = contract.parse_ledger_query(query or {})
        # Stores keep seq as int64; nothing lies beyond it, and asking a store would overflow.
        entries = self.store.page(after_seq, limit) if after_seq < SEQ_MAX else []
        return 200, {"entries": entries,
                     "next_seq": entries[-1]["seq"] if entries else after_seq}

    def sync(self) -> Answer:
        applied = max(0, self.projector.applied_seq(self.seq))
        return 200, {"ledger_seq": self.seq, "applied_seq": min(applied, self.seq)}

    # -- chaos -----------------------------------------------------------------------------
    def chaos_status(self) -> Answer:
        return 200, {"supported": list(contract.FAULT_KINDS), "active": self.faults.listed()}

    def chaos_add(self, body) -> Answer:
        fault = contract.parse_fault(body)
        if fault["kind"] == "maintenance_reset":
            self.projector.reset(fault["mode"], self.clock.now_ms())
            return 201, {"fault_id": self.faults.new_id(), **fault}
        return 201, self.faults.add(fault)

    def chaos_remove(self, fault_id: str | None) -> Answer:
        if fault_id is None:
            self.faults.clear()
            return 204, None
        if not self.faults.remove(fault_id):
            return 404, error_body("not_found", f"no active fault {fault_id}")
        return 204, None


def _detail(code: str, state: State, value) -> str:
    if code == "insufficient_limit":
        return f"amount {value} exceeds the available {state.available}"
    if code == "overpayment":
        return f"amount {value} exceeds the outstanding {state.outstanding}"
    if code == "account_not_active":
        return f"the account is {state.status}"
    if code == "outstanding_balance":
        return f"cannot close with {state.outstanding} outstanding"
    return code
