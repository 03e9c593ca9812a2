"""The recording client: every operation goes through here, so every operation is in the
history with what was sent, what came back and when, classified as ok / fail / info.

Shared by `run`, `prop`, the pytest plugin and the locust users: one classification of answers.
"""

from __future__ import annotations

import threading
from . import contract
from .errors import TargetError
from .history import History, Op
from .targets import AT_ONCE_MAX, Choose, Reply, Target

LEDGER_PAGES_MAX = 100_000  # 1e9 entries at the maximum page size: far past any run

_WRITE_ROUTES = {
    "draw": "draws",
    "repay": "repayments",
    "limit": "limit",
    "status": "status",
}


class Recorder:
    """Thread-safe: HTTP runs call it from several workers at once."""

    def __init__(self, target: Target, history: History, ledger_after_seq: int = 0) -> None:
        self.target = target
        self.history = history
        # The ledger seq before this history's first write: its entries all come after it.
        self.ledger_after_seq = ledger_after_seq
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return self.target.now_ms()

    # -- operations ------------------------------------------------------------------------
    def write(self, process: int, f: str, account_id: str, body: dict,
              retry_of: int | None = None) -> Op:
        op = self._invoke(process, f, account_id, body, retry_of)
        reply = self.target.request("POST", _write_path(f, account_id), body)
        outcome, error = classify_write(f, reply)
        return self._complete(op, outcome, reply, error)

    def invoke_write(self, process: int, f: str, account_id: str, body: dict,
                     retry_of: int | None = None) -> Op:
        """A write invoked but not sent yet: `send_at_once` sends it with others."""
        assert f in _WRITE_ROUTES or f == "open", f
        return self._invoke(process, f, account_id, body, retry_of)

    def send_at_once(self, ops: list[Op], choose: Choose | None = None) -> list[Op]:
        """Send invoked writes together and record each answer as it comes. All were invoked
        before any was sent, so the history shows them overlapping and the checkers consider
        every order in which they may have committed. `choose`: a simulated interleaving."""
        assert 1 < len(ops) <= AT_ONCE_MAX
        assert all(op.outcome is None and op.is_write for op in ops)

        def answered(n: int, reply: Reply) -> None:
            outcome, error = classify_write(ops[n].f, reply)
            self._complete(ops[n], outcome, reply, error)

        self.target.request_at_once(
            [("POST", _write_path(op.f, op.account_id), op.request) for op in ops], answered,
            choose)
        assert all(op.outcome is not None for op in ops), "a request sent at once got no reply"
        return ops

    def display(self, process: int, account_id: str) -> Op:
        op = self._invoke(process, "display", account_id, None, None)
        reply = self.target.request("GET", f"/v1/accounts/{account_id}/display")
        outcome, error = classify_display(reply)
        return self._complete(op, outcome, reply, error)

    def add_fault(self, process: int, fault: dict) -> Op:
        op = self._invoke(process, "fault_add", None, fault, None)
        reply = self.target.request("POST", "/v1/chaos/faults", fault)
        ok = reply.status == 201 and isinstance(reply.body, dict) and "fault_id" in reply.body
        return self._complete(op, _fault_outcome(ok, reply), reply,
                              None if ok else (reply.error or f"status {reply.status}"))

    def remove_fault(self, process: int, fault_id: str | None) -> Op:
        request = {"all": True} if fault_id is None else {"fault_id": fault_id}
        op = self._invoke(process, "fault_remove", None, request, None)
        path = "/v1/chaos/faults" + ("" if fault_id is None else f"/{fault_id}")
        reply = self.target.request("DELETE", path)
        ok = reply.status == 204
        return self._complete(op, _fault_outcome(ok, reply), reply,
                              None if ok else (reply.error or f"status {reply.status}"))

    def phase(self, name: str) -> None:
        with self._lock:
            self.history.phase(name, self.target.now_ms())

    def ledger(self, process: int = 0, after_seq: int = 0) -> list[dict]:
        """The ledger after `after_seq`, page by page; a ledger that breaks the contract cannot
        be judged."""
        entries: list[dict] = []
        for _ in range(LEDGER_PAGES_MAX):
            query = {"after_seq": after_seq, "limit": contract.LEDGER_PAGE_MAX}
            op = self._invoke(process, "ledger", None, query, None)
            reply = self.target.request("GET", "/v1/ledger", query={k: str(v) for k, v in query.items()})
            page = _ledger_page(reply, after_seq)
            self._complete(op, "ok", Reply(reply.status, {"count": len(page),
                                                          "next_seq": reply.body["next_seq"]}), None)
            if not page:
                return entries
            entries.extend(page)
            after_seq = page[-1]["seq"]
        raise TargetError(f"the ledger did not end after {LEDGER_PAGES_MAX} pages")

    # -- recording -------------------------------------------------------------------------
    def _invoke(self, process: int, f: str, account_id: str | None, request: dict | None,
                retry_of: int | None) -> Op:
        with self._lock:
            return self.history.invoke(process, f, account_id, request, self.target.now_ms(),
                                       retry_of=retry_of)

    def _complete(self, op: Op, outcome: str, reply: Reply, error: str | None) -> Op:
        with self._lock:
            return self.history.complete(op, outcome, self.target.now_ms(), reply.status,
                                         reply.body, error)


def _write_path(f: str, account_id: str) -> str:
    return "/v1/accounts" if f == "open" else f"/v1/accounts/{account_id}/{_WRITE_ROUTES[f]}"


def _fault_outcome(ok: bool, reply: Reply) -> str:
    # A definite 4xx means the fault was never applied (or never removed); anything else without
    # an acknowledgement may have acted, and the checkers must allow for it.
    if ok:
        return "ok"
    return "fail" if reply.status is not None and 400 <= reply.status < 500 else "info"


def classify_write(f: str, reply: Reply) -> tuple[str, str | None]:
    """ok / fail / info for a write's answer, and why when the answer breaks the contract."""
    status, body = reply.status, reply.body
    if status is None:
        return "info", reply.error
    if status == 201:
        if not isinstance(body, dict):
            return "info", "contract: 201 without a JSON object body"
        if f != "open" and (type(body.get("seq")) is not int or not isinstance(body.get("entry_id"), str)):
            return "info", f"contract: 201 body lacks an integer seq and a string entry_id: {body}"
        return "ok", None
    if 400 <= status < 500:
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return "fail", f"contract: {status} without an error body"
        return "fail", None
    if status >= 500:
        return "info", reply.error or f"status {status}"
    return "info", f"contract: unexpected status {status} for a write"


def classify_display(reply: Reply) -> tuple[str, str | None]:
    if reply.status == 200 and isinstance(reply.body, dict):
        return "ok", None
    if reply.status == 503:
        return "fail", None
    if reply.status is None:
        return "info", reply.error
    if reply.status == 200:
        return "info", "contract: display 200 without a JSON object body"
    if 400 <= reply.status < 500:
        return "fail", None
    return "info", reply.error or f"status {reply.status}"


def _ledger_page(reply: Reply, after_seq: int) -> list[dict]:
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict):
        why = reply.error or f"status {reply.status}"
        raise TargetError(f"GET /v1/ledger failed ({why}); the ledger cannot be reconciled")
    entries, next_seq = body.get("entries"), body.get("next_seq")
    if not isinstance(entries, list) or type(next_seq) is not int:
        raise TargetError("GET /v1/ledger broke the contract: need {entries: [...], next_seq: int}")
    last = after_seq
    for entry in entries:
        seq = entry.get("seq") if isinstance(entry, dict) else None
        if type(seq) is not int or seq <= last:
            raise TargetError(f"GET /v1/ledger broke the contract: entry seq {seq!r} is not "
                              f"above {last} (seq must strictly increase)")
        last = seq
    return entries


HEAD_SEARCH_STEPS_MAX = 64  # seqs are int64 in practice: 63 doublings and 63 halvings suffice


def ledger_head_seq(target: Target, known_seq: int = 0) -> int:
    """The ledger's last seq now (0 when empty or unreadable). A run on a shared service reads
    only what comes after it, instead of the whole ledger again for every program or run. The
    contract has no route for it (`/v1/sync` is optional, and a broken service's own word is not
    to be trusted for what it leaves out), so: double, then bisect, on `after_seq`, from
    `known_seq` (a seq the ledger surely reached: a few requests find what was added since).
    Not recorded: it judges nothing, it only says where this run's entries will begin."""
    assert known_seq >= 0
    if not _entries_after(target, known_seq):
        return known_seq
    low, step = known_seq, 1  # entries exist after `low`; after `low + step` is being asked
    for _ in range(HEAD_SEARCH_STEPS_MAX):
        if not _entries_after(target, low + step):
            break
        low, step = low + step, step * 2
    else:
        return low
    high = low + step
    for _ in range(HEAD_SEARCH_STEPS_MAX):
        if high - low <= 1:
            break
        middle = (low + high) // 2
        if _entries_after(target, middle):
            low = middle
        else:
            high = middle
    return high if high - low == 1 else low


def _entries_after(target: Target, seq: int) -> bool:
    reply = target.request("GET", "/v1/ledger", query={"after_seq": str(seq), "limit": "1"})
    body = reply.body
    return (reply.status == 200 and isinstance(body, dict) and isinstance(body.get("entries"), list)
            and len(body["entries"]) > 0)
