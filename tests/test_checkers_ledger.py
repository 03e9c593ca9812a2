import copy

from harness.analysis import CheckConfig, analyse
from harness.checkers import ledger
from checker_histories import Story, kinds, opened

CONFIG = CheckConfig()


def run(b: Story, entries=None):
    return ledger.check(analyse(b.history, b.ledger if entries is None else entries, CONFIG))


def test_a_ledger_that_follows_every_rule_has_no_findings():
    b = opened()
    b.draw("a1", 60_00)
    b.status("a1", "overdue")
    b.repay("a1", 60_00)                     # cures
    b.limit("a1", 10_00)
    b.draw("a1", 10_00)
    b.repay("a1", 10_00)
    b.status("a1", "closed")
    b.status("a1", "active")                 # a closed account may reopen
    b.open("a2", 5_00)
    assert [e["type"] for e in b.ledger].count("status") == 4
    assert run(b) == []


def test_a_draw_beyond_the_available_limit_is_a_critical_overdraw():
    b = opened()
    b.draw("a1", 70_00)
    op = b.draw("a1", 40_00, outcome="ok", entries=1)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "critical")
    assert finding.account_id == "a1" and finding.first_seen_ms == op.complete_ms
    assert "overdraw" in finding.explanation
    assert "¥40.00" in finding.explanation and "¥30.00" in finding.explanation
    assert "seq=3" in finding.explanation


def test_a_draw_on_a_frozen_account_is_critical():
    b = opened()
    b.status("a1", "frozen")
    b.draw("a1", 10_00, outcome="ok", entries=1)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "critical")
    assert "frozen" in finding.explanation


def test_a_repay_beyond_the_outstanding_is_critical():
    b = opened()
    b.draw("a1", 10_00)
    b.repay("a1", 15_00, outcome="ok", entries=1)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "critical")
    assert "below zero" in finding.explanation and "¥15.00" in finding.explanation


def test_closing_an_account_with_a_balance_is_major():
    b = opened()
    b.draw("a1", 10_00)
    b.status("a1", "closed", outcome="ok", entries=1)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "major")
    assert "¥10.00 still outstanding" in finding.explanation


def test_a_limit_change_on_a_closed_account_is_major():
    b = opened()
    b.status("a1", "closed")
    b.limit("a1", 50_00, outcome="ok", entries=1)
    assert kinds(run(b)) == [("ledger_rule_violation", "major")]


def test_a_missing_cure_entry_leaves_the_account_overdue_and_is_reported():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    repay = b.repay("a1", 40_00, cure=False)
    b.draw("a1", 1_00, outcome="fail", error="account_not_active")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "major")
    assert repay.request_id in finding.explanation
    assert "stays overdue" in finding.explanation and "no entry follows" in finding.explanation


def test_a_missing_cure_is_reported_when_another_entry_takes_its_place():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    b.repay("a1", 40_00, cure=False)
    b.limit("a1", 50_00)
    [finding] = run(b)
    assert finding.kind == "ledger_rule_violation"
    assert "the next entry is seq=5" in finding.explanation


def test_a_cure_entry_where_none_is_due_is_major():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    repay = b.repay("a1", 10_00)             # still 30 outstanding: no cure due
    b.commit("a1", "status", repay.request_id + ":cure", status="active", reason="cured")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "major")
    assert "none is due" in finding.explanation


def test_an_account_must_begin_with_its_one_open_entry():
    b = Story()
    b.commit("a1", "draw", "x1", amount=5_00)
    b.open("a1", 100_00)
    b.commit("a1", "open", "x2", product="huabei", credit_line=1_00)
    found = run(b)
    assert kinds(found) == [("ledger_rule_violation", "major")] * 2
    assert "first entry must be its open" in found[0].explanation
    assert "second open" in found[1].explanation


def test_malformed_entries_are_contract_violations_and_rules_still_apply_to_the_rest():
    b = opened()
    b.draw("a1", 10_00)
    b.draw("a1", 95_00, outcome="ok", entries=1)   # an overdraw after the broken entries
    opening, small, overdraw = copy.deepcopy(b.ledger)
    entries = [
        opening,
        {**small, "seq": 2, "entry_id": "x", "amount": True},    # a bool is no amount
        {**small, "seq": 3},
        {**overdraw, "seq": 4},
        {**small, "seq": 3, "entry_id": "late"},                # seq goes backwards
        {**small, "seq": 10, "entry_id": "r", "type": "refund"},
        {**small, "seq": 11, "entry_id": "e1", "amount": 1},    # entry_id reused
    ]
    found = run(b, entries)
    structure = [f for f in found if f.kind == "contract_violation"]
    assert sorted(f.severity for f in structure) == ["major"] * 4
    words = " ".join(f.explanation for f in structure)
    assert "amount True" in words and "seq 3 comes after seq 4" in words
    assert "'refund'" in words and "'e1' appears twice" in words
    rules = [f for f in found if f.kind == "ledger_rule_violation"]
    assert kinds(rules) == [("ledger_rule_violation", "critical")]
    assert "¥95.00" in rules[0].explanation


def test_the_same_malformation_on_many_entries_is_one_finding():
    b = opened()
    for _ in range(5):
        b.draw("a1", 1_00)
    entries = [{**e, "at": "yesterday"} for e in b.ledger]
    [finding] = run(b, entries)
    assert finding.kind == "contract_violation" and "6 entries" in finding.explanation
