"""Every seeded bug in the catalogue produces the defect its description names, and the same
scenario on the correct service does not.

Each scenario is a short script under the simulated clock. It runs twice, with the bug and
without, and asserts the concrete symptom in both directions. A bug that only concurrency shows
gets its requests sent at once (`at_once`: each stops at its await point, then they resume in
the order the scenario names), after the same requests sent one after the other show nothing.
On top of that, a small evidence function per finding kind (independent of the scenarios)
looks at what the script saw and confirms that the catalogue's finding kind is really evidenced
with the bug, and that no kind at all is evidenced without it.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref

import pytest

from harness import contract, oracle
from harness.service.bugs import CATALOGUE
from harness.service.core import Awaiting, LimitService
from harness.service.storage import open_ledger
from service_sim import Call, Sim

SETTLE_MS = 1000  # enough for sync lag (20 ms) and a repair pass (<= 200 + 100 ms) to finish


# -- evidence of each finding kind, from the recorded calls and the ledger ------------------------

def _timelines(ledger):
    by_account: dict[str, list[dict]] = {}
    for entry in ledger:
        by_account.setdefault(entry["account_id"], []).append(entry)
    return {a: oracle.replay(entries) for a, entries in by_account.items()}


def _state_at(timeline, seq):
    return oracle.state_at(timeline, seq) if timeline else None


def evidence(sim: Sim) -> set[str]:
    """The finding kinds this run shows, judged from the ledger and the recorded answers."""
    ledger = sim.ledger()
    timelines = _timelines(ledger)
    kinds: set[str] = set()
    # duplicate_write: a request id with more than one entry.
    request_ids = [e["request_id"] for e in ledger]
    if len(request_ids) != len(set(request_ids)):
        kinds.add("duplicate_write")
    # lost_write: a write answered 201 whose request id has no entry.
    if any(call.method == "POST" and call.path.startswith("/v1/accounts") and call.status == 201
           and call.body["request_id"] not in request_ids for call in sim.history):
        kinds.add("lost_write")
    # ledger_rule_violation: an entry the oracle would not allow at its seq, or a missing cure.
    state = {}
    for i, entry in enumerate(ledger):
        before = state.get(entry["account_id"])
        if entry["type"] != "open":
            is_cure = entry.get("reason") == contract.CURE_REASON
            if not is_cure and oracle.judge(before, entry["type"], oracle.entry_value(entry)):
                kinds.add("ledger_rule_violation")
        after = oracle.apply(before, entry)
        state[entry["account_id"]] = after
        if entry["type"] == "repay" and oracle.cures(before, "repay", entry["amount"]):
            following = ledger[i + 1] if i + 1 < len(ledger) else {}
            if following.get("request_id") != entry["request_id"] + contract.CURE_SUFFIX:
                kinds.add("ledger_rule_violation")
        if after.outstanding < 0:
            kinds.add("ledger_rule_violation")
    newest_seen: dict[str, int] = {}
    for call in sim.history:
        parts = call.path.split("/")
        if call.method == "POST" and call.path == "/v1/chaos/faults" and call.status == 201 \
                and call.body.get("kind") == "maintenance_reset":
            newest_seen.clear()  # a reset may honestly put the display back
        if call.method == "GET" and call.path.endswith("/display") and call.status == 200 \
                and type(call.reply.get("as_of_seq")) is int:
            # stale_display: once a display showed seq N, one showing an older seq went back.
            as_of, account_id = call.reply["as_of_seq"], parts[3]
            if as_of < newest_seen.get(account_id, 0):
                kinds.add("stale_display")
            newest_seen[account_id] = max(as_of, newest_seen.get(account_id, 0))
        if call.method == "POST" and len(parts) == 5 and parts[2] == "accounts":
            # wrongful_rejection: a 409/422/423 although the ledger state then allowed it.
            if call.status in (409, 422, 423):
                kind = {"draws": "draw", "repayments": "repay", "limit": "limit",
                        "status": "status"}[parts[4]]
                field = oracle.VALUE_FIELD[kind]
                then = _state_at(timelines.get(parts[3]), call.seq_before)
                if then is not None and oracle.judge(then, kind, call.body[field]) is None:
                    kinds.add("wrongful_rejection")
        elif call.method == "GET" and call.path.endswith("/display") and call.status == 200:
            # inconsistent_display: a 200 not equal to the oracle at its own as_of_seq.
            shown, account_id = call.reply, parts[3]
            as_of = shown.get("as_of_seq")
            then = None if as_of is None else _state_at(timelines.get(account_id), as_of)
            if then is None or {k: shown[k] for k in oracle.DISPLAY_FIELDS} != then.view():
                kinds.add("inconsistent_display")
    # display_divergence: SETTLE_MS after the faults are gone the display is not the oracle.
    sim.clear_faults()
    sim.tick(SETTLE_MS)
    for account_id, timeline in timelines.items():
        status, shown = sim.display(account_id)
        if status != 200 or {**shown, "account_id": account_id} != {
                **timeline[-1][1].view(), "account_id": account_id,
                "as_of_seq": timeline[-1][0]}:
            kinds.add("display_divergence")
    return kinds


def at_once(sim: Sim, requests: list[tuple[str, dict]], resume_order: list[int]) -> list:
    """POST each (path, body) together: every one runs to its await point in the order given,
    then those awaiting resume in `resume_order`. The answers, in the order of `requests`."""
    answers: dict[int, tuple] = {}
    waiting: dict[int, Awaiting] = {}

    def answered(n: int, answer, seq_before: int) -> None:
        path, body = requests[n]
        answers[n] = answer
        sim.history.append(Call(sim.now_ms(), "POST", path, body, None, *answer, seq_before))

    for n, (path, body) in enumerate(requests):
        seq_before = sim.service.seq
        answer = sim.service.start("POST", path, body)
        if type(answer) is Awaiting:
            waiting[n] = answer
        else:
            answered(n, answer, seq_before)
    assert sorted(resume_order) == sorted(waiting), (resume_order, sorted(waiting))
    for n in resume_order:
        seq_before = sim.service.seq
        answered(n, sim.service.resume(waiting.pop(n)), seq_before)
    return [answers[n] for n in range(len(requests))]


def fields(shown: dict) -> dict:
    return {k: shown[k] for k in oracle.DISPLAY_FIELDS}


def view(credit_line, outstanding, status="active") -> dict:
    return oracle.State(credit_line, outstanding, status).view()


# -- the scenarios: name -> script(sim, buggy) that asserts the symptom either way --------------

def no_gap_repair(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.tick(100)
    drop = sim.fault("drop_events", probability=1.0)
    sim.draw("a", 100)  # its event is lost
    sim.call("DELETE", f"/v1/chaos/faults/{drop}")
    sim.draw("a", 50)  # arrives, but after a gap: held until the gap is repaired
    sim.tick(SETTLE_MS)
    status, shown = sim.display("a")
    assert status == 200
    if buggy:
        # Stuck for good at the open entry: nothing ever repairs the gap. The draw after the gap
        # is held, not applied (the catalogue's "applies whatever arrives" is not what the
        # seeded code does: only anti-entropy is switched off).
        assert (fields(shown), shown["as_of_seq"]) == (view(1000, 0), 1)
        sim.tick(10 * SETTLE_MS)
        assert sim.display("a")[1]["as_of_seq"] == 1
    else:
        assert (fields(shown), shown["as_of_seq"]) == (view(1000, 150), 3)


def apply_duplicates(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.tick(100)
    sim.fault("duplicate_events", probability=1.0)
    sim.draw("a", 100)
    sim.tick(100)  # both copies delivered
    status, shown = sim.display("a")
    assert (status, shown["as_of_seq"]) == (200, 2)
    # With the bug the second copy is applied again under the same watermark: 200 drawn.
    assert fields(shown) == (view(1000, 200) if buggy else view(1000, 100))


def reset_shows_zero(sim: Sim, buggy: bool) -> None:
    sim.open("a", 50_000)
    sim.tick(100)
    assert sim.display("a")[1]["credit_line"] == 50_000
    sim.fault("maintenance_reset", mode="clear")
    status, shown = sim.display("a")
    if buggy:
        assert status == 200 and shown["credit_line"] == 0 and shown["available"] == 0
        assert shown["as_of_seq"] is None
        sim.tick(SETTLE_MS)  # and nothing marks it for rebuild: still zero a second later
        assert sim.display("a")[1]["credit_line"] == 0
    else:
        assert (status, shown.get("error")) == (503, "display_unavailable")


def no_cure(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 300)
    sim.set_status("a", "overdue")
    status, reply = sim.repay("a", 300, request_id="pay-all")
    assert status == 201
    cures = [e for e in sim.ledger() if e["request_id"] == "pay-all" + contract.CURE_SUFFIX]
    sim.tick(SETTLE_MS)
    shown = sim.display("a")[1]
    if buggy:
        assert cures == []
        assert (shown["status"], shown["usable"]) == ("overdue", False)
    else:
        assert [(c["seq"], c["type"], c["status"], c["reason"]) for c in cures] == [
            (reply["seq"] + 1, "status", "active", contract.CURE_REASON)]
        assert (shown["status"], shown["available"], shown["usable"]) == ("active", 1000, True)


def limit_cut_hidden(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    _, cut = sim.limit("a", 400, reason="risk")
    sim.tick(SETTLE_MS)
    shown = sim.display("a")[1]
    assert shown["as_of_seq"] == cut["seq"]
    assert fields(shown) == (view(1000, 0) if buggy else view(400, 0))
    sim.limit("a", 2000, reason="promo")  # raises still show, only cuts are hidden
    sim.tick(SETTLE_MS)
    assert sim.display("a")[1]["credit_line"] == 2000


def retry_duplicates_draw(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    first = sim.draw("a", 100, request_id="d-1")
    again = sim.draw("a", 100, request_id="d-1")  # the client's retry after a lost response
    draws = [e for e in sim.ledger() if e["request_id"] == "d-1"]
    if buggy:
        assert len(draws) == 2 and again[0] == 201 and again != first
    else:
        assert len(draws) == 1 and again == first


def draw_against_display(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.tick(100)
    assert sim.draw("a", 800)[0] == 201
    # Within the 20 ms sync lag the display still shows 1000 available; the ledger says 200.
    assert sim.display("a")[1]["available"] == 1000
    status, reply = sim.draw("a", 800)
    outstanding = sum(e.get("amount", 0) for e in sim.ledger() if e["type"] == "draw")
    if buggy:
        assert status == 201 and outstanding == 1600  # 600 over a 1000 line
    else:
        assert (status, reply.get("error"), outstanding) == (409, "insufficient_limit", 800)


def negative_available(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 800)
    sim.limit("a", 500, reason="risk")  # a legal cut below the balance
    sim.tick(SETTLE_MS)
    shown = sim.display("a")[1]
    assert (shown["available"], shown["usable"]) == ((-300, False) if buggy else (0, False))


def reorder_blind(sim: Sim, buggy: bool) -> None:
    sim.open("a", 100_000)
    sim.tick(100)
    sim.fault("reorder_events", window=8)
    amounts = [2 ** i for i in range(8)]  # distinct bits: the sum tells which draws were applied
    seqs = [sim.draw("a", amount)[1]["seq"] for amount in amounts]
    sim.clear_faults()
    watermarks = []
    sim.tick(SETTLE_MS, on_step=lambda: watermarks.append(
        sim.service.call("GET", "/v1/accounts/a/display")[1].get("as_of_seq")))
    # Either way as_of_seq only moves forward: the catalogue's "rewinds as_of_seq" is not what
    # the seeded code does; it skips the late older events instead (see the assertion below).
    assert watermarks == sorted(watermarks)
    status, shown = sim.display("a")
    assert (status, shown["as_of_seq"]) == (200, seqs[-1])
    if buggy:
        # The watermark claims every draw, but those that arrived after a newer one are missing.
        assert 0 < shown["outstanding"] < sum(amounts)
    else:
        assert fields(shown) == view(100_000, sum(amounts))


def snapshot_keeps_watermark(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.tick(2100)  # the projector snapshots at t = 2000 ms, with only the open applied
    _, drawn = sim.draw("a", 300)
    sim.tick(100)
    assert sim.display("a")[1]["outstanding"] == 300
    sim.fault("maintenance_reset", mode="snapshot")
    status, shown = sim.display("a")
    assert status == 200
    if buggy:
        # Old numbers (nothing drawn) under today's watermark (the draw's seq).
        assert (fields(shown), shown["as_of_seq"]) == (view(1000, 0), drawn["seq"])
        sim.tick(SETTLE_MS)
        assert sim.display("a")[1]["outstanding"] == 0  # and the repair job never notices
    else:
        assert (fields(shown), shown["as_of_seq"]) == (view(1000, 0), 1)  # old, and says so
        sim.tick(SETTLE_MS)
        assert fields(sim.display("a")[1]) == view(1000, 300)


def exact_available_rejected(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 400)
    status, reply = sim.draw("a", 600)  # exactly the available limit
    if buggy:
        assert (status, reply.get("error")) == (409, "insufficient_limit")
    else:
        assert status == 201


def overpay_accepted(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 100)
    status, reply = sim.repay("a", 250)
    sim.tick(SETTLE_MS)
    if buggy:
        assert status == 201 and sim.display("a")[1]["outstanding"] == -150
    else:
        assert (status, reply.get("error")) == (422, "overpayment")


def close_with_balance(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 100)
    status, reply = sim.set_status("a", "closed")
    if buggy:
        assert status == 201
    else:
        assert (status, reply.get("error")) == (409, "outstanding_balance")


def frozen_draw_allowed(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.set_status("a", "frozen")
    status, reply = sim.draw("a", 100)
    if buggy:
        assert status == 201
    else:
        assert (status, reply.get("error")) == (423, "account_not_active")


def late_duplicate(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 100)
    sim.tick(100)  # delivered once: right
    status, shown = sim.display("a")
    assert (status, fields(shown), shown["as_of_seq"]) == (200, view(1000, 100), 2)
    sim.tick(200)  # the bus delivers the draw again
    shown = sim.display("a")[1]
    assert shown["as_of_seq"] == 2
    assert fields(shown) == (view(1000, 200) if buggy else view(1000, 100))


def display_flaps(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.tick(2100)  # the projector snapshots at t = 2000 ms, with only the open applied
    sim.draw("a", 300)
    sim.tick(100)
    seen = [sim.display("a")[1]["as_of_seq"] for _ in range(4)]
    assert seen == ([2, 1, 2, 1] if buggy else [2, 2, 2, 2])


def draw_unchecked_after_risk(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    assert sim.draw("a", 600)[0] == 201
    assert sim.draw("a", 600)[1].get("error") == "insufficient_limit"  # one after the other
    sim.repay("a", 600)
    taps = [("/v1/accounts/a/draws", {"amount": 600, "request_id": f"tap-{n}"}) for n in (1, 2)]
    (first, _), (second, reply) = at_once(sim, taps, resume_order=[0, 1])
    drawn = sum(e["amount"] for e in sim.ledger() if e["request_id"].startswith("tap-"))
    if buggy:
        assert (first, second, drawn) == (201, 201, 1200)  # 200 over a 1000 line
    else:
        assert (first, second, reply.get("error"), drawn) == (201, 409, "insufficient_limit", 600)


def retry_races_original(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    answered = sim.draw("a", 100, request_id="d-1")
    assert sim.draw("a", 100, request_id="d-1") == answered  # a retry after the answer
    draw = ("/v1/accounts/a/draws", {"amount": 100, "request_id": "d-2"})
    original, retry = at_once(sim, [draw, draw], resume_order=[0, 1])  # the retry in flight
    draws = [e for e in sim.ledger() if e["type"] == "draw"]
    assert [e["request_id"] for e in draws].count("d-1") == 1
    if buggy:
        assert [e["request_id"] for e in draws].count("d-2") == 2
        assert original[0] == retry[0] == 201 and original != retry
    else:
        assert [e["request_id"] for e in draws].count("d-2") == 1 and original == retry


def cure_decided_before_risk(sim: Sim, buggy: bool) -> None:
    sim.open("a", 1000)
    sim.draw("a", 300)
    sim.set_status("a", "overdue")
    sim.repay("a", 300, request_id="pay-1")  # one after the other: cured either way
    assert sim.ledger()[-1]["request_id"] == "pay-1" + contract.CURE_SUFFIX
    sim.draw("a", 300)
    # The overdue job marks the account while the user pays in full; the mark commits first.
    pay = ("/v1/accounts/a/repayments", {"amount": 300, "request_id": "pay-2"})
    mark = ("/v1/accounts/a/status", {"status": "overdue", "reason": "overdue-job",
                                      "request_id": "mark-2"})
    assert [status for status, _ in at_once(sim, [pay, mark], resume_order=[1, 0])] == [201, 201]
    cured = [e for e in sim.ledger() if e["request_id"] == "pay-2" + contract.CURE_SUFFIX]
    sim.tick(SETTLE_MS)
    shown = sim.display("a")[1]
    if buggy:
        assert cured == [] and (shown["status"], shown["outstanding"]) == ("overdue", 0)
    else:
        assert len(cured) == 1 and (shown["status"], shown["usable"]) == ("active", True)


def _on_a_file_after_a_crash(sim: Sim, url: str) -> None:
    """The sim's service killed and started again on the SQLite file `url`: closing a SQLite
    connection drops its open transaction, as a SIGKILL does."""
    sim.store.close()
    sim.store = open_ledger(url)
    sim.service = LimitService(sim.store, sim.clock, sim.service.config, bugs=sim.service.bugs)


def ack_before_durable(sim: Sim, buggy: bool) -> None:
    folder = tempfile.mkdtemp(prefix="ack-before-durable-")
    weakref.finalize(sim, shutil.rmtree, folder, True)
    url = f"sqlite:///{folder}/ledger.sqlite"
    _on_a_file_after_a_crash(sim, url)  # a fresh service on the file
    sim.open("a", 1000)
    sim.tick(400)  # the bug's timer commits what is open by now
    assert sim.draw("a", 100)[0] == 201
    assert [e["type"] for e in sim.ledger()] == ["open", "draw"]  # it reads as written...
    _on_a_file_after_a_crash(sim, url)  # ...until the process dies before the timer fires
    assert [e["type"] for e in sim.ledger()] == (["open"] if buggy else ["open", "draw"])


SCENARIOS = {f.__name__: f for f in (
    no_gap_repair, apply_duplicates, reset_shows_zero, no_cure, limit_cut_hidden,
    retry_duplicates_draw, draw_against_display, negative_available, reorder_blind,
    snapshot_keeps_watermark, exact_available_rejected, overpay_accepted, close_with_balance,
    frozen_draw_allowed, late_duplicate, display_flaps, draw_unchecked_after_risk,
    retry_races_original, cure_decided_before_risk, ack_before_durable)}


# -- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_seeded_bug_shows_its_defect_and_its_finding_kind(name):
    # Parametrised over the catalogue, not over SCENARIOS: a new bug without a scenario fails.
    assert name in SCENARIOS, f"seeded bug {name!r} has no scenario in {__name__}"
    sim = Sim(bugs=[name])
    SCENARIOS[name](sim, True)
    kind = CATALOGUE[name].finding_kind
    shown = evidence(sim)
    assert kind in shown, f"{name}: catalogue says {kind}, the run evidences {sorted(shown)}"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_same_scenario_without_the_bug_shows_no_defect(name):
    assert name in SCENARIOS, f"seeded bug {name!r} has no scenario in {__name__}"
    sim = Sim()
    SCENARIOS[name](sim, False)
    assert evidence(sim) == set()


def test_every_scenario_names_a_catalogued_bug():
    # A bug removed from the catalogue must take its scenario with it.
    assert set(SCENARIOS) <= set(CATALOGUE)


def test_unknown_bug_name_is_a_usage_error():
    from harness.errors import UsageError
    with pytest.raises(UsageError, match="unknown bug"):
        Sim(bugs=["no_such_bug"])
