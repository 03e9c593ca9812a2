from harness.checkers import CheckConfig, coverage
from checker_histories import Story


def test_coverage_reports_no_findings():
    b = Story()
    b.open("a1", 100_00)
    assert coverage.check(b.history, b.ledger, CheckConfig()) == []


def test_operations_are_counted_under_each_fault_kind_active_when_they_ran():
    b = Story()
    b.open("a1", 100_00)
    delay = b.fault("delay_sync", delay_ms=100)
    b.draw("a1", 10_00)
    drop = b.fault("drop_events", probability=0.5)
    b.draw("a1", 10_00)
    b.draw("a1", 500_00)                       # rejected
    b.heal(delay)
    b.display("a1")
    b.heal(drop)
    b.display("a1")
    assert coverage.stats(b.history) == {
        "open": {"none": 1},
        "draw": {"delay_sync": 3, "drop_events": 2},
        "display": {"drop_events": 1, "none": 1},
    }
    assert coverage.outcome_stats(b.history)["draw"]["drop_events"] == {"ok": 1, "fail": 1}


def test_a_maintenance_reset_covers_only_the_operations_during_its_shot():
    b = Story()
    b.open("a1", 100_00)
    b.fault("maintenance_reset", mode="snapshot")
    b.draw("a1", 10_00)
    assert coverage.stats(b.history)["draw"] == {"none": 1}
