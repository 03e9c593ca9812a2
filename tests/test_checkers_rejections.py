from harness.analysis import CheckConfig, analyse
from harness.checkers import rejections
from checker_histories import Story, opened

CONFIG = CheckConfig()


def run(b: Story):
    return rejections.check(analyse(b.history, b.ledger, CONFIG))


def test_rightful_rejections_are_not_reported():
    b = opened()
    b.draw("a1", 60_00)
    b.draw("a1", 40_01)                      # one fen over
    b.repay("a1", 60_01)
    b.status("a1", "closed")
    b.status("a1", "frozen")
    b.draw("a1", 1_00)
    b.draw("nobody", 1_00)
    b.open("a1", 5_00)
    assert sum(op.outcome == "fail" for op in b.history.ops) == 6
    assert run(b) == []


def test_rejecting_a_draw_of_exactly_the_available_limit_is_wrongful():
    b = opened()
    b.draw("a1", 60_00)
    op = b.draw("a1", 40_00, outcome="fail", error="insufficient_limit")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("wrongful_rejection", "major")
    assert finding.first_seen_ms == op.complete_ms
    assert "¥40.00" in finding.explanation and "409" in finding.explanation
    assert "available ¥40.00" in finding.explanation and "accepted" in finding.explanation


def test_a_rejection_right_under_one_racing_state_is_not_reported():
    b = opened()
    # A draw of 60 runs from t=10 to t=30; a draw of 50 sent at t=15 is refused at t=20. If the
    # first committed before it, 50 did not fit; the checker cannot know, so it stays silent.
    b.draw("a1", 60_00, invoke_ms=10, complete_ms=30)
    b.draw("a1", 50_00, invoke_ms=15, complete_ms=20)
    assert b.history.ops[-1].http_status == 409
    assert run(b) == []


def test_a_write_sent_after_the_rejection_returned_does_not_excuse_it():
    b = opened()
    b.draw("a1", 60_00, invoke_ms=25, complete_ms=30)
    b.draw("a1", 50_00, invoke_ms=15, complete_ms=20)
    [finding] = run(b)
    assert finding.kind == "wrongful_rejection"
    assert "available ¥100.00" in finding.explanation


def test_racing_writes_that_all_agree_still_convict_a_rejection():
    b = opened()
    b.draw("a1", 10_00, invoke_ms=10, complete_ms=30)
    op = b.draw("a1", 50_00, invoke_ms=15, complete_ms=20, outcome="fail",
                error="insufficient_limit")
    [finding] = run(b)
    assert finding.kind == "wrongful_rejection"
    assert "1 racing write(s) leave 2 possible states" in finding.explanation
    assert op.request_id in finding.explanation


def test_a_rejection_with_the_wrong_error_code_is_a_contract_violation():
    b = opened()
    b.status("a1", "frozen")
    b.draw("a1", 10_00, error="insufficient_limit")     # the contract says 423
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("contract_violation", "major")
    assert "'account_not_active'" in finding.explanation and "frozen" in finding.explanation


def test_a_404_for_an_account_that_certainly_existed_is_wrongful():
    b = opened()
    b.status("a1", "frozen")
    b.draw("a1", 10_00, error="not_found")
    [finding] = run(b)
    assert (finding.kind, finding.severity) == ("wrongful_rejection", "major")
    assert "certainly existed" in finding.explanation and "404" in finding.explanation


def test_a_404_while_the_open_is_still_racing_is_not_reported():
    b = Story()
    b.open("a1", 100_00, invoke_ms=10, complete_ms=40)
    b.draw("a1", 10_00, invoke_ms=15, complete_ms=20, outcome="fail", error="not_found")
    assert run(b) == []


def test_a_404_after_an_open_of_unknown_outcome_is_not_reported():
    b = Story()
    b.open("a1", 100_00, outcome="info", entries=1)
    b.draw("a1", 10_00, outcome="fail", error="not_found")
    assert run(b) == []


def test_only_the_first_attempt_of_a_request_is_judged():
    b = opened()
    refused = b.draw("a1", 150_00)
    b.limit("a1", 200_00)
    b.retry(refused)                         # the original 409 again, though 150 now fits
    assert b.history.ops[-1].http_status == 409
    assert run(b) == []


def test_refusing_to_open_an_account_that_does_not_exist_is_wrongful():
    b = Story()
    b.open("a1", 100_00, outcome="fail", error="exists")
    [finding] = run(b)
    assert finding.kind == "wrongful_rejection" and "no account yet" in finding.explanation


def test_a_repay_refused_as_overpayment_when_it_fits_is_wrongful():
    b = opened()
    b.draw("a1", 30_00)
    b.repay("a1", 30_00, outcome="fail", error="overpayment")
    [finding] = run(b)
    assert finding.kind == "wrongful_rejection" and "422" in finding.explanation


def test_a_draw_refused_as_not_active_while_a_curing_repay_races_is_not_reported():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    b.repay("a1", 40_00, invoke_ms=100, complete_ms=130)
    b.draw("a1", 10_00, invoke_ms=110, complete_ms=120, outcome="fail",
           error="account_not_active")
    assert b.ledger[-1]["reason"] == "cured"
    assert run(b) == []


def test_a_draw_refused_as_not_active_after_the_cure_was_acknowledged_is_wrongful():
    b = opened()
    b.draw("a1", 40_00)
    b.status("a1", "overdue")
    b.repay("a1", 40_00)
    b.draw("a1", 10_00, outcome="fail", error="account_not_active")
    [finding] = run(b)
    assert finding.kind == "wrongful_rejection" and "423" in finding.explanation
