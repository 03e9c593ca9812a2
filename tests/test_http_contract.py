"""CONTRACT.md conformance of the reference service over real HTTP (the CLI in a subprocess).

Most tests share the session server, so each uses fresh account and request ids, and the chaos
tests clear every fault they add. Waits are bounded polls; nothing sleeps blindly for a result.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from harness import oracle
from harness.contract import FAULT_KINDS
from harness.service.projector import SNAPSHOT_EVERY_MS
from harness.service.storage import open_ledger

pytestmark = pytest.mark.http

CONVERGE_WITHIN_S = 1.0
POLL_WAIT_S = 3.0  # how long a poll keeps trying, so a miss reports how late it was
POLL_EVERY_S = 0.005
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ENTRY_FIELDS = {"open": {"product", "credit_line"}, "draw": {"amount"}, "repay": {"amount"},
                "limit": {"credit_line", "reason"}, "status": {"status", "reason"}}
FAULT_PARAMS = {
    "delay_sync": {"delay_ms": 60_000},
    "drop_events": {"probability": 1.0},
    "duplicate_events": {"probability": 1.0},
    "reorder_events": {"window": 5},
    "pause_sync": {},
    "maintenance_reset": {"mode": "clear"},
}
WRITE_PATHS = {"draw": "draws", "repay": "repayments", "limit": "limit", "status": "status"}


# -- helpers -------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def open_account(api, credit_line: int = 50_000, product: str = "huabei") -> str:
    account_id = new_id("acct")
    status, body = api.post("/v1/accounts", {"account_id": account_id, "product": product,
                                             "credit_line": credit_line,
                                             "request_id": new_id("open")})
    assert status == 201, body
    return account_id


def write(api, account_id: str, kind: str, request_id: str | None = None, **fields):
    body = {**fields, "request_id": request_id or new_id(kind)}
    return api.post(f"/v1/accounts/{account_id}/{WRITE_PATHS[kind]}", body)


def must_write(api, account_id: str, kind: str, **fields) -> dict:
    status, body = write(api, account_id, kind, **fields)
    assert status == 201, body
    return body


def ledger_seq(api) -> int:
    status, body = api.get("/v1/sync")
    assert status == 200, body
    return body["ledger_seq"]


def ledger_after(api, after_seq: int) -> list[dict]:
    """Every ledger entry with seq > after_seq (paged the way a client must)."""
    out: list[dict] = []
    for _ in range(1000):
        status, page = api.get(f"/v1/ledger?after_seq={after_seq}&limit=10000")
        assert status == 200, page
        if not page["entries"]:
            return out
        out += page["entries"]
        after_seq = page["next_seq"]
    raise AssertionError("the ledger did not end within 1000 pages")


def account_entries(api, account_id: str) -> list[dict]:
    return [e for e in ledger_after(api, 0) if e["account_id"] == account_id]


def oracle_display(entries: list[dict], account_id: str) -> dict:
    state = oracle.replay(entries)[-1][1]
    return {**state.view(), "account_id": account_id, "as_of_seq": entries[-1]["seq"]}


def wait_display(api, account_id: str, expected: dict, wait_s: float = POLL_WAIT_S) -> float:
    """Seconds until the display equals `expected`; fails with the last answer past wait_s."""
    start_s = time.monotonic()
    while True:
        answer = api.get(f"/v1/accounts/{account_id}/display")
        if answer == (200, expected):
            return time.monotonic() - start_s
        if time.monotonic() - start_s > wait_s:
            raise AssertionError(f"display never equalled {expected}; last {answer}")
        time.sleep(POLL_EVERY_S)


def wait_built(api, account_id: str) -> dict:
    expected = oracle_display(account_entries(api, account_id), account_id)
    wait_display(api, account_id, expected)
    return expected


def add_fault(api, kind: str, **params) -> dict:
    status, body = api.post("/v1/chaos/faults", {"kind": kind, **params})
    assert status == 201, body
    return body


def active_faults(api) -> list[dict]:
    status, body = api.get("/v1/chaos")
    assert status == 200, body
    return body["active"]


@pytest.fixture(autouse=True)
def no_faults(api):
    """Every test starts and ends with no fault active on the shared server."""
    assert api.delete("/v1/chaos/faults") == (204, None)
    yield
    assert api.delete("/v1/chaos/faults") == (204, None)


# -- basics --------------------------------------------------------------------------------------
def test_health_is_json_ok(api):
    status, body, headers = api.request("GET", "/v1/health")
    assert (status, body) == (200, {"status": "ok"})
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("product", ["huabei", "jiebei"])
def test_open_answers_the_account_state(api, product):
    account_id, request_id = new_id("acct"), new_id("open")
    status, body = api.post("/v1/accounts", {"account_id": account_id, "product": product,
                                             "credit_line": 12_345, "request_id": request_id})
    assert status == 201
    assert {k: body[k] for k in ("account_id", "product", "credit_line", "outstanding",
                                 "available", "status", "usable")} == {
        "account_id": account_id, "product": product, "credit_line": 12_345, "outstanding": 0,
        "available": 12_345, "status": "active", "usable": True}
    [entry] = ledger_after(api, body["seq"] - 1)[:1]
    assert entry == {"seq": body["seq"], "entry_id": body["entry_id"], "request_id": request_id,
                     "account_id": account_id, "type": "open", "at": entry["at"],
                     "product": product, "credit_line": 12_345}
    assert RFC3339_UTC.fullmatch(entry["at"]), entry["at"]


def test_open_with_zero_line_is_not_usable(api):
    account_id = open_account(api, credit_line=0)
    shown = wait_built(api, account_id)
    assert (shown["available"], shown["usable"]) == (0, False)


def test_open_of_an_existing_id_by_another_request_is_409_exists(api):
    account_id = open_account(api)
    before = ledger_seq(api)
    status, body = api.post("/v1/accounts", {"account_id": account_id, "product": "jiebei",
                                             "credit_line": 1, "request_id": new_id("open")})
    assert (status, body["error"]) == (409, "exists")
    assert ledger_seq(api) == before


def test_draw_and_repay_answer_entry_id_and_seq_and_land_in_the_ledger(api):
    account_id = open_account(api, credit_line=10_000)
    draw = must_write(api, account_id, "draw", amount=3_000)
    repay = must_write(api, account_id, "repay", amount=1_000)
    assert set(draw) == set(repay) == {"entry_id", "seq"}
    assert repay["seq"] > draw["seq"]
    entries = account_entries(api, account_id)
    assert [(e["type"], e.get("amount"), e["seq"], e["entry_id"]) for e in entries[1:]] == [
        ("draw", 3_000, draw["seq"], draw["entry_id"]),
        ("repay", 1_000, repay["seq"], repay["entry_id"])]


def test_every_entry_type_has_its_fields(api):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=10)
    must_write(api, account_id, "repay", amount=10)
    must_write(api, account_id, "limit", credit_line=40_000, reason="review")
    must_write(api, account_id, "status", status="frozen", reason="fraud check")
    entries = account_entries(api, account_id)
    assert [e["type"] for e in entries] == ["open", "draw", "repay", "limit", "status"]
    common = {"seq", "entry_id", "request_id", "account_id", "type", "at"}
    for entry in entries:
        assert set(entry) == common | ENTRY_FIELDS[entry["type"]], entry
        assert RFC3339_UTC.fullmatch(entry["at"])
    assert [e["seq"] for e in entries] == sorted({e["seq"] for e in entries})


# -- acceptance rules ----------------------------------------------------------------------------
def test_draw_of_exactly_the_available_is_accepted_one_more_is_409(api):
    account_id = open_account(api, credit_line=5_000)
    must_write(api, account_id, "draw", amount=4_000)
    status, body = write(api, account_id, "draw", amount=1_001)
    assert (status, body["error"]) == (409, "insufficient_limit")
    must_write(api, account_id, "draw", amount=1_000)


@pytest.mark.parametrize("blocked", ["frozen", "overdue", "closed"])
def test_draw_on_an_account_that_is_not_active_is_423(api, blocked):
    account_id = open_account(api)
    must_write(api, account_id, "status", status=blocked, reason="test")
    status, body = write(api, account_id, "draw", amount=1)
    assert (status, body["error"]) == (423, "account_not_active")


def test_draws_are_judged_against_the_ledger_not_a_stale_display(api):
    account_id = open_account(api, credit_line=1_000)
    wait_built(api, account_id)
    add_fault(api, "pause_sync")  # the display keeps showing 1,000 available
    must_write(api, account_id, "draw", amount=1_000)
    status, body = write(api, account_id, "draw", amount=1)
    assert (status, body["error"]) == (409, "insufficient_limit")


def test_repay_above_the_outstanding_is_422_overpayment(api):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=500)
    status, body = write(api, account_id, "repay", amount=501)
    assert (status, body["error"]) == (422, "overpayment")
    must_write(api, account_id, "repay", amount=500)
    status, body = write(api, account_id, "repay", amount=1)
    assert (status, body["error"]) == (422, "overpayment")


@pytest.mark.parametrize("status_name", ["frozen", "overdue"])
def test_repay_is_accepted_on_any_status_but_closed(api, status_name):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=500)
    must_write(api, account_id, "status", status=status_name, reason="test")
    must_write(api, account_id, "repay", amount=100)


def test_repay_and_limit_on_a_closed_account_are_423(api):
    account_id = open_account(api)
    must_write(api, account_id, "status", status="closed", reason="customer asked")
    for kind, fields in (("repay", {"amount": 1}),
                         ("limit", {"credit_line": 1, "reason": "raise"})):
        status, body = write(api, account_id, kind, **fields)
        assert (status, body["error"]) == (423, "account_not_active"), kind


def test_limit_is_accepted_on_frozen_and_a_cut_below_outstanding_leaves_zero_available(api):
    account_id = open_account(api, credit_line=10_000)
    must_write(api, account_id, "draw", amount=6_000)
    must_write(api, account_id, "status", status="frozen", reason="review")
    must_write(api, account_id, "limit", credit_line=20_000, reason="raise")
    must_write(api, account_id, "status", status="active", reason="cleared")
    must_write(api, account_id, "limit", credit_line=4_000, reason="cut")
    shown = wait_built(api, account_id)
    assert (shown["credit_line"], shown["outstanding"], shown["available"], shown["usable"]) == (
        4_000, 6_000, 0, False)
    status, body = write(api, account_id, "draw", amount=1)
    assert (status, body["error"]) == (409, "insufficient_limit")


def test_closing_with_a_balance_is_409_and_a_closed_account_can_reopen(api):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=1)
    status, body = write(api, account_id, "status", status="closed", reason="leave")
    assert (status, body["error"]) == (409, "outstanding_balance")
    must_write(api, account_id, "repay", amount=1)
    must_write(api, account_id, "status", status="closed", reason="leave")
    must_write(api, account_id, "status", status="active", reason="back")
    must_write(api, account_id, "draw", amount=1)


@pytest.mark.parametrize("kind,fields", [
    ("draw", {"amount": 1}), ("repay", {"amount": 1}),
    ("limit", {"credit_line": 1, "reason": "r"}), ("status", {"status": "frozen", "reason": "r"})])
def test_a_write_to_an_unknown_account_is_404(api, kind, fields):
    before = ledger_seq(api)
    status, body = write(api, new_id("ghost"), kind, **fields)
    assert (status, body["error"]) == (404, "not_found")
    assert ledger_seq(api) == before


def test_display_of_an_unknown_account_is_404(api):
    status, body = api.get(f"/v1/accounts/{new_id('ghost')}/display")
    assert (status, body["error"]) == (404, "not_found")


# -- idempotency ---------------------------------------------------------------------------------
def _open_account_twice(api):
    account_id = open_account(api)
    return "/v1/accounts", {"account_id": account_id, "product": "huabei", "credit_line": 1}, None


def _first_open(api):
    account_id = new_id("acct")
    body = {"account_id": account_id, "product": "jiebei", "credit_line": 700}
    return "/v1/accounts", body, None


def _draw(api):
    account_id = open_account(api)
    return f"/v1/accounts/{account_id}/draws", {"amount": 100}, None


def _draw_too_much(api):
    account_id = open_account(api, credit_line=100)
    raise_line = lambda: must_write(api, account_id, "limit", credit_line=10_000, reason="up")
    return f"/v1/accounts/{account_id}/draws", {"amount": 500}, raise_line


def _overpay(api):
    account_id = open_account(api)
    return (f"/v1/accounts/{account_id}/repayments", {"amount": 500},
            lambda: must_write(api, account_id, "draw", amount=1_000))


def _draw_frozen(api):
    account_id = open_account(api)
    must_write(api, account_id, "status", status="frozen", reason="x")
    return (f"/v1/accounts/{account_id}/draws", {"amount": 1},
            lambda: must_write(api, account_id, "status", status="active", reason="y"))


def _close_with_balance(api):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=10)
    return (f"/v1/accounts/{account_id}/status", {"status": "closed", "reason": "bye"},
            lambda: must_write(api, account_id, "repay", amount=10))


def _draw_unknown(api):
    account_id = new_id("late")
    opener = lambda: api.post("/v1/accounts", {"account_id": account_id, "product": "huabei",
                                               "credit_line": 1_000, "request_id": new_id("o")})
    return f"/v1/accounts/{account_id}/draws", {"amount": 1}, opener


@pytest.mark.parametrize("scenario,expected_status", [
    (_first_open, 201), (_draw, 201), (_open_account_twice, 409), (_draw_too_much, 409),
    (_close_with_balance, 409), (_overpay, 422), (_draw_frozen, 423), (_draw_unknown, 404)],
    ids=lambda v: v.__name__.strip("_") if callable(v) else str(v))
def test_a_repeated_request_id_returns_the_original_outcome_and_writes_nothing(
        api, scenario, expected_status):
    path, fields, change_the_world = scenario(api)
    request_id = new_id("idem")
    first = api.post(path, {**fields, "request_id": request_id})
    assert first[0] == expected_status, first
    if change_the_world is not None:  # a fresh judgement would now answer differently
        change_the_world()
    before = ledger_seq(api)
    for _ in range(3):
        assert api.post(path, {**fields, "request_id": request_id}) == first
    assert ledger_seq(api) == before
    written = [e for e in ledger_after(api, 0) if e["request_id"] == request_id]
    assert len(written) == (1 if expected_status == 201 else 0)


def test_a_400_is_not_remembered(api):
    account_id = open_account(api)
    request_id = new_id("retry")
    status, body = api.post(f"/v1/accounts/{account_id}/draws",
                            {"amount": "100", "request_id": request_id})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = api.post(f"/v1/accounts/{account_id}/draws",
                            {"amount": 100, "request_id": request_id})
    assert status == 201, body
    assert [e["seq"] for e in ledger_after(api, 0) if e["request_id"] == request_id] == [
        body["seq"]]


# -- the cure rule -------------------------------------------------------------------------------
def test_repaying_an_overdue_account_in_full_cures_it_in_the_same_transaction(api):
    account_id = open_account(api, credit_line=10_000)
    must_write(api, account_id, "draw", amount=3_000)
    must_write(api, account_id, "status", status="overdue", reason="missed payment")
    must_write(api, account_id, "repay", amount=1_000)  # partial: still overdue
    request_id = new_id("payoff")
    status, repay = write(api, account_id, "repay", request_id=request_id, amount=2_000)
    assert status == 201, repay
    entries = account_entries(api, account_id)
    repay_entry, cure = entries[-2:]
    assert [e["type"] for e in entries] == ["open", "draw", "status", "repay", "repay", "status"]
    assert repay_entry["seq"] == repay["seq"] and repay_entry["request_id"] == request_id
    assert cure["seq"] == repay["seq"] + 1, "the cure is adjacent to its repay"
    assert ledger_after(api, repay["seq"])[0] == cure, "nothing between repay and cure"
    assert {k: cure[k] for k in ("type", "status", "reason", "request_id", "at")} == {
        "type": "status", "status": "active", "reason": "cured",
        "request_id": request_id + ":cure", "at": repay_entry["at"]}
    shown = wait_built(api, account_id)
    assert (shown["status"], shown["available"], shown["as_of_seq"]) == ("active", 10_000,
                                                                         cure["seq"])
    before = ledger_seq(api)
    assert write(api, account_id, "repay", request_id=request_id, amount=2_000) == (201, repay)
    assert ledger_seq(api) == before


@pytest.mark.parametrize("status_name", ["active", "frozen"])
def test_repaying_in_full_cures_only_overdue_accounts(api, status_name):
    account_id = open_account(api)
    must_write(api, account_id, "draw", amount=300)
    must_write(api, account_id, "status", status=status_name, reason="x")
    must_write(api, account_id, "repay", amount=300)
    assert account_entries(api, account_id)[-1]["type"] == "repay"


# -- the ledger ----------------------------------------------------------------------------------
BIG_ENTRIES = 10_050


def _big_ledger(path) -> tuple[str, list[int]]:
    """A SQLite ledger of BIG_ENTRIES entries whose seqs have gaps (odd numbers only)."""
    store = open_ledger(f"sqlite:///{path}")
    seqs = [2 * i + 1 for i in range(BIG_ENTRIES)]
    at = "2026-01-01T00:00:00.000Z"
    entries = [{"seq": seqs[0], "entry_id": "e-big-0", "request_id": "big-open",
                "account_id": "big", "type": "open", "at": at, "product": "huabei",
                "credit_line": 10**12}]
    entries += [{"seq": seq, "entry_id": f"e-big-{i}", "request_id": f"big-{i}",
                 "account_id": "big", "type": "draw", "at": at, "amount": 1}
                for i, seq in enumerate(seqs[1:], 1)]
    store.commit(entries, "big-seed", 201, {})
    store.close()
    return f"sqlite:///{path}", seqs


def test_ledger_pages_default_max_and_gaps(start_service, tmp_path):
    ledger_url, seqs = _big_ledger(tmp_path / "big.sqlite")
    api = start_service("--ledger", ledger_url).api

    status, page = api.get("/v1/ledger")
    assert status == 200
    assert [e["seq"] for e in page["entries"]] == seqs[:1000], "default limit is 1000"
    assert page["next_seq"] == seqs[999]
    for limit in (10_000, 10_001, 1_000_000):
        status, page = api.get(f"/v1/ledger?limit={limit}")
        assert [e["seq"] for e in page["entries"]] == seqs[:10_000], f"limit={limit}"
    status, page = api.get(f"/v1/ledger?after_seq={seqs[5] + 1}&limit=2")  # inside a gap
    assert [e["seq"] for e in page["entries"]] == seqs[6:8]
    assert page["next_seq"] == seqs[7]
    walked, after_seq = [], 0
    for _ in range(20):
        page = api.get(f"/v1/ledger?after_seq={after_seq}&limit=777")[1]
        if not page["entries"]:
            break
        walked += [e["seq"] for e in page["entries"]]
        after_seq = page["next_seq"]
    assert walked == seqs and page["next_seq"] == seqs[-1]
    shown = wait_built(api, "big")  # rebuilt from the ledger after the restart
    assert (shown["outstanding"], shown["as_of_seq"]) == (BIG_ENTRIES - 1, seqs[-1])
    status, draw = write(api, "big", "draw", amount=1)
    assert status == 201 and draw["seq"] > seqs[-1]


def test_ledger_after_seq_and_limit_select_a_window(api):
    account_id = open_account(api)
    seqs = [must_write(api, account_id, "draw", amount=1)["seq"] for _ in range(4)]
    status, page = api.get(f"/v1/ledger?after_seq={seqs[0]}&limit=2")
    assert status == 200
    assert [e["seq"] for e in page["entries"]] == seqs[1:3]
    assert page["next_seq"] == seqs[2]


def test_ledger_past_the_end_answers_no_entries_and_next_seq_n(api):
    end = ledger_seq(api)
    for after_seq in (end, end + 1_000):
        assert api.get(f"/v1/ledger?after_seq={after_seq}") == (
            200, {"entries": [], "next_seq": after_seq})


def test_ledger_query_last_value_wins(api):
    account_id = open_account(api)
    seqs = [must_write(api, account_id, "draw", amount=1)["seq"] for _ in range(2)]
    status, page = api.get(f"/v1/ledger?limit=5&after_seq=0&after_seq={seqs[0]}&limit=1")
    assert [e["seq"] for e in page["entries"]] == seqs[1:2]


@pytest.mark.parametrize("after_seq", [2**63, 10**19 - 1])
def test_ledger_after_a_seq_beyond_int64_is_answered_not_a_500(api, after_seq):
    status, body = api.get(f"/v1/ledger?after_seq={after_seq}")
    assert (status, body) in ((200, {"entries": [], "next_seq": after_seq}),
                              (400, {"error": "bad_request", "detail": body.get("detail")}))


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit=",
                                   "after_seq=-1", "after_seq=x"])
def test_ledger_bad_query_is_400(api, query):
    status, body = api.get(f"/v1/ledger?{query}")
    assert (status, body["error"]) == (400, "bad_request")


# -- the display and sync ------------------------------------------------------------------------
def test_display_is_503_until_built_never_a_made_up_value(api):
    add_fault(api, "pause_sync")
    account_id = open_account(api)
    for _ in range(5):
        status, body = api.get(f"/v1/accounts/{account_id}/display")
        assert (status, body["error"]) == (503, "display_unavailable")
    assert api.delete("/v1/chaos/faults") == (204, None)
    expected = oracle_display(account_entries(api, account_id), account_id)
    assert wait_display(api, account_id, expected) <= CONVERGE_WITHIN_S


def test_a_stale_display_is_honest_about_its_as_of_seq(api):
    account_id = open_account(api, credit_line=9_000)
    built = wait_built(api, account_id)
    add_fault(api, "pause_sync")
    must_write(api, account_id, "draw", amount=2_000)
    must_write(api, account_id, "status", status="frozen", reason="x")
    assert api.get(f"/v1/accounts/{account_id}/display") == (200, built)
    assert api.delete("/v1/chaos/faults") == (204, None)
    entries = account_entries(api, account_id)
    assert wait_display(api, account_id, oracle_display(entries, account_id)) <= CONVERGE_WITHIN_S


def test_display_equals_the_oracle_after_a_mix_of_writes(api):
    account_id = open_account(api, credit_line=20_000)
    must_write(api, account_id, "draw", amount=7_000)
    must_write(api, account_id, "limit", credit_line=15_000, reason="cut")
    must_write(api, account_id, "repay", amount=2_000)
    must_write(api, account_id, "status", status="overdue", reason="late")
    entries = account_entries(api, account_id)
    expected = oracle_display(entries, account_id)
    assert expected["available"] == 0 and expected["status"] == "overdue"
    assert wait_display(api, account_id, expected) <= CONVERGE_WITHIN_S


def test_sync_reports_ledger_and_applied_seq(api):
    account_id = open_account(api)
    add_fault(api, "pause_sync")
    draw = must_write(api, account_id, "draw", amount=1)
    status, body = api.get("/v1/sync")
    assert status == 200 and set(body) == {"ledger_seq", "applied_seq"}
    assert body["ledger_seq"] == draw["seq"]
    assert body["applied_seq"] < draw["seq"], "a paused sync has not applied the draw"
    assert api.delete("/v1/chaos/faults") == (204, None)
    deadline_s = time.monotonic() + POLL_WAIT_S
    while api.get("/v1/sync")[1]["applied_seq"] != draw["seq"]:
        assert time.monotonic() < deadline_s, "applied_seq never caught up with the ledger"
        time.sleep(POLL_EVERY_S)


# -- chaos ---------------------------------------------------------------------------------------
def test_chaos_supports_all_six_kinds(api):
    status, body = api.get("/v1/chaos")
    assert status == 200
    assert sorted(body["supported"]) == sorted(FAULT_KINDS) and len(FAULT_KINDS) == 6
    assert body["active"] == []


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_accepted_with_its_params(api, kind):
    fault = add_fault(api, kind, **FAULT_PARAMS[kind])
    assert fault == {"fault_id": fault["fault_id"], "kind": kind, **FAULT_PARAMS[kind]}
    assert isinstance(fault["fault_id"], str) and fault["fault_id"]
    listed = active_faults(api)
    if kind == "maintenance_reset":
        assert listed == [], "a one-shot reset is never listed as active"
        return
    assert listed == [fault]
    assert api.delete(f"/v1/chaos/faults/{fault['fault_id']}") == (204, None)
    assert active_faults(api) == []
    status, body = api.delete(f"/v1/chaos/faults/{fault['fault_id']}")
    assert (status, body["error"]) == (404, "not_found")


def test_maintenance_snapshot_mode_is_accepted(api):
    fault = add_fault(api, "maintenance_reset", mode="snapshot")
    assert fault["mode"] == "snapshot" and active_faults(api) == []


def test_removing_an_unknown_fault_is_404(api):
    status, body = api.delete(f"/v1/chaos/faults/{new_id('f')}")
    assert (status, body["error"]) == (404, "not_found")


def test_delete_all_faults_clears_every_active_fault(api):
    faults = [add_fault(api, "delay_sync", delay_ms=10), add_fault(api, "delay_sync", delay_ms=30),
              add_fault(api, "drop_events", probability=0.1)]
    assert active_faults(api) == faults
    assert api.delete("/v1/chaos/faults") == (204, None)
    assert active_faults(api) == []


@pytest.mark.parametrize("body", [
    {"kind": "delay_sync"}, {"kind": "delay_sync", "delay_ms": "100"},
    {"kind": "delay_sync", "delay_ms": 1.5}, {"kind": "delay_sync", "delay_ms": -1},
    {"kind": "delay_sync", "delay_ms": True},
    {"kind": "drop_events"}, {"kind": "drop_events", "probability": "0.5"},
    {"kind": "drop_events", "probability": 1.5}, {"kind": "drop_events", "probability": None},
    {"kind": "duplicate_events"}, {"kind": "duplicate_events", "probability": -0.1},
    {"kind": "duplicate_events", "probability": False},
    {"kind": "reorder_events"}, {"kind": "reorder_events", "window": 0},
    {"kind": "reorder_events", "window": "5"}, {"kind": "reorder_events", "window": 2.5},
    {"kind": "maintenance_reset"}, {"kind": "maintenance_reset", "mode": "wipe"},
    {"kind": "maintenance_reset", "mode": 1},
    {"kind": "flood_the_zone"}, {"kind": 3}, {}, {"delay_ms": 5}],
    ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()) or "empty")
def test_a_missing_or_mistyped_fault_param_or_unknown_kind_is_400(api, body):
    status, answer = api.post("/v1/chaos/faults", body)
    assert (status, answer["error"]) == (400, "bad_request")
    assert active_faults(api) == []


def _disturb(api, account_id: str) -> None:
    must_write(api, account_id, "draw", amount=1_000)
    must_write(api, account_id, "draw", amount=2_000)
    must_write(api, account_id, "repay", amount=500)
    must_write(api, account_id, "limit", credit_line=30_000, reason="cut")
    must_write(api, account_id, "status", status="frozen", reason="check")
    must_write(api, account_id, "status", status="active", reason="ok")


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_display_converges_within_1s_once_a_fault_is_removed(api, kind):
    account_id = open_account(api)
    wait_built(api, account_id)
    if kind == "maintenance_reset":
        _disturb(api, account_id)
        wait_built(api, account_id)
        add_fault(api, kind, **FAULT_PARAMS[kind])  # one shot: it is over once answered
    else:
        fault = add_fault(api, kind, **FAULT_PARAMS[kind])
        _disturb(api, account_id)
        time.sleep(0.1)  # let the fault act on the events in flight
        assert api.delete(f"/v1/chaos/faults/{fault['fault_id']}") == (204, None)
    expected = oracle_display(account_entries(api, account_id), account_id)
    assert wait_display(api, account_id, expected) <= CONVERGE_WITHIN_S


@pytest.mark.parametrize("mode", ["clear", "snapshot"])
def test_after_a_maintenance_reset_the_display_is_503_or_honest(api, mode):
    account_id = open_account(api)
    if mode == "snapshot":
        wait_built(api, account_id)
        # A snapshot of the freshly opened account is taken meanwhile, so the restore below
        # brings back older numbers, which must come with their older as_of_seq.
        time.sleep(SNAPSHOT_EVERY_MS / 1000 + 0.1)
    must_write(api, account_id, "draw", amount=1_234)
    wait_built(api, account_id)
    add_fault(api, "pause_sync")  # holds the repair job, so we see the reset's own result
    add_fault(api, "maintenance_reset", mode=mode)
    entries = account_entries(api, account_id)
    timeline = oracle.replay(entries)
    status, shown = api.get(f"/v1/accounts/{account_id}/display")
    if mode == "clear":
        assert (status, shown["error"]) == (503, "display_unavailable")
    elif status == 200:
        assert shown["as_of_seq"] is not None
        state = oracle.state_at(timeline, shown["as_of_seq"])
        assert shown == {**state.view(), "account_id": account_id,
                         "as_of_seq": shown["as_of_seq"]}
    else:
        assert (status, shown["error"]) == (503, "display_unavailable")
    assert api.delete("/v1/chaos/faults") == (204, None)
    expected = oracle_display(entries, account_id)
    assert wait_display(api, account_id, expected) <= CONVERGE_WITHIN_S
