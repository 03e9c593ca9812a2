"""The reference limit service, sans-IO: ledger rules, event path and projector behind plain
method calls that take time from an injected clock. The HTTP edge (`app.py`) and the embedded
target both call `LimitService.call`, so they run the very same code.

Every handler returns `(status, body)`; 400s raise `contract.BadRequest` and are answered (and
never remembered) by `call`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .. import contract, oracle
from ..contract import BadRequest, error_body
from ..oracle import State
from . import bugs as bug_catalogue
from .chaos import FaultSet
from .events import Event, EventPipe
from .projector import ANTI_ENTROPY_EVERY_MS, REPAIR_GRACE_MS, REPAIR_NOW_MS, Projector
from .storage import LedgerStore

Reply = tuple[int, dict | None]
SEQ_MAX = 2**63 - 1
DELIVERIES_PER_TICK_MAX = 1_000_000  # a bound on one `advance`; the rest waits for the next


@dataclass(frozen=True)
class ServiceConfig:
    # Base time an event needs from commit to the read model, before any injected delay.
    sync_lag_ms: int = 20
    seed: int = 0


class LimitService:
    def __init__(self, store: LedgerStore, clock, config: ServiceConfig = ServiceConfig(),
                 bugs=()) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.bugs = bug_catalogue.check(bugs)
        self.states: dict[str, State] = {}
        self.tail: dict[str, int] = {}  # last seq per account
        self.seq = 0
        self.faults = FaultSet()
        self.pipe = EventPipe(self.faults, random.Random(config.seed), config.sync_lag_ms)
        self.projector = Projector(self.tail, store.account_entries, self.bugs)
        self.writes = self.reads = self.delivered = 0
        self._recover()

    def _recover(self) -> None:
        # The ledger outlives the process; the read model does not, so it is rebuilt on demand.
        for entry in self.store.entries():
            self.states[entry["account_id"]] = oracle.apply(
                self.states.get(entry["account_id"]), entry)
            self.tail[entry["account_id"]] = entry["seq"]
            self.seq = entry["seq"]
        for account_id in self.tail:
            self.projector.behind[account_id] = (REPAIR_NOW_MS, 0)

    # -- time ------------------------------------------------------------------------------
    def advance(self, now_ms: int | None = None) -> int:
        """Deliver the events that are due and run the periodic jobs; returns events delivered."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        delivered = 0
        events = self.pipe.due(now_ms)
        assert len(events) <= DELIVERIES_PER_TICK_MAX
        for event in events:
            self.projector.deliver(event, now_ms)
        delivered += len(events)
        projector = self.projector
        if now_ms >= projector.next_anti_entropy_ms:
            projector.next_anti_entropy_ms = now_ms + ANTI_ENTROPY_EVERY_MS
            if not self.faults.paused:  # pause_sync: nothing reaches the read model
                late_ms = self.config.sync_lag_ms + self.faults.delay_ms + REPAIR_GRACE_MS
                projector.anti_entropy(now_ms, late_ms)
        projector.maybe_snapshot(now_ms)
        self.delivered += delivered
        return delivered

    def next_wakeup_ms(self) -> int:
        """When `advance` next has something to do."""
        due = self.pipe.next_due_ms()
        wake = min(self.projector.next_anti_entropy_ms, self.projector.next_snapshot_ms)
        return wake if due is None else min(due, wake)

    # -- the one entry point -----------------------------------------------------------------
    def call(self, method: str, path: str, body=None, query: dict[str, str] | None = None) -> Reply:
        """Answer one request; `body` is already-parsed JSON (or None)."""
        route = _ROUTE or _load_route()
        try:
            handler, args = route(method, path)
            if handler is None:
                return 404, error_body("not_found", f"no route {method} {path}")
            return handler(self, *args, body=body, query=query or {})
        except BadRequest as exc:
            return 400, error_body("bad_request", str(exc))

    # -- writes ----------------------------------------------------------------------------
    def open_account(self, body) -> Reply:
        req = contract.parse_open(body)
        account_id, request_id = req["account_id"], req["request_id"]
        remembered = self.store.recall(request_id)
        if remembered is not None:
            return remembered
        if account_id in self.states:
            return self._refuse(request_id, "exists", f"account {account_id} already exists")
        entry = {"account_id": account_id, "type": "open", "product": req["product"],
                 "credit_line": req["credit_line"]}
        state = oracle.opened(req["credit_line"])
        return self._commit(request_id, [entry], {"account_id": account_id,
                                                  "product": req["product"], **state.view()})

    def draw(self, account_id: str, body) -> Reply:
        req = contract.parse_amount(body)
        return self._write(account_id, "draw", req["amount"], req["request_id"], {})

    def repay(self, account_id: str, body) -> Reply:
        req = contract.parse_amount(body)
        return self._write(account_id, "repay", req["amount"], req["request_id"], {})

    def set_limit(self, account_id: str, body) -> Reply:
        req = contract.parse_limit(body)
        return self._write(account_id, "limit", req["credit_line"], req["request_id"],
                           {"reason": req["reason"]})

    def set_status(self, account_id: str, body) -> Reply:
        req = contract.parse_status(body)
        return self._write(account_id, "status", req["status"], req["request_id"],
                           {"reason": req["reason"]})

    _VALUE_FIELD = {"draw": "amount", "repay": "amount", "limit": "credit_line", "status": "status"}

    def _write(self, account_id: str, kind: str, value, request_id: str, extra: dict) -> Reply:
        if not (kind == "draw" and "retry_duplicates_draw" in self.bugs):
            remembered = self.store.recall(request_id)
            if remembered is not None:
                return remembered
        state = self.states.get(account_id)
        if state is None:
            return self._refuse(request_id, "not_found", f"no account {account_id}")
        error = self._judge(account_id, state, kind, value)
        if error is not None:
            return self._refuse(request_id, error, _detail(error, state, value))
        entry = {"account_id": account_id, "type": kind, self._VALUE_FIELD[kind]: value, **extra}
        entries = [entry]
        if (kind == "repay" and state.status == "overdue" and value == state.outstanding
                and "no_cure" not in self.bugs):
            # oracle.cure_due, decided before the commit so both entries share its transaction.
            assert oracle.cure_due(state, oracle.apply(state, entry))
            entries.append({"account_id": account_id, "type": "status", "status": "active",
                            "reason": contract.CURE_REASON,
                            "request_id": request_id + contract.CURE_SUFFIX})
        return self._commit(request_id, entries)

    def _judge(self, account_id: str, state: State, kind: str, value) -> str | None:
        bugs = self.bugs
        if bugs:
            if kind == "draw" and "draw_against_display" in bugs:
                shown = self.projector.display(account_id)
                if shown is not None:
                    state = State(shown["credit_line"], shown["outstanding"], shown["status"])
            if kind == "draw" and "frozen_draw_allowed" in bugs and state.status == "frozen":
                state = state._replace(status="active")
            if kind == "draw" and "exact_available_rejected" in bugs and value == state.available:
                return "insufficient_limit"
            if kind == "repay" and "overpay_accepted" in bugs and state.status != "closed":
                return None
            if kind == "status" and "close_with_balance" in bugs:
                return None
        return oracle.judge(state, kind, value)

    def _refuse(self, request_id: str, code: str, detail: str) -> Reply:
        status, body = contract.ERRORS[code], error_body(code, detail)
        self.store.commit([], request_id, status, body)
        return status, body

    def _commit(self, request_id: str, drafts: list[dict], body: dict | None = None) -> Reply:
        """Append the drafts as entries; answer `body` (default: nothing) plus the first
        entry's `entry_id` and `seq`."""
        now_ms = self.clock.now_ms()
        at = self.clock.iso(now_ms)
        entries = []
        seq = self.seq
        for draft in drafts:
            seq += 1
            entries.append({"seq": seq, "entry_id": f"e-{seq}",
                            "request_id": draft.pop("request_id", request_id), "at": at, **draft})
        first = entries[0]
        body = {**(body or {}), "entry_id": first["entry_id"], "seq": first["seq"]}
        self.store.commit(entries, request_id, 201, body)  # durable before anything changes here
        self.seq = seq
        for entry in entries:
            account_id = entry["account_id"]
            self.states[account_id] = oracle.apply(self.states.get(account_id), entry)
            prev_seq = self.tail.get(account_id)
            self.tail[account_id] = entry["seq"]
            self.projector.note_commit(account_id, entry["seq"], now_ms)
            self.pipe.publish(Event(entry["seq"], account_id, prev_seq, entry), now_ms)
        self.writes += 1
        return 201, body

    # -- reads -----------------------------------------------------------------------------
    def display(self, account_id: str) -> Reply:
        self.reads += 1
        if account_id not in self.states:
            return 404, error_body("not_found", f"no account {account_id}")
        shown = self.projector.display(account_id)
        if shown is None:
            return 503, error_body("display_unavailable",
                                   "the display is being rebuilt; retry shortly")
        return 200, shown

    def ledger_page(self, query: dict[str, str]) -> Reply:
        after_seq, limit = contract.parse_ledger_query(query)
        # Stores keep seq as int64; nothing lies beyond it, and asking a store would overflow.
        entries = self.store.page(after_seq, limit) if after_seq < SEQ_MAX else []
        return 200, {"entries": entries,
                     "next_seq": entries[-1]["seq"] if entries else after_seq}

    def sync(self) -> Reply:
        applied = max(0, self.projector.applied_seq(self.seq))
        return 200, {"ledger_seq": self.seq, "applied_seq": min(applied, self.seq)}

    # -- chaos -----------------------------------------------------------------------------
    def chaos_status(self) -> Reply:
        return 200, {"supported": list(contract.FAULT_KINDS), "active": self.faults.listed()}

    def chaos_add(self, body) -> Reply:
        fault = contract.parse_fault(body)
        if fault["kind"] == "maintenance_reset":
            self.projector.reset(fault["mode"], self.clock.now_ms())
            return 201, {"fault_id": self.faults.new_id(), **fault}
        try:
            return 201, self.faults.add(fault)
        except OverflowError as exc:
            raise BadRequest(str(exc)) from None

    def chaos_remove(self, fault_id: str | None) -> Reply:
        if fault_id is None:
            self.faults.clear()
            return 204, None
        if not self.faults.remove(fault_id):
            return 404, error_body("not_found", f"no active fault {fault_id}")
        return 204, None


_ROUTE = None


def _load_route():
    # routes.py imports this module for its handlers, so the table is fetched once, on first use.
    global _ROUTE
    from .routes import route
    _ROUTE = route
    return route


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
