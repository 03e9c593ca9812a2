from harness.checkers import CheckConfig, availability
from checker_histories import Story

CONFIG = CheckConfig()


def test_availability_never_reports_findings_even_for_503s():
    b = Story()
    b.open("a1", 100_00)
    b.unavailable("a1")
    assert availability.check(b.history, b.ledger, CONFIG) == []


def test_availability_counts_503s_and_their_share():
    b = Story()
    b.open("a1", 100_00)
    b.display("a1")
    b.unavailable("a1")
    b.display("a1")
    b.display("a1")
    stats = availability.stats(b.history, CONFIG)
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
    stats = availability.stats(b.history, CONFIG)
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
    stats = availability.stats(b.history, CONFIG)
    assert stats["in_fault_windows"] == 2 and stats["outside_fault_windows"] == 1
    assert stats["by_fault"] == {"pause_sync": 2}


def test_no_display_reads_means_no_unavailability():
    b = Story()
    b.open("a1", 100_00)
    stats = availability.stats(b.history, CONFIG)
    assert stats["reads"] == 0 and stats["share"] == 0.0 and stats["longest_ms"] == 0
