"""Hand-written histories and ledgers for the checker tests.

A `Story` plays a correct service by default: each write is judged by the oracle, committed to the
ledger when allowed (with its cure when due) and answered as the contract says. Keyword arguments
inject one defect at a time: a forced outcome or error code, a number of ledger entries other
than the right one, a reply body, a recorded field that differs from the request.

    b = Story()
    b.open("a1", 100_00)
    b.draw("a1", 30_00)
    b.wait(5_000)
    b.display("a1", as_of=b.seq_of("a1", 1))   # a display one entry behind
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from harness import contract, oracle
from harness.history import History, Op

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_UNSET: Any = object()


class Story:
    def __init__(self) -> None:
        self.history = History(meta={"started_at": "2026-01-01T00:00:00.000Z"})
        self.ledger: list[dict] = []
        self.now_ms = 0
        self._next_seq = itertools.count(1)
        self._next_request = itertools.count(1)
        self._next_fault = itertools.count(1)
        self._entries: dict[str, list[dict]] = {}

    # -- time -------------------------------------------------------------------------------------
    def wait(self, ms: int) -> None:
        self.now_ms += ms

    def _op(self, f: str, account_id: str | None, request: dict | None, outcome: str,
            status: int | None, response: Any, error: str | None, invoke_ms: int | None,
            complete_ms: int | None, retry_of: int | None = None) -> Op:
        invoke_ms = self.now_ms + 1 if invoke_ms is None else invoke_ms
        complete_ms = invoke_ms + 1 if complete_ms is None else complete_ms
        op = self.history.invoke(0, f, account_id, request, invoke_ms, retry_of)
        History.complete(op, outcome, complete_ms, status, response, error)
        self.now_ms = max(self.now_ms, complete_ms)
        return op

    def record(self, f: str, account_id: str | None = None, request: dict | None = None, *,
               outcome: str, http_status: int | None = None, response: Any = None,
               error: str | None = None) -> Op:
        """Any operation, exactly as given."""
        return self._op(f, account_id, request, outcome, http_status, response, error, None, None)

    # -- the ledger -------------------------------------------------------------------------------
    def state(self, account_id: str) -> oracle.State | None:
        state = None
        for entry in self._entries.get(account_id, []):
            # Entries before an open (written on purpose by a test) have no state to apply to.
            if state is not None or entry["type"] == "open":
                state = oracle.apply(state, entry)
        return state

    def seq_of(self, account_id: str, n: int) -> int:
        """The seq of the account's n-th entry (0 is its open)."""
        return self._entries[account_id][n]["seq"]

    def last_seq(self, account_id: str) -> int:
        return self._entries[account_id][-1]["seq"]

    def commit(self, account_id: str, kind: str, request_id: str, **fields: Any) -> dict:
        """Append one ledger entry as the service would, or as a faulty one would."""
        seq = next(self._next_seq)
        at = (EPOCH + dt.timedelta(milliseconds=self.now_ms)).isoformat(timespec="milliseconds")
        entry = {"seq": seq, "entry_id": f"e{seq}", "request_id": request_id,
                 "account_id": account_id, "type": kind, "at": at.replace("+00:00", "Z"), **fields}
        self.ledger.append(entry)
        self._entries.setdefault(account_id, []).append(entry)
        return entry

    # -- writes -----------------------------------------------------------------------------------
    def open(self, account_id: str, credit_line: int, **defects: Any) -> Op:
        request = {"account_id": account_id, "product": "huabei", "credit_line": credit_line}
        return self._write("open", account_id, request, **defects)

    def draw(self, account_id: str, amount: int, **defects: Any) -> Op:
        return self._write("draw", account_id, {"amount": amount}, **defects)

    def repay(self, account_id: str, amount: int, **defects: Any) -> Op:
        return self._write("repay", account_id, {"amount": amount}, **defects)

    def limit(self, account_id: str, credit_line: int, **defects: Any) -> Op:
        return self._write("limit", account_id, {"credit_line": credit_line, "reason": "review"},
                           **defects)

    def status(self, account_id: str, status: str, **defects: Any) -> Op:
        return self._write("status", account_id, {"status": status, "reason": "ops"}, **defects)

    def _write(self, f: str, account_id: str, body: dict, *, outcome: str | None = None,
               error: str | None = None, entries: int | None = None, cure: bool = True,
               recorded: dict | None = None, reply: Any = _UNSET, http_status: int | None = None,
               invoke_ms: int | None = None, complete_ms: int | None = None) -> Op:
        """`outcome`/`error` force the answer; `entries` how many ledger entries it makes;
        `recorded` overrides fields of those entries; `reply` the body sent back."""
        request_id = f"r{next(self._next_request)}"
        request = {**body, "request_id": request_id}
        state = self.state(account_id)
        value = body.get("amount", body.get("credit_line", body.get("status")))
        if f == "open":
            verdict = None if state is None else "exists"
        else:
            verdict = "not_found" if state is None else oracle.judge(state, f, value)
        outcome = outcome or ("ok" if verdict is None else "fail")
        if entries is None:
            entries = 1 if outcome == "ok" or (outcome == "info" and verdict is None) else 0
        made = []
        for _ in range(entries):
            before = self.state(account_id)
            fields = {k: v for k, v in body.items() if k != "account_id"}
            made.append(self.commit(account_id, f, request_id, **{**fields, **(recorded or {})}))
            if f == "repay" and cure and before is not None \
                    and oracle.cures(before, f, made[-1]["amount"]):
                self.commit(account_id, "status", contract.cure_request_id(request_id),
                            status="active", reason=contract.CURE_REASON)
        if outcome == "ok":
            status = http_status or 201
            if reply is _UNSET:
                reply = ({**self.state(account_id).view(), "account_id": account_id} if f == "open"
                         else {"entry_id": made[0]["entry_id"], "seq": made[0]["seq"]} if made
                         else {"entry_id": "e999999", "seq": 999_999})
            return self._op(f, account_id, request, "ok", status, reply, None, invoke_ms,
                            complete_ms)
        if outcome == "fail":
            code = error or verdict or "bad_request"
            status = http_status or contract.ERRORS[code]
            if reply is _UNSET:
                reply = contract.error_body(code, f"{f} refused")
            return self._op(f, account_id, request, "fail", status, reply, None, invoke_ms,
                            complete_ms)
        return self._op(f, account_id, request, "info", http_status, None,
                        error or "timeout", invoke_ms, complete_ms)

    def retry(self, op: Op, *, outcome: str | None = None, http_status: int | None = None,
              reply: Any = _UNSET, invoke_ms: int | None = None) -> Op:
        """The same request again; by default answered as the contract says (the original
        outcome, or the recorded entry's receipt when the original got no answer)."""
        mine = [e for e in self.ledger if e["request_id"] == op.request_id]
        if outcome is None and op.outcome in ("ok", "fail"):
            outcome, http_status = op.outcome, http_status or op.http_status
            reply = op.response if reply is _UNSET else reply
        elif outcome is None:
            outcome, http_status = "ok", http_status or 201
            if reply is _UNSET:
                reply = {"entry_id": mine[0]["entry_id"], "seq": mine[0]["seq"]} if mine else None
        error = "timeout" if outcome == "info" else None
        return self._op(op.f, op.account_id, dict(op.request), outcome, http_status,
                        None if reply is _UNSET else reply, error, invoke_ms, None,
                        retry_of=op.index)

    # -- reads ------------------------------------------------------------------------------------
    def display(self, account_id: str, *, as_of: int | None = None, as_of_seq: Any = _UNSET,
                invoke_ms: int | None = None, **fields: Any) -> Op:
        """A display read answering 200. By default it shows the ledger's current state; `as_of`
        makes it show the state at that seq; `as_of_seq` and `fields` override what it says."""
        seq = self.last_seq(account_id) if as_of is None else as_of
        timeline = oracle.replay(self._entries[account_id])
        state = oracle.state_at(timeline, seq)
        shown = {"account_id": account_id, **(state.view() if state else {}),
                 "as_of_seq": seq if as_of_seq is _UNSET else as_of_seq, **fields}
        return self._op("display", account_id, None, "ok", 200, shown, None, invoke_ms, None)

    def display_body(self, account_id: str, body: Any, *, invoke_ms: int | None = None) -> Op:
        """A display read answering 200 with exactly `body`."""
        return self._op("display", account_id, None, "ok", 200, body, None, invoke_ms, None)

    def unavailable(self, account_id: str, *, invoke_ms: int | None = None) -> Op:
        body = contract.error_body("display_unavailable", "read model rebuilding")
        return self._op("display", account_id, None, "fail", 503, body, None, invoke_ms, None)

    # -- faults and phases ------------------------------------------------------------------------
    def fault(self, kind: str, **params: Any) -> str:
        fault_id = f"f{next(self._next_fault)}"
        self._op("fault_add", None, {"kind": kind, **params}, "ok", 201,
                 {"fault_id": fault_id, "kind": kind, **params}, None, None, None)
        return fault_id

    def heal(self, fault_id: str | None = None) -> None:
        request = {"fault_id": fault_id} if fault_id else {"all": True}
        self._op("fault_remove", None, request, "ok", 204, None, None, None, None)

    def phase(self, name: str) -> None:
        self.now_ms += 1
        self.history.phase(name, self.now_ms)

def kinds(findings):
    """(kind, severity) of each finding, sorted: what most checker tests assert on."""
    return sorted((f.kind, f.severity) for f in findings)


def opened() -> Story:
    """A story with one open account, a1, with a ¥100 line."""
    b = Story()
    b.open("a1", 100_00)
    return b
