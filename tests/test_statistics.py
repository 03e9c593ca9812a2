from harness import checkers
from harness.analysis import CheckConfig, analyse
from harness.statistics import availability, coverage_outcomes, coverage_totals, fault_coverage
from checker_histories import Story

CONFIG = CheckConfig()


def _availability(b: Story) -> dict:
    a = analyse(b.history, b.ledger, CONFIG)
    return availability(a.history, a.faults)


def _coverage(b: Story) -> dict:
    a = analyse(b.history, b.ledger, CONFIG)
    return coverage_outcomes(a.history, a.faults)


def test_a_503_during_the_run_is_no_finding_of_any_checker():
    b = Story()
    b.open("a1", 100_00)
    b.unavailable("a1")
    verdict = checkers.check(b.history, b.ledger, CONFIG)
    assert verdict.findings == []
    assert verdict.stats["availability"]["unavailable"] == 1


def test_availability_counts_503s_and_their_share():
    b = Story()
    b.open("a1", 100_00)
    b.display("a1")
    b.unavailable("a1")
    b.display("a1")
    b.display("a1")
    stats = _availability(b)
    assert (stats["reads"], stats["ok"], stats["unavailable"]) == (4, 3, 1)
    assert stats["share"] == 0.25


def test_an_unavailable_stretch_runs_from_the_first_503_to_the_next_200():
    b = Story()
    b.open("a1", 100_00)
    b.open("a2", 100_00)
    first = b.unavailable("a1", invoke_ms=1_000)
    b.unavailable("a1", invoke_ms=1_500)
    back = b.display("a1", invoke_ms=4_000)
    b.unavailable("a1", invoke_ms=5_000)
    b.display("a1", invoke_ms=5_100)
    b.unavailable("a2", invoke_ms=6_000)          # never answers again: until the end
    b.display("a1", invoke_ms=9_000)
    stats = _availability(b)
    assert stats["per_account"] == {"a1": back.invoke_ms - first.invoke_ms, "a2": 9_001 - 6_000}
    assert stats["longest_ms"] == 3_001


def test_503s_inside_fault_windows_are_told_apart():
    b = Story()
    b.open("a1", 100_00)
    b.unavailable("a1")
    fault = b.fault("pause_sync")
    b.unavailable("a1")
    b.unavailable("a1")
    b.heal(fault)
    stats = _availability(b)
    assert stats["in_fault_windows"] == 2 and stats["outside_fault_windows"] == 1
    assert stats["by_fault"] == {"pause_sync": 2}


def test_no_display_reads_means_no_unavailability():
    b = Story()
    b.open("a1", 100_00)
    stats = _availability(b)
    assert stats["reads"] == 0 and stats["share"] == 0.0 and stats["longest_ms"] == 0


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
    assert coverage_totals(_coverage(b)) == {
        "open": {"none": 1},
        "draw": {"delay_sync": 3, "drop_events": 2},
        "display": {"drop_events": 1, "none": 1},
    }
    assert _coverage(b)["draw"]["drop_events"] == {"ok": 1, "fail": 1}


def test_a_maintenance_reset_covers_only_the_operations_during_its_shot():
    b = Story()
    b.open("a1", 100_00)
    b.fault("maintenance_reset", mode="snapshot")
    b.draw("a1", 10_00)
    assert coverage_totals(_coverage(b))["draw"] == {"none": 1}


# -- fault coverage against the nemesis's plan -------------------------------------------------------

def _fault_coverage(b: Story, planned: dict | None) -> dict:
    if planned is not None:
        b.history.meta["nemesis"] = planned
    a = analyse(b.history, b.ledger, CONFIG)
    return fault_coverage(a.history, a.windows, CONFIG.sla_ms)


PLANNED = {"kinds": {"delay_sync": ["short", "long"], "pause_sync": [],
                     "maintenance_reset": ["clear", "snapshot"]},
           "alone": ["delay_sync", "maintenance_reset", "pause_sync"],
           "overlapping": ["delay_sync", "maintenance_reset", "pause_sync"], "covers": True}


def test_fault_coverage_counts_operations_per_class_and_lists_what_never_happened():
    b = Story()
    b.open("a1", 100_00)
    delay = b.fault("delay_sync", delay_ms=2000)     # long, alone for a while
    b.draw("a1", 10_00)
    pause = b.fault("pause_sync")                    # over the delay: both overlap
    b.draw("a1", 10_00)
    b.heal(delay)
    b.display("a1")                                  # pause alone
    b.heal(pause)
    b.fault("maintenance_reset", mode="clear")       # nothing else on: alone
    b.display("a1")                                  # within its service level: under it
    b.wait(2 * CONFIG.sla_ms)
    b.display("a1")                                  # after the reset's service level
    coverage = _fault_coverage(b, PLANNED)
    variants = coverage["variants"]
    assert set(variants) == {"delay_sync(long)", "pause_sync", "maintenance_reset(clear)"}
    assert variants["delay_sync(long)"]["ops"] == {"draw": 2}
    assert variants["pause_sync"]["ops"] == {"draw": 1, "display": 1}
    assert variants["maintenance_reset(clear)"]["ops"] == {"display": 1}
    assert coverage["alone"] == ["delay_sync", "maintenance_reset", "pause_sync"]
    assert coverage["overlapping"] == ["delay_sync", "pause_sync"]
    assert coverage["missing"] == ["delay_sync(short)", "maintenance_reset(snapshot)"]
    assert coverage["missing_combinations"] == ["maintenance_reset overlapping another kind"]


def test_fault_coverage_without_a_plan_requires_nothing():
    b = Story()
    b.open("a1", 100_00)
    b.fault("drop_events", probability=1.0)
    b.draw("a1", 10_00)
    coverage = _fault_coverage(b, None)
    assert coverage["planned"] is None and coverage["missing"] == []
    assert coverage["variants"]["drop_events(total)"]["ops"] == {"draw": 1}
