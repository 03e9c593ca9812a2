from harness.analysis import CheckConfig, analyse
from harness.checkers import writes
from checker_histories import Story, kinds, opened

CONFIG = CheckConfig()


def run(b: Story):
    return writes.check(analyse(b.history, b.ledger, CONFIG))


def test_a_correct_service_gets_no_write_findings():
    b = opened()
    b.draw("a1", 30_00)
    b.draw("a1", 80_00)                      # rejected as the contract says
    b.repay("a1", 10_00)
    b.limit("a1", 200_00)
    b.status("a1", "frozen")
    b.draw("a1", 1_00)                       # rejected: frozen
    b.status("a1", "closed")                 # rejected: outstanding
    b.draw("a2", 1_00)                       # rejected: no such account
    assert [op.outcome for op in b.history.ops if op.f == "draw"] == ["ok", "fail", "fail", "fail"]
    assert run(b) == []


def test_an_acknowledged_draw_missing_from_the_ledger_is_a_critical_lost_write():
    b = opened()
    op = b.draw("a1", 30_00, entries=0)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("lost_write", "critical")
    assert finding.account_id == "a1"
    assert finding.first_seen_ms == op.complete_ms
    assert "¥30.00" in finding.explanation and op.request_id in finding.explanation
    assert f"t={op.complete_ms} ms" in finding.explanation


def test_a_draw_written_twice_is_a_critical_duplicate_and_money_is_not_reported_again():
    b = opened()
    b.draw("a1", 30_00, entries=2)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("duplicate_write", "critical")
    assert "2 times" in finding.explanation and "seq=2, seq=3" in finding.explanation


def test_a_limit_change_written_twice_is_a_major_duplicate():
    b = opened()
    b.limit("a1", 50_00, entries=2)
    assert kinds(run(b)) == [("duplicate_write", "major")]


def test_a_write_of_unknown_outcome_may_be_in_the_ledger_once():
    b = opened()
    b.draw("a1", 30_00, outcome="info", entries=1)
    b.draw("a1", 20_00, outcome="info", entries=0)
    assert run(b) == []


def test_a_write_of_unknown_outcome_in_the_ledger_twice_is_a_duplicate():
    b = opened()
    op = b.draw("a1", 30_00, outcome="info", entries=2)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("duplicate_write", "critical")
    assert "without a definite answer" in finding.explanation
    assert op.request_id in finding.explanation


def test_a_rejected_draw_found_in_the_ledger_is_a_critical_phantom():
    b = opened()
    op = b.draw("a1", 30_00, outcome="fail", error="insufficient_limit", entries=1)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("phantom_write", "critical")
    assert "409" in finding.explanation and "insufficient_limit" in finding.explanation
    assert op.request_id in finding.explanation


def test_a_rejected_status_change_found_in_the_ledger_is_a_major_phantom():
    b = opened()
    b.draw("a1", 10_00)
    b.status("a1", "closed", entries=1)      # 409 outstanding_balance, yet written
    assert kinds(run(b)) == [("phantom_write", "major")]


def test_an_entry_nobody_requested_is_a_phantom():
    b = opened()
    b.commit("a1", "draw", "ghost-1", amount=5_00)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("phantom_write", "critical")
    assert "ghost-1" in finding.explanation and "¥5.00" in finding.explanation


def test_a_cure_entry_belongs_to_its_repay_and_is_no_duplicate_or_phantom():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    repay = b.repay("a1", 40_00)
    assert b.ledger[-1]["request_id"] == repay.request_id + ":cure"
    assert run(b) == []


def test_a_draw_recorded_with_another_amount_is_a_critical_mismatch():
    b = opened()
    b.draw("a1", 30_00, recorded={"amount": 3_00})
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("amount_mismatch", "critical")
    assert "¥30.00 requested" in finding.explanation and "¥3.00 recorded" in finding.explanation


def test_a_limit_recorded_with_another_reason_is_a_major_mismatch():
    b = opened()
    b.limit("a1", 50_00, recorded={"reason": "something else"})
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("amount_mismatch", "major")
    assert "reason" in finding.explanation


def test_a_receipt_naming_another_entry_is_a_contract_violation():
    b = opened()
    b.draw("a1", 30_00, reply={"entry_id": "e1", "seq": 1})
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "'seq': 1" in finding.explanation and "'seq': 2" in finding.explanation


def test_an_open_reply_without_seq_is_not_checked_for_one():
    b = opened()
    assert "seq" not in b.history.ops[0].response
    assert run(b) == []


def test_a_retry_returning_the_original_outcome_is_fine():
    b = opened()
    op = b.draw("a1", 30_00)
    b.retry(op)
    rejected = b.draw("a1", 90_00)
    b.retry(rejected)
    assert run(b) == []


def test_a_retry_returning_a_different_body_is_a_contract_violation():
    b = opened()
    op = b.draw("a1", 30_00)
    retry = b.retry(op, reply={"entry_id": "e9", "seq": 9})
    found = [f for f in run(b) if "retry" in f.explanation]
    assert kinds(found) == [("contract_violation", "major")]
    assert f"t={retry.invoke_ms} ms" in found[0].explanation and "'seq': 9" in found[0].explanation


def test_a_request_both_accepted_and_rejected_is_a_contract_violation():
    b = opened()
    op = b.draw("a1", 30_00)
    b.retry(op, outcome="fail", http_status=409,
            reply={"error": "insufficient_limit", "detail": "no"})
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "both accepted and rejected" in finding.explanation


def test_a_retry_after_an_unknown_outcome_may_be_acknowledged():
    b = opened()
    op = b.draw("a1", 30_00, outcome="info", entries=1)
    b.retry(op)
    assert run(b) == []


def test_a_400_to_a_well_formed_write_is_a_contract_violation():
    b = opened()
    b.draw("a1", 30_00, outcome="fail", error="bad_request")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "400" in finding.explanation


def test_an_error_code_the_contract_never_gives_a_draw_is_a_contract_violation():
    b = opened()
    b.draw("a1", 300_00, error="outstanding_balance")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "outstanding_balance" in finding.explanation


def test_an_error_code_with_the_wrong_status_is_a_contract_violation():
    b = opened()
    b.draw("a1", 300_00, http_status=422)
    [finding] = run(b)
    assert finding.kind == "contract_violation" and "422" in finding.explanation


def test_a_reply_that_broke_the_contract_is_a_contract_violation_once_per_account():
    b = opened()
    b.draw("a1", 10_00, outcome="info", error="contract: 200 instead of 201")
    b.draw("a1", 10_00, outcome="info", error="contract: 200 instead of 201")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "200 instead of 201" in finding.explanation and "2 such replies" in finding.explanation


def test_money_that_appears_without_a_matching_write_breaks_conservation():
    b = opened()
    repay_draw = b.draw("a1", 50_00)
    repay = b.repay("a1", 20_00)
    # An entry that passes as the repay's cure, yet moves money.
    b.commit("a1", "draw", repay.request_id + ":cure", amount=7_00)
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("ledger_rule_violation", "critical")
    assert "¥30.00" in finding.explanation and "¥37.00" in finding.explanation
    assert repay_draw.outcome == "ok"


def test_conservation_is_not_judged_while_a_money_write_is_of_unknown_outcome():
    b = opened()
    b.draw("a1", 50_00)
    b.draw("a1", 10_00, outcome="info", entries=1)
    repay = b.repay("a1", 20_00)
    b.commit("a1", "draw", repay.request_id + ":cure", amount=7_00)
    assert run(b) == []


def test_entries_of_accounts_this_run_never_touched_are_not_its_phantoms():
    b = opened()
    b.commit("someone-else", "open", "theirs-1", product="jiebei", credit_line=5_00)
    b.commit("someone-else", "draw", "theirs-2", amount=1_00)
    assert run(b) == []
