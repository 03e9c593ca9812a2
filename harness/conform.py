"""The conformance probe: one check per rule of the contract (docs/contract.md), run against any
target. It is the first thing to run against your own service: each failing check names the
rule, what was expected, what came back, and what to fix.

The probe speaks only the `Target` protocol and judges by `harness.oracle`, so it runs the same
against a served URL (real time) and the embedded reference service (simulated time). On a
shared service it stays in its own lane: every account and request id starts with a per-run
prefix, and every fault it adds is removed before it returns, even when a check fails.

Each check opens its own accounts, so one broken rule fails one check instead of every check
that happens to come after it.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from . import oracle
from .contract import BODY_BYTES_MAX, LEDGER_PAGE_MAX, is_id
from .deadline import Deadline, DeadlineExceeded
from .errors import TargetError, UsageError
from .client import ledger_head_seq
from .secrets import redact_bytes
from .targets import Reply, Target

OUTCOMES = ("pass", "fail", "skip")
TAG_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,24}")  # leaves room in 64 for labels and ":cure"
LINE = 10_000  # the credit line most checks open with, in fen
DISPLAY_WAIT_MS = 5_000  # how long a quiet account's display may take to catch up
DISPLAY_POLL_EVERY_MS = 20
DISPLAY_POLLS_MAX = DISPLAY_WAIT_MS // DISPLAY_POLL_EVERY_MS + 1
LEDGER_PAGES_MAX = 100  # a bound on reading the ledger since the probe started
BEYOND_HEAD_SEQ = 2**62  # no ledger is this long, and it still fits an int64 store
SHOW_CHARS_MAX = 200  # an answer quoted in a check stays one readable line
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)")
STATE_FIELDS = ("credit_line", "outstanding", "available", "status", "usable")
ENTRY_TYPES = ("open", "draw", "repay", "limit", "status")
WRITE_PATHS = {"draw": "draws", "repay": "repayments", "limit": "limit", "status": "status"}
# The probe's wall-clock bound without --max-run-s: a healthy service answers it in a few
# seconds; a few dozen answers at --timeout-s each is a service that stalls.
MAX_RUN_BASE_S = 120.0
MAX_RUN_TIMEOUTS = 10
# XML 1.0 cannot carry these at all, escaped or not; a garbage answer quoted in a check might.
XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Check:
    """One rule judged: `outcome` is pass, fail or skip; `why` says what to do about it."""

    name: str
    outcome: str
    expected: str
    actual: str
    why: str

    def line(self) -> str:
        if self.outcome == "pass":
            return f"PASS {self.name}"
        if self.outcome == "skip":
            return _one_line(f"SKIP {self.name}: {self.why}")
        return _one_line(f"FAIL {self.name}: expected {self.expected}; got {self.actual}. "
                         f"{self.why}")


Verdict = tuple[str, str, str, str]  # (outcome, expected, actual, why)


def _pass(expected: str, actual: str, why: str = "") -> Verdict:
    return "pass", expected, actual, why


def _fail(expected: str, actual: str, why: str) -> Verdict:
    return "fail", expected, actual, why


def _skip(why: str) -> Verdict:
    return "skip", "", "", why


def _judge(ok: bool, expected: str, actual: str, why: str) -> Verdict:
    return _pass(expected, actual) if ok else _fail(expected, actual, why)


class _SetupFailed(Exception):
    """A step a check needs before it can judge its rule did not go as the contract says."""

    def __init__(self, step: str, expected: str, actual: str) -> None:
        super().__init__(step)
        self.step, self.expected, self.actual = step, expected, actual


# -- the session: one run's prefix, ids, ledger start and faults ---------------------------------
class _Session:
    def __init__(self, target: Target, prefix: str, chaos: bool | None) -> None:
        self.target = target
        self.prefix = prefix
        self.chaos = chaos
        self.count = 0
        self.accounts: set[str] = set()
        self.fault_ids: set[str] = set()  # added and not yet removed: cleared at the end
        self.start_seq = 0
        self.send_raw = _raw_sender(target)
        self.display_memo: tuple | None = None  # the display run both display checks judge
        self._chaos_listing: Reply | None = None

    # ids
    def request_id(self, label: str) -> str:
        self.count += 1
        return f"{self.prefix}-{label}-{self.count}"

    def account_id(self, label: str) -> str:
        account_id = f"{self.prefix}-{label}"
        assert account_id not in self.accounts, f"two checks share account label {label!r}"
        self.accounts.add(account_id)
        return account_id

    # requests
    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Reply:
        try:
            return self.target.request(method, path, body, query)
        except DeadlineExceeded:
            raise  # the probe's own bound, not the service's answer
        except Exception as exc:  # an in-process service that crashes is a lost answer
            return Reply(None, None, f"the target raised {type(exc).__name__}: {exc}")

    def open(self, label: str, credit_line: int = LINE) -> str:
        account_id = self.account_id(label)
        reply = self.call("POST", "/v1/accounts", _open_body(account_id, credit_line,
                                                              self.request_id(label)))
        _require("open the account", reply, 201, "the account's state")
        return account_id

    def write(self, account_id: str, kind: str, request_id: str | None = None,
              **fields: Any) -> tuple[str, Reply]:
        request_id = request_id or self.request_id(kind)
        path = f"/v1/accounts/{account_id}/{WRITE_PATHS[kind]}"
        return request_id, self.call("POST", path, {**fields, "request_id": request_id})

    def must(self, account_id: str, kind: str, **fields: Any) -> dict:
        """A write the check needs accepted; its receipt."""
        _, reply = self.write(account_id, kind, **fields)
        _require(f"{kind} {fields}", reply, 201, "a receipt {entry_id, seq}")
        return reply.body if isinstance(reply.body, dict) else {}

    # the ledger
    def page(self, after_seq: int, limit: int) -> tuple[list, int] | None:
        """(entries, next_seq) of one well-formed ledger page, else None."""
        reply = self.call("GET", "/v1/ledger", query={"after_seq": str(after_seq),
                                                      "limit": str(limit)})
        body = reply.body
        if reply.status != 200 or not isinstance(body, dict):
            return None
        entries, next_seq = body.get("entries"), body.get("next_seq")
        if not isinstance(entries, list) or not _is_int(next_seq):
            return None
        return entries, next_seq

    def entries(self, account_id: str) -> list[dict]:
        """This account's ledger entries in seq order (read from where the probe started)."""
        found: list[dict] = []
        after_seq = self.start_seq
        for _ in range(LEDGER_PAGES_MAX):
            page = self.page(after_seq, LEDGER_PAGE_MAX)
            if page is None:
                raise _SetupFailed("read the ledger", "200 {entries, next_seq}",
                                   _show(self.call("GET", "/v1/ledger",
                                                   query={"after_seq": str(after_seq)})))
            entries, next_seq = page
            if not entries:
                return _checked_entries(found)
            if next_seq <= after_seq:
                raise _SetupFailed("page the ledger", f"next_seq > {after_seq}",
                                   f"next_seq {next_seq}")
            found += [e for e in entries if isinstance(e, dict)
                      and e.get("account_id") == account_id]
            after_seq = next_seq
        raise _SetupFailed("read the ledger", f"its end within {LEDGER_PAGES_MAX} pages",
                           "more pages")

    # chaos
    def chaos_listing(self) -> Reply:
        if self._chaos_listing is None:
            self._chaos_listing = self.call("GET", "/v1/chaos")
        return self._chaos_listing

    def supported_kinds(self) -> list[str]:
        body = self.chaos_listing().body
        supported = body.get("supported") if isinstance(body, dict) else None
        return [k for k in supported if isinstance(k, str)] if isinstance(supported, list) else []

    def active_fault_ids(self) -> list[str] | None:
        reply = self.call("GET", "/v1/chaos")
        active = reply.body.get("active") if isinstance(reply.body, dict) else None
        if reply.status != 200 or not isinstance(active, list):
            return None
        return [f.get("fault_id") for f in active if isinstance(f, dict)]

    def add_fault(self, fault: dict) -> Reply:
        reply = self.call("POST", "/v1/chaos/faults", fault)
        fault_id = reply.body.get("fault_id") if isinstance(reply.body, dict) else None
        if isinstance(fault_id, str):
            self.fault_ids.add(fault_id)
        return reply

    def remove_fault(self, fault_id: str) -> Reply:
        reply = self.call("DELETE", f"/v1/chaos/faults/{fault_id}")
        if reply.status == 204:
            self.fault_ids.discard(fault_id)
        return reply

    def clean_up(self) -> None:
        for fault_id in sorted(self.fault_ids):
            self.remove_fault(fault_id)


def _require(step: str, reply: Reply, status: int, shape: str) -> None:
    if reply.status != status:
        raise _SetupFailed(step, f"{status} {shape}", _show(reply))


def _checked_entries(entries: list[dict]) -> list[dict]:
    for entry in entries:
        if not _well_formed_entry(entry):
            raise _SetupFailed("read the account's entries",
                               "entries with an integer seq, a known type and its fields",
                               _show_value(entry))
    entries = sorted(entries, key=lambda e: e["seq"])
    if len({e["seq"] for e in entries}) != len(entries):
        raise _SetupFailed("read the account's entries", "distinct seqs", "a seq twice")
    return entries


def _well_formed_entry(entry: dict) -> bool:
    kind = entry.get("type")
    if not _is_int(entry.get("seq")) or kind not in ENTRY_TYPES:
        return False
    value = entry.get(oracle.VALUE_FIELD[kind])
    return isinstance(value, str) if kind == "status" else _is_int(value)


# -- sending bytes the Target protocol cannot carry ----------------------------------------------
def _raw_sender(target: Target) -> Callable[[str, str, bytes], Reply] | None:
    """How to send a body as raw bytes (malformed JSON, an oversized body), or None when the
    target takes parsed JSON only (embedded, adapter): those are rules of the HTTP edge."""
    send = getattr(target, "request_raw", None)
    return send if callable(send) else None


# -- shapes and showing --------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return type(value) is int  # JSON true is not a number


def _open_body(account_id: str, credit_line: int, request_id: str) -> dict:
    return {"account_id": account_id, "product": "huabei", "credit_line": credit_line,
            "request_id": request_id}


def _is_receipt(reply: Reply) -> bool:
    body = reply.body
    return (reply.status == 201 and isinstance(body, dict) and is_id(body.get("entry_id"))
            and _is_int(body.get("seq")) and body["seq"] > 0)


def _is_error(reply: Reply, status: int, code: str) -> bool:
    body = reply.body
    return (reply.status == status and isinstance(body, dict) and body.get("error") == code
            and isinstance(body.get("detail"), str))


def _show(reply: Reply) -> str:
    if reply.status is None:
        return f"no answer ({reply.error})"
    if reply.body is None:
        return f"{reply.status} (no body)" + (f" ({reply.error})" if reply.error else "")
    return f"{reply.status} {_show_value(reply.body)}"


def _show_value(value: Any) -> str:
    text = orjson.dumps(value, default=repr, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= SHOW_CHARS_MAX else text[:SHOW_CHARS_MAX - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


RECEIPT = "201 {entry_id, seq}"


def _expect_error(reply: Reply, status: int, code: str, why: str) -> Verdict:
    return _judge(_is_error(reply, status, code), f"{status} {{error: {code}, detail}}",
                  _show(reply), why)


# -- checks: health and open ---------------------------------------------------------------------
def check_health(s: _Session) -> Verdict:
    reply = s.call("GET", "/v1/health")
    return _judge(reply.status == 200 and reply.body == {"status": "ok"}, '200 {"status": "ok"}',
                  _show(reply), "GET /v1/health must answer 200 {\"status\": \"ok\"}")


def check_open_created(s: _Session) -> Verdict:
    account_id = s.account_id("open-new")
    reply = s.call("POST", "/v1/accounts", _open_body(account_id, LINE, s.request_id("open")))
    expected = {"account_id": account_id, **oracle.opened(LINE).view()}
    body = reply.body if isinstance(reply.body, dict) else {}
    shown = {k: body.get(k) for k in expected}
    return _judge(reply.status == 201 and shown == expected, f"201 {_show_value(expected)}",
                  _show(reply), "a new account answers 201 with its state: the full line "
                  "available, nothing outstanding, status active, usable")


def check_open_replay(s: _Session) -> Verdict:
    account_id, request_id = s.account_id("open-again"), s.request_id("open")
    first = s.call("POST", "/v1/accounts", _open_body(account_id, LINE, request_id))
    _require("open the account", first, 201, "the account's state")
    again = s.call("POST", "/v1/accounts", _open_body(account_id, LINE, request_id))
    opens = [e for e in s.entries(account_id) if e["type"] == "open"]
    return _judge((again.status, again.body) == (first.status, first.body) and len(opens) == 1,
                  f"the first answer again ({_show(first)}) and one open entry",
                  f"{_show(again)}; {len(opens)} open entries",
                  "repeating an open with its request_id must return the original answer and "
                  "write nothing")


def check_open_exists(s: _Session) -> Verdict:
    account_id = s.open("open-twice")
    reply = s.call("POST", "/v1/accounts", _open_body(account_id, LINE + 1, s.request_id("open")))
    return _expect_error(reply, 409, "exists",
                         "a different open request on an existing account id is 409 exists")


# -- checks: receipts and the ledger -------------------------------------------------------------
def _receipt_check(s: _Session, label: str, kind: str, setup: list[tuple[str, dict]],
                   fields: dict) -> Verdict:
    account_id = s.open(label)
    for setup_kind, setup_fields in setup:
        s.must(account_id, setup_kind, **setup_fields)
    _, reply = s.write(account_id, kind, **fields)
    return _judge(_is_receipt(reply), RECEIPT, _show(reply),
                  f"an accepted {kind} answers 201 with the entry_id and seq it wrote")


def check_draw_receipt(s: _Session) -> Verdict:
    return _receipt_check(s, "draw", "draw", [], {"amount": 1_000})


def check_repay_receipt(s: _Session) -> Verdict:
    # Repays exactly the outstanding balance: that edge is accepted too.
    return _receipt_check(s, "repay", "repay", [("draw", {"amount": 1_000})], {"amount": 1_000})


def check_limit_receipt(s: _Session) -> Verdict:
    return _receipt_check(s, "limit", "limit", [], {"credit_line": 20_000, "reason": "conform"})


def check_status_receipt(s: _Session) -> Verdict:
    return _receipt_check(s, "status", "status", [], {"status": "frozen", "reason": "conform"})


def check_ledger_entries(s: _Session) -> Verdict:
    account_id = s.account_id("ledger")
    open_id = s.request_id("open")
    reply = s.call("POST", "/v1/accounts", _open_body(account_id, LINE, open_id))
    _require("open the account", reply, 201, "the account's state")
    writes = [("open", open_id, {"product": "huabei", "credit_line": LINE}, None)]
    for kind, fields in (("draw", {"amount": 3_000}), ("repay", {"amount": 1_000}),
                         ("limit", {"credit_line": 8_000, "reason": "conform"}),
                         ("status", {"status": "frozen", "reason": "conform"})):
        request_id, reply = s.write(account_id, kind, **fields)
        _require(f"{kind} {fields}", reply, 201, "a receipt")
        writes.append((kind, request_id, fields, reply.body if isinstance(reply.body, dict)
                       else {}))
    entries = s.entries(account_id)
    wrong = _entry_mismatch(entries, writes, account_id)
    return _judge(wrong is None, "one entry per acknowledged write, in order, with its fields, "
                  "receipt and an RFC 3339 UTC `at`", wrong or f"{len(entries)} entries as written",
                  "every acknowledged write must be in the ledger exactly once, as it was asked")


def _entry_mismatch(entries: list[dict], writes: list, account_id: str) -> str | None:
    if len(entries) != len(writes):
        return f"{len(entries)} entries for {len(writes)} writes: {_show_value(entries)}"
    for entry, (kind, request_id, fields, receipt) in zip(entries, writes):
        expected = {"type": kind, "request_id": request_id, "account_id": account_id, **fields}
        if receipt is not None:
            expected.update(entry_id=receipt.get("entry_id"), seq=receipt.get("seq"))
        seen = {k: entry.get(k) for k in expected}
        if seen != expected:
            return f"entry {_show_value(seen)} for {_show_value(expected)}"
        if not isinstance(entry.get("at"), str) or not RFC3339_UTC.fullmatch(entry["at"]):
            return f"at {entry.get('at')!r}"
        if not is_id(entry.get("entry_id")):
            return f"entry_id {entry.get('entry_id')!r}"
    return None


# -- checks: idempotency -------------------------------------------------------------------------
def check_idempotency_draw(s: _Session) -> Verdict:
    account_id = s.open("idem-draw")
    request_id, first = s.write(account_id, "draw", amount=1_000)
    _require("draw 1000", first, 201, "a receipt")
    _, again = s.write(account_id, "draw", request_id, amount=1_000)
    written = [e for e in s.entries(account_id) if e.get("request_id") == request_id]
    return _judge((again.status, again.body) == (first.status, first.body) and len(written) == 1,
                  f"the first answer again ({_show(first)}) and one ledger entry",
                  f"{_show(again)}; {len(written)} entries",
                  "a retried draw (same request_id) must return the original answer and never "
                  "write a second entry")


def check_idempotency_rejection(s: _Session) -> Verdict:
    account_id = s.open("idem-refused", 1_000)
    request_id, first = s.write(account_id, "draw", amount=2_000)
    if not _is_error(first, 409, "insufficient_limit"):
        raise _SetupFailed("draw 2000 on a 1000 line", "409 insufficient_limit", _show(first))
    s.must(account_id, "limit", credit_line=5_000, reason="conform")
    _, again = s.write(account_id, "draw", request_id, amount=2_000)
    draws = [e for e in s.entries(account_id) if e["type"] == "draw"]
    return _judge((again.status, again.body) == (first.status, first.body) and not draws,
                  f"the original refusal again ({_show(first)}) and no draw entry",
                  f"{_show(again)}; {len(draws)} draw entries",
                  "every outcome but a 400 is remembered: a retried refused draw is refused again "
                  "even after the line was raised (a new attempt needs a new request_id)")


def check_bad_request_not_remembered(s: _Session) -> Verdict:
    account_id = s.open("idem-400")
    request_id, first = s.write(account_id, "draw", amount=0)
    if first.status != 400:
        raise _SetupFailed("draw 0", "400 bad_request", _show(first))
    _, again = s.write(account_id, "draw", request_id, amount=100)
    return _judge(_is_receipt(again), RECEIPT, _show(again),
                  "a 400 is not remembered: the corrected request may reuse its request_id")


# -- checks: acceptance rules --------------------------------------------------------------------
def check_draw_exact_available(s: _Session) -> Verdict:
    account_id = s.open("exact")
    s.must(account_id, "draw", amount=3_000)
    _, reply = s.write(account_id, "draw", amount=LINE - 3_000)
    return _judge(_is_receipt(reply), RECEIPT, _show(reply),
                  "a draw of exactly the available limit is accepted (0 < amount <= available)")


def check_draw_insufficient_limit(s: _Session) -> Verdict:
    account_id = s.open("over")
    _, reply = s.write(account_id, "draw", amount=LINE + 1)
    return _expect_error(reply, 409, "insufficient_limit",
                         "a draw above the available limit of an active account is 409")


def check_repay_overpayment(s: _Session) -> Verdict:
    account_id = s.open("overpay")
    s.must(account_id, "draw", amount=1_000)
    _, reply = s.write(account_id, "repay", amount=1_001)
    return _expect_error(reply, 422, "overpayment",
                         "a repayment above the outstanding balance is 422 overpayment")


def check_status_outstanding_balance(s: _Session) -> Verdict:
    account_id = s.open("close-owing")
    s.must(account_id, "draw", amount=1_000)
    _, reply = s.write(account_id, "status", status="closed", reason="conform")
    return _expect_error(reply, 409, "outstanding_balance",
                         "an account that still owes money cannot be closed")


def check_draw_frozen(s: _Session) -> Verdict:
    account_id = s.open("frozen")
    s.must(account_id, "status", status="frozen", reason="conform")
    _, reply = s.write(account_id, "draw", amount=100)
    return _expect_error(reply, 423, "account_not_active",
                         "only an active account may draw: frozen is 423")


def _closed_check(s: _Session, label: str, kind: str, fields: dict) -> Verdict:
    account_id = s.open(label)
    s.must(account_id, "status", status="closed", reason="conform")
    _, reply = s.write(account_id, kind, **fields)
    return _expect_error(reply, 423, "account_not_active",
                         f"a closed account takes no {kind}: 423 account_not_active")


def check_draw_closed(s: _Session) -> Verdict:
    return _closed_check(s, "closed-draw", "draw", {"amount": 100})


def check_repay_closed(s: _Session) -> Verdict:
    return _closed_check(s, "closed-repay", "repay", {"amount": 100})


def check_limit_closed(s: _Session) -> Verdict:
    return _closed_check(s, "closed-limit", "limit", {"credit_line": 1, "reason": "conform"})


def check_status_reopen(s: _Session) -> Verdict:
    account_id = s.open("reopen")
    s.must(account_id, "status", status="closed", reason="conform")
    _, reopened = s.write(account_id, "status", status="active", reason="conform")
    _, drawn = s.write(account_id, "draw", amount=100)
    return _judge(_is_receipt(reopened) and _is_receipt(drawn),
                  f"{RECEIPT} for status active, then for a draw",
                  f"{_show(reopened)}; then {_show(drawn)}",
                  "any status may follow any other: closed -> active reopens the account")


def check_cure(s: _Session) -> Verdict:
    account_id = s.open("cure")
    s.must(account_id, "draw", amount=4_000)
    s.must(account_id, "status", status="overdue", reason="conform")
    request_id, reply = s.write(account_id, "repay", amount=4_000)
    _require("repay 4000 in full", reply, 201, "a receipt")
    entries = s.entries(account_id)
    repays = [i for i, e in enumerate(entries) if e.get("request_id") == request_id]
    following = entries[repays[0] + 1:] if len(repays) == 1 else []
    expected = {"type": "status", "status": "active", "reason": "cured",
                "request_id": request_id + ":cure"}
    cure = {k: following[0].get(k) for k in expected} if following else None
    return _judge(cure == expected and len(following) == 1,
                  f"the account's next entry after the repay: {_show_value(expected)}",
                  _show_value(cure) if cure else "no entry after the repay",
                  "cure rule: a repay that clears an overdue balance appends status active, "
                  "reason cured, request_id + ':cure', in the same transaction")


# -- checks: not found ---------------------------------------------------------------------------
def check_not_found_write(s: _Session) -> Verdict:
    _, reply = s.write(f"{s.prefix}-no-such-account", "draw", amount=100)
    return _expect_error(reply, 404, "not_found", "a write to an unknown account is 404")


def check_not_found_display(s: _Session) -> Verdict:
    reply = s.call("GET", f"/v1/accounts/{s.prefix}-no-such-account/display")
    return _expect_error(reply, 404, "not_found", "the display of an unknown account is 404")


def check_unknown_route(s: _Session) -> Verdict:
    reply = s.call("GET", f"/v1/{s.prefix}-no-such-route")
    return _judge(reply.status == 404, "404", _show(reply), "an unknown route is 404")


# -- checks: ledger paging -----------------------------------------------------------------------
def _ledger_get(s: _Session, **query: str) -> Reply:
    return s.call("GET", "/v1/ledger", query=query)


def _page_problem(reply: Reply, after_seq: int, limit: int) -> str | None:
    """What is wrong with a ledger page for `after_seq`, `limit`; None when nothing is."""
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict):
        return "not 200 {entries, next_seq}"
    entries, next_seq = body.get("entries"), body.get("next_seq")
    if not isinstance(entries, list) or not _is_int(next_seq):
        return "not {entries: [...], next_seq: integer}"
    seqs = [e.get("seq") if isinstance(e, dict) else None for e in entries]
    if not all(_is_int(q) and q > after_seq for q in seqs):
        return f"an entry without a seq above after_seq {after_seq}"
    if any(a >= b for a, b in zip(seqs, seqs[1:])):
        return "entries not in ascending seq order"
    if len(entries) > limit:
        return f"{len(entries)} entries for limit {limit}"
    if next_seq != (seqs[-1] if seqs else after_seq):
        return f"next_seq {next_seq} is not the last seq returned (or after_seq when none)"
    return None


def check_ledger_limit_one(s: _Session) -> Verdict:
    reply = _ledger_get(s, after_seq=str(s.start_seq), limit="1")
    problem = _page_problem(reply, s.start_seq, 1)
    count = len(reply.body["entries"]) if problem is None else None
    return _judge(problem is None and count == 1, "200, exactly 1 entry, next_seq its seq",
                  problem or f"{count} entries", "limit=1 returns one entry (the probe's own "
                  "entries lie beyond after_seq) and next_seq is its seq")


def check_ledger_limit_capped(s: _Session) -> Verdict:
    reply = _ledger_get(s, after_seq=str(s.start_seq), limit=str(LEDGER_PAGE_MAX + 1))
    problem = _page_problem(reply, s.start_seq, LEDGER_PAGE_MAX)
    return _judge(problem is None, f"200 with at most {LEDGER_PAGE_MAX} entries",
                  problem or _show(reply), f"a limit above {LEDGER_PAGE_MAX} is treated as "
                  f"{LEDGER_PAGE_MAX}, not refused")


def check_ledger_beyond_head(s: _Session) -> Verdict:
    reply = _ledger_get(s, after_seq=str(BEYOND_HEAD_SEQ), limit="10")
    expected = {"entries": [], "next_seq": BEYOND_HEAD_SEQ}
    return _judge(reply.status == 200 and reply.body == expected, f"200 {_show_value(expected)}",
                  _show(reply), "beyond the head there are no entries and next_seq is after_seq")


def _bad_query_check(s: _Session, query: dict, what: str) -> Verdict:
    reply = _ledger_get(s, **query)
    return _expect_error(reply, 400, "bad_request", f"{what} in a ledger query is 400")


def check_ledger_after_seq_negative(s: _Session) -> Verdict:
    return _bad_query_check(s, {"after_seq": "-1"}, "a negative after_seq")


def check_ledger_after_seq_not_integer(s: _Session) -> Verdict:
    return _bad_query_check(s, {"after_seq": "one"}, "a non-integer after_seq")


def check_ledger_limit_zero(s: _Session) -> Verdict:
    return _bad_query_check(s, {"limit": "0"}, "limit 0")


# -- checks: bad input ---------------------------------------------------------------------------
def _bad_input_check(s: _Session, label: str, send: Callable[[str], Reply], status: int,
                     code: str, why: str) -> Verdict:
    """Send one bad write to a fresh account: it must be refused and leave no entry."""
    account_id = s.open(label)
    reply = send(account_id)
    written = sum(1 for e in s.entries(account_id) if e["type"] != "open")
    if not _is_error(reply, status, code) or written:
        return _fail(f"{status} {{error: {code}, detail}} and nothing written",
                     f"{_show(reply)}; {written} entries written", why)
    return _pass(f"{status} {code}", _show(reply))


def _bad_draw(s: _Session, label: str, body: dict, what: str) -> Verdict:
    def send(account_id: str) -> Reply:
        return s.call("POST", f"/v1/accounts/{account_id}/draws",
                      {**body, "request_id": s.request_id(label)})

    return _bad_input_check(s, label, send, 400, "bad_request", f"{what} is 400 bad_request")


def check_input_missing_field(s: _Session) -> Verdict:
    return _bad_draw(s, "no-amount", {}, "a draw without an amount")


def check_input_wrong_type(s: _Session) -> Verdict:
    return _bad_draw(s, "str-amount", {"amount": "100"}, "an amount given as a string")


def check_input_bool_amount(s: _Session) -> Verdict:
    return _bad_draw(s, "bool-amount", {"amount": True}, "an amount given as true")


def check_input_non_positive_amount(s: _Session) -> Verdict:
    zero = _bad_draw(s, "zero-amount", {"amount": 0}, "an amount of 0")
    if zero[0] != "pass":
        return zero
    return _bad_draw(s, "negative-amount", {"amount": -100}, "a negative amount")


def check_input_unknown_status(s: _Session) -> Verdict:
    def send(account_id: str) -> Reply:
        return s.write(account_id, "status", status="deleted", reason="conform")[1]

    return _bad_input_check(s, "bad-status", send, 400, "bad_request",
                            "a status outside active, frozen, overdue, closed is 400")


def check_input_malformed_json(s: _Session) -> Verdict:
    if s.send_raw is None:
        return _skip("the target takes parsed JSON, so malformed bytes cannot reach it; run "
                     "conform against the service's URL to judge this HTTP rule")
    send_raw = s.send_raw
    data = b'{"amount": 100, "request_id": '

    def send(account_id: str) -> Reply:
        return send_raw("POST", f"/v1/accounts/{account_id}/draws", data)

    return _bad_input_check(s, "bad-json", send, 400, "bad_request",
                            "a body that is not valid JSON is 400 bad_request")


def check_input_too_large(s: _Session) -> Verdict:
    if s.send_raw is None:
        return _skip("the target takes parsed JSON, so body size is not its concern; run "
                     "conform against the service's URL to judge this HTTP rule")
    send_raw = s.send_raw

    def send(account_id: str) -> Reply:
        body = {"amount": 100, "request_id": s.request_id("big"), "pad": "x" * BODY_BYTES_MAX}
        return send_raw("POST", f"/v1/accounts/{account_id}/draws", orjson.dumps(body))

    return _bad_input_check(s, "too-large", send, 413, "too_large",
                            f"a body over {BODY_BYTES_MAX // 1024} KiB is 413 too_large")


# -- checks: the display on a quiet account ------------------------------------------------------
def _display_run(s: _Session) -> tuple[str, list[dict], list[Reply]]:
    """A quiet account whose line was cut below its balance, then its display polled until it
    shows the last entry or DISPLAY_WAIT_MS pass: (account, its entries, every answer seen).
    Run once; both display checks judge it."""
    if s.display_memo is None:
        try:
            s.display_memo = ("ok", _poll_display(s))
        except _SetupFailed as exc:
            s.display_memo = ("setup", exc)
    kind, value = s.display_memo
    if kind == "setup":
        raise value
    return value


def _poll_display(s: _Session) -> tuple[str, list[dict], list[Reply]]:
    account_id = s.open("display")
    s.must(account_id, "draw", amount=8_000)
    # A cut below the balance: available must floor at 0 and the lower line must show.
    s.must(account_id, "limit", credit_line=5_000, reason="conform")
    entries = s.entries(account_id)
    if [e["type"] for e in entries] != ["open", "draw", "limit"]:
        raise _SetupFailed("read the account's entries", "open, draw, limit",
                           _show_value(entries))
    last_seq = entries[-1]["seq"]
    final = oracle.replay(entries)[-1][1].view()
    deadline_ms = s.target.now_ms() + DISPLAY_WAIT_MS
    seen: list[Reply] = []
    for _ in range(DISPLAY_POLLS_MAX):
        reply = s.call("GET", f"/v1/accounts/{account_id}/display")
        seen.append(reply)
        if _caught_up(reply, last_seq, final) or s.target.now_ms() >= deadline_ms:
            break
        s.target.wait_ms(DISPLAY_POLL_EVERY_MS)
    return account_id, entries, seen


def _caught_up(reply: Reply, last_seq: int, final: dict) -> bool:
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict):
        return False
    as_of_seq = body.get("as_of_seq")
    if as_of_seq is None:
        return {k: body.get(k) for k in STATE_FIELDS} == final
    return _is_int(as_of_seq) and as_of_seq >= last_seq


def _display_lie(reply: Reply, account_id: str, timeline: list) -> str | None:
    """Why this display answer is not allowed; None when it is (old is fine, invented is not)."""
    body = reply.body
    if reply.status == 503:
        return None if _is_error(reply, 503, "display_unavailable") else _show(reply)
    if reply.status != 200 or not isinstance(body, dict):
        return _show(reply)
    as_of_seq = body.get("as_of_seq")
    if body.get("account_id") != account_id or not (as_of_seq is None or _is_int(as_of_seq)):
        return _show(reply)
    if as_of_seq is None:
        return None  # nothing claimed; catching up judges it
    then = oracle.state_at(timeline, as_of_seq)
    shown = {k: body.get(k) for k in STATE_FIELDS}
    if then is None or shown != then.view():
        truth = "no account yet" if then is None else _show_value(then.view())
        return f"{_show(reply)} while the oracle at seq {as_of_seq} is {truth}"
    return None


def check_display_honest(s: _Session) -> Verdict:
    account_id, entries, seen = _display_run(s)
    timeline = oracle.replay(entries)
    lies = [lie for lie in (_display_lie(r, account_id, timeline) for r in seen) if lie]
    judged = sum(1 for r in seen if r.status == 200)
    return _judge(not lies, "every 200 equal to the oracle at its as_of_seq (or a 503 "
                  "display_unavailable)", lies[0] if lies else f"{judged} displays, all honest",
                  "a display may be old, never invented: each field must equal the ledger's "
                  "state at as_of_seq")


def check_display_catches_up(s: _Session) -> Verdict:
    account_id, entries, seen = _display_run(s)
    last_seq = entries[-1]["seq"]
    final = oracle.replay(entries)[-1][1].view()
    last = seen[-1]
    expected = (f"200 {_show_value({**final, 'as_of_seq': last_seq})} within "
                f"{DISPLAY_WAIT_MS} ms")
    body = last.body if isinstance(last.body, dict) else {}
    equal = last.status == 200 and {k: body.get(k) for k in STATE_FIELDS} == final
    if not (equal and _caught_up(last, last_seq, final)):
        return _fail(expected, _show(last), "a quiet account's display must show the oracle "
                     "at its last ledger entry within the service level")
    if body.get("as_of_seq") is None:
        return _pass(expected, _show(last), "as_of_seq is null: judged against the final "
                     "state only")
    return _pass(expected, _show(last))


# -- checks: chaos (optional) --------------------------------------------------------------------
def _chaos_gate(s: _Session) -> Verdict | None:
    """A verdict when the chaos checks cannot run (off, or no chaos API); None when they can."""
    if s.chaos is False:
        return _skip("chaos checks are off for this run")
    reply = s.chaos_listing()
    if reply.status == 200 or (reply.status != 404 and s.chaos is None):
        return None  # a service that answers claims the API: its shape is judged
    if s.chaos:
        return _fail("200 from GET /v1/chaos", _show(reply),
                     "chaos checks were asked for but the service lists no chaos API")
    return _skip(f"the service lists no chaos API (GET /v1/chaos: {_show(reply)}); it is "
                 "optional, and no faults will be injected")


def check_chaos_listing(s: _Session) -> Verdict:
    gate = _chaos_gate(s)
    if gate:
        return gate
    reply = s.chaos_listing()
    body = reply.body if isinstance(reply.body, dict) else {}
    supported, active = body.get("supported"), body.get("active")
    ok = (reply.status == 200 and isinstance(supported, list)
          and all(isinstance(k, str) for k in supported) and isinstance(active, list)
          and all(isinstance(f, dict) and is_id(f.get("fault_id")) and isinstance(
              f.get("kind"), str) for f in active))
    return _judge(ok, "200 {supported: [kinds], active: [{fault_id, kind, ...}]}", _show(reply),
                  "GET /v1/chaos lists the kinds supported and the faults active")


def check_chaos_add_remove(s: _Session) -> Verdict:
    gate = _chaos_gate(s)
    if gate:
        return gate
    if "delay_sync" not in s.supported_kinds():
        return _skip("delay_sync is not listed as supported, so nothing is injected")
    fault = {"kind": "delay_sync", "delay_ms": 1}
    added = s.add_fault(fault)
    body = added.body if isinstance(added.body, dict) else {}
    fault_id = body.get("fault_id")
    if added.status != 201 or not is_id(fault_id) or {k: body.get(k) for k in fault} != fault:
        return _fail("201 {fault_id, kind: delay_sync, delay_ms: 1}", _show(added),
                     "adding a fault answers 201 with its fault_id and the fault as given")
    before = s.active_fault_ids()
    removed = s.remove_fault(fault_id)
    after = s.active_fault_ids()
    listed = before is not None and fault_id in before
    gone = after is not None and fault_id not in after
    return _judge(listed and removed.status == 204 and gone,
                  "listed as active, then 204 on delete, then no longer listed",
                  f"listed {listed}; delete {_show(removed)}; gone {gone}",
                  "an added fault is active until DELETE /v1/chaos/faults/{fault_id} removes it")


def check_chaos_unknown_kind(s: _Session) -> Verdict:
    gate = _chaos_gate(s)
    if gate:
        return gate
    reply = s.add_fault({"kind": f"{s.prefix}-no-such-kind"})
    return _expect_error(reply, 400, "bad_request", "an unknown fault kind is 400")


def check_chaos_remove_unknown(s: _Session) -> Verdict:
    gate = _chaos_gate(s)
    if gate:
        return gate
    reply = s.call("DELETE", f"/v1/chaos/faults/{s.prefix}-no-such-fault")
    return _expect_error(reply, 404, "not_found", "removing a fault that is not active is 404")


def check_chaos_clear_all(s: _Session) -> Verdict:
    gate = _chaos_gate(s)
    if gate:
        return gate
    others = [f for f in (s.active_fault_ids() or []) if f not in s.fault_ids]
    if others:
        return _skip(f"{len(others)} faults the probe did not add are active; clearing them "
                     "would disturb whoever added them")
    if "delay_sync" in s.supported_kinds():
        s.add_fault({"kind": "delay_sync", "delay_ms": 1})  # something to clear
    reply = s.call("DELETE", "/v1/chaos/faults")
    if reply.status == 204:
        s.fault_ids.clear()
    left = s.active_fault_ids()
    return _judge(reply.status == 204 and left == [], "204, then no fault active",
                  f"{_show(reply)}; then active {left}",
                  "DELETE /v1/chaos/faults clears every fault")


def check_sync_shape(s: _Session) -> Verdict:
    if s.chaos is False:
        return _skip("chaos checks are off for this run")
    reply = s.call("GET", "/v1/sync")
    if reply.status == 404:
        return _skip("GET /v1/sync is optional and the service does not have it")
    body = reply.body if isinstance(reply.body, dict) else {}
    ledger_seq, applied_seq = body.get("ledger_seq"), body.get("applied_seq")
    ok = (reply.status == 200 and _is_int(ledger_seq) and _is_int(applied_seq)
          and 0 <= applied_seq <= ledger_seq)
    return _judge(ok, "200 {ledger_seq, applied_seq} with 0 <= applied_seq <= ledger_seq",
                  _show(reply), "GET /v1/sync reports how far the display has caught up")


# -- the run -------------------------------------------------------------------------------------
CHECKS: tuple[tuple[str, Callable[[_Session], Verdict]], ...] = (
    ("health", check_health),
    ("open.created", check_open_created),
    ("open.replay", check_open_replay),
    ("open.exists", check_open_exists),
    ("draw.receipt", check_draw_receipt),
    ("repay.receipt", check_repay_receipt),
    ("limit.receipt", check_limit_receipt),
    ("status.receipt", check_status_receipt),
    ("ledger.entries", check_ledger_entries),
    ("idempotency.draw", check_idempotency_draw),
    ("idempotency.rejection", check_idempotency_rejection),
    ("idempotency.bad_request", check_bad_request_not_remembered),
    ("draw.exact_available", check_draw_exact_available),
    ("draw.insufficient_limit", check_draw_insufficient_limit),
    ("repay.overpayment", check_repay_overpayment),
    ("status.outstanding_balance", check_status_outstanding_balance),
    ("draw.frozen", check_draw_frozen),
    ("draw.closed", check_draw_closed),
    ("repay.closed", check_repay_closed),
    ("limit.closed", check_limit_closed),
    ("status.reopen", check_status_reopen),
    ("cure", check_cure),
    ("not_found.write", check_not_found_write),
    ("not_found.display", check_not_found_display),
    ("route.unknown", check_unknown_route),
    ("ledger.limit_one", check_ledger_limit_one),
    ("ledger.limit_capped", check_ledger_limit_capped),
    ("ledger.beyond_head", check_ledger_beyond_head),
    ("ledger.after_seq_negative", check_ledger_after_seq_negative),
    ("ledger.after_seq_not_integer", check_ledger_after_seq_not_integer),
    ("ledger.limit_zero", check_ledger_limit_zero),
    ("input.malformed_json", check_input_malformed_json),
    ("input.missing_field", check_input_missing_field),
    ("input.wrong_type", check_input_wrong_type),
    ("input.bool_amount", check_input_bool_amount),
    ("input.non_positive_amount", check_input_non_positive_amount),
    ("input.unknown_status", check_input_unknown_status),
    ("input.too_large", check_input_too_large),
    ("display.honest", check_display_honest),
    ("display.catches_up", check_display_catches_up),
    ("chaos.listing", check_chaos_listing),
    ("chaos.add_remove", check_chaos_add_remove),
    ("chaos.unknown_kind", check_chaos_unknown_kind),
    ("chaos.remove_unknown", check_chaos_remove_unknown),
    ("chaos.clear_all", check_chaos_clear_all),
    ("sync.shape", check_sync_shape),
)
CHECK_NAMES = tuple(name for name, _ in CHECKS)


def conform(target: Target, *, chaos: bool | None = None, tag: str | None = None,
            deadline: Deadline | None = None) -> list[Check]:
    """Run every check against `target`, in order; one `Check` each.

    `chaos`: None runs the chaos checks when the service lists a chaos API, True requires it,
    False skips them. `tag` starts every account and request id the probe makes (1 to 24 of
    `[A-Za-z0-9._-]`; a random part follows it, so runs never collide). Raises TargetError
    when the target does not answer at all, UsageError for a bad tag. `deadline` (the one a
    `deadline.BoundedTarget` checks) learns each check's name as its phase; when it passes,
    the DeadlineExceeded carries the checks judged so far as `.checks`.
    """
    session = _Session(target, run_prefix(tag), chaos)
    health = session.call("GET", "/v1/health")
    if health.status is None:
        raise TargetError(f"target {target.name} does not answer (GET /v1/health: "
                          f"{health.error}); is it running, and is the URL right?")
    session.start_seq = ledger_head_seq(target)
    checks: list[Check] = []
    try:
        for name, check in CHECKS:
            if deadline is not None:
                deadline.enter(name)
            checks.append(_run_check(session, name, check))
        return checks
    except DeadlineExceeded as exc:
        exc.checks = checks
        raise
    finally:
        session.clean_up()


def default_max_run_s(timeout_s: float) -> float:
    return MAX_RUN_BASE_S + MAX_RUN_TIMEOUTS * timeout_s


def run_prefix(tag: str | None) -> str:
    if tag is None:
        return f"cf{uuid.uuid4().hex[:10]}"
    if not TAG_PATTERN.fullmatch(tag):
        raise UsageError(f"tag {tag!r} must be 1 to 24 characters from [A-Za-z0-9._-]")
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _run_check(session: _Session, name: str, check: Callable[[_Session], Verdict]) -> Check:
    try:
        verdict = check(session)
    except DeadlineExceeded:
        raise  # the probe ran out of time: no verdict on this rule
    except _SetupFailed as exc:
        verdict = _fail(exc.expected, exc.actual, f"could not get as far as this rule: the step "
                        f"'{exc.step}' went wrong; fix that first")
    except Exception as exc:  # an answer the probe did not foresee fails this check, not the run
        verdict = _fail("an answer the probe can judge", f"{type(exc).__name__}: {exc}",
                        "the answers broke the probe's expectations of their shape; compare "
                        "them with docs/contract.md")
    outcome, expected, actual, why = verdict
    assert outcome in OUTCOMES, outcome
    return Check(name, outcome, _one_line(expected), _one_line(actual), _one_line(why))


# -- rendering -----------------------------------------------------------------------------------
def counts(checks: list[Check]) -> dict[str, int]:
    return {outcome: sum(1 for c in checks if c.outcome == outcome) for outcome in OUTCOMES}


def summary_lines(checks: list[Check]) -> list[str]:
    """One line per check, then the totals."""
    n = counts(checks)
    total = f"conform: {n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"
    if n["fail"]:
        total += ("; each FAIL line names the rule and what came back (the rules: "
                  "`limit-harness contract --format markdown`)")
    return [c.line() for c in checks] + [total]


def to_json(checks: list[Check]) -> bytes:
    n = counts(checks)
    report = {"passed": n["pass"], "failed": n["fail"], "skipped": n["skip"],
              "checks": [asdict(c) for c in checks]}
    return orjson.dumps(report, option=orjson.OPT_INDENT_2)


def to_junit(checks: list[Check]) -> bytes:
    """JUnit XML: one test case per check, for CI test tabs."""
    n = counts(checks)
    totals = {"tests": str(len(checks)), "failures": str(n["fail"]), "errors": "0",
              "skipped": str(n["skip"])}
    root = ET.Element("testsuites", {"name": "conform", **totals})
    suite = ET.SubElement(root, "testsuite", {"name": "conform", **totals})
    for check in checks:
        group = check.name.split(".")[0]
        case = ET.SubElement(suite, "testcase", {"classname": f"conform.{group}",
                                                 "name": _xml_text(check.name)})
        if check.outcome == "fail":
            failure = ET.SubElement(case, "failure", {
                "message": _xml_text(f"expected {check.expected}; got {check.actual}")})
            failure.text = _xml_text(f"{check.why}\nexpected: {check.expected}\n"
                                     f"actual: {check.actual}")
        elif check.outcome == "skip":
            ET.SubElement(case, "skipped", {"message": _xml_text(check.why)})
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_text(text: str) -> str:
    return XML_ILLEGAL.sub("\ufffd", text)


def write_reports(checks: list[Check], report_dir: Path,
                  cut_short: DeadlineExceeded | None = None) -> list[Path]:
    """`conform.json` and `junit.xml` in `report_dir` (made if missing); the paths written.
    A probe `cut_short` writes conform.json alone, with the checks judged so far and an
    `incomplete` entry, and removes a junit.xml left there: never a tab that looks whole."""
    paths = [report_dir / "conform.json", report_dir / "junit.xml"]
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        if cut_short is not None:
            paths[1].unlink(missing_ok=True)
            document = {**orjson.loads(to_json(checks)), "incomplete": {
                "phase": cut_short.phase, "bound_s": cut_short.bound_s,
                "reason": cut_short.reason()}}
            paths[0].write_bytes(redact_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2)))
            return paths[:1]
        paths[0].write_bytes(redact_bytes(to_json(checks)))
        paths[1].write_bytes(redact_bytes(to_junit(checks)))
    except OSError as exc:
        raise UsageError(f"cannot write reports to {report_dir}: {exc.strerror or exc}") from None
    return paths
