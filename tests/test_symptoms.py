"""What users feel: the time from a write's acknowledgement until a display first showed it, per
symptom, overall and by fault kind; bounded by the gate; drawn in the HTML report."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness import checkers
from harness.analysis import CheckConfig, analyse
from harness.console import symptoms_line
from harness.errors import UsageError
from harness.gate import Policy, judge, load_policy
from harness.history import Op
from harness.reports import html
from harness.symptoms import SYMPTOMS, Wait, _Shows, summary, symptom_statistics, waits
from checker_histories import Story

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def stats_of(b: Story) -> dict:
    return symptom_statistics(analyse(b.history, b.ledger, CheckConfig()))


def waits_of(b: Story, symptom: str) -> list[Wait]:
    return [w for w in waits(analyse(b.history, b.ledger, CheckConfig())) if w.symptom == symptom]


def drawn() -> Story:
    """a1 with a ¥100 line and ¥60 drawn, its display current."""
    b = Story()
    b.open("a1", 100_00)
    b.draw("a1", 60_00)
    b.display("a1")
    return b


# -- what counts as shown -------------------------------------------------------------------------

def test_a_repay_shown_by_the_next_read_waits_until_that_read_answered():
    b = drawn()
    repay = b.repay("a1", 20_00)
    b.wait(40)
    read = b.display("a1")
    [wait] = waits_of(b, "restore")
    assert (wait.ack_ms, wait.shown_ms) == (repay.complete_ms, read.complete_ms)
    assert wait.wait_ms == 42
    numbers = stats_of(b)["restore"]
    assert numbers["count"] == 1 and numbers["never_shown"] == 0
    assert numbers["p50"] == numbers["p99"] == numbers["max"] == 42


def test_a_repay_shown_late_waits_through_every_stale_read():
    b = drawn()
    before = b.last_seq("a1")
    repay = b.repay("a1", 20_00)
    for _ in range(3):
        b.wait(1_000)
        b.display("a1", as_of=before)             # still shows the balance before the repay
    b.wait(500)
    shown = b.display("a1")
    [wait] = waits_of(b, "restore")
    assert wait.wait_ms == shown.complete_ms - repay.complete_ms == 3_508


def test_a_repay_never_shown_is_counted_not_dropped():
    b = drawn()
    before = b.last_seq("a1")
    b.repay("a1", 20_00)
    b.display("a1", as_of=before)
    numbers = stats_of(b)["restore"]
    assert numbers == {"count": 1, "never_shown": 1, "p50": None, "p90": None, "p99": None,
                       "max": None, "by_fault": numbers["by_fault"]}


def test_a_read_sent_before_the_acknowledgement_does_not_count():
    b = drawn()
    repay = b.repay("a1", 20_00, invoke_ms=1_000, complete_ms=1_300)
    b.display("a1", invoke_ms=1_100)              # showed it, but was sent before the ack
    later = b.display("a1", invoke_ms=2_000)
    [wait] = waits_of(b, "restore")
    assert wait.shown_ms == later.complete_ms and wait.wait_ms == 2_001 - repay.complete_ms


def test_a_display_that_cannot_tell_what_it_reflects_shows_nothing():
    b = drawn()
    b.repay("a1", 20_00)
    b.display("a1", as_of_seq=None)
    assert stats_of(b)["restore"]["never_shown"] == 1
    b.display("a1")
    assert stats_of(b)["restore"]["never_shown"] == 0


def test_a_cure_is_restored_and_usable_only_once_its_cure_entry_shows():
    b = drawn()
    b.status("a1", "overdue")
    b.display("a1")
    repay = b.repay("a1", 60_00)                  # clears the balance: the cure entry follows
    repay_seq, cure_seq = b.seq_of("a1", 3), b.last_seq("a1")
    assert cure_seq == repay_seq + 1
    b.wait(100)
    b.display("a1", as_of=repay_seq)              # repaid, still overdue: available 0
    b.wait(100)
    shown = b.display("a1")
    [restore], [usable] = waits_of(b, "restore"), waits_of(b, "usable")
    assert restore.seq == usable.seq == cure_seq
    assert restore.shown_ms == usable.shown_ms == shown.complete_ms
    assert usable.wait_ms == shown.complete_ms - repay.complete_ms


def test_limit_changes_and_draws_are_their_own_symptoms():
    b = drawn()
    b.limit("a1", 80_00)
    b.draw("a1", 5_00)
    b.wait(10)
    b.display("a1")
    stats = stats_of(b)
    assert {name: stats[name]["count"] for name in SYMPTOMS} == {
        "restore": 0, "limit_shown": 1, "usable": 0, "draw_shown": 2}
    # The first draw showed at the read after it (2 ms), the second 12 ms after; the limit 14.
    assert stats["draw_shown"]["p50"] == 2 and stats["draw_shown"]["p99"] == 12
    assert stats["limit_shown"]["p99"] == 14


def test_rejected_and_unanswered_writes_are_not_timed():
    b = drawn()
    b.repay("a1", 1_000_00)                       # overpayment: refused
    b.repay("a1", 10_00, outcome="info")          # committed, but nobody was told
    b.display("a1")
    assert stats_of(b)["restore"]["count"] == 0


# -- percentiles, overall and by fault ------------------------------------------------------------

def test_percentiles_by_the_fault_on_while_the_write_was_in_flight():
    b = drawn()
    for _ in range(3):                            # no fault: shown 10 ms after each ack
        b.repay("a1", 1_00)
        b.wait(8)
        b.display("a1")
    delay = b.fault("delay_sync", delay_ms=800)
    for _ in range(2):                            # under the delay: shown 900 ms after
        b.repay("a1", 1_00)
        b.wait(898)
        b.display("a1")
    b.heal(delay)
    numbers = stats_of(b)["restore"]
    assert (numbers["count"], numbers["p50"], numbers["p99"], numbers["max"]) == (5, 10, 900, 900)
    assert numbers["by_fault"] == {
        "delay_sync": {"count": 2, "never_shown": 0, "p50": 900, "p90": 900, "p99": 900,
                       "max": 900},
        "none": {"count": 3, "never_shown": 0, "p50": 10, "p90": 10, "p99": 10, "max": 10}}


def wait(ms: int | None) -> Wait:
    return Wait("restore", "a1", "r1", 1, 0, ms, ms, ())


def test_a_never_shown_write_ranks_after_every_shown_one():
    shown = [wait(ms) for ms in range(1, 100)]    # 99 shown, 1 to 99 ms
    one_never = summary(shown + [wait(None)])
    assert (one_never["p99"], one_never["max"], one_never["never_shown"]) == (99, 99, 1)
    two_never = summary(shown[1:] + [wait(None), wait(None)])
    assert two_never["p99"] is None, "the 99th percentile lands on a write never shown"
    assert two_never["p90"] == 91 and two_never["max"] == 99


def test_the_read_index_finds_what_a_scan_finds():
    rng = random.Random(11)
    for _ in range(200):
        reads, t_ms = [], 0
        for n in range(rng.randint(0, 12)):
            t_ms += rng.randint(0, 3)
            reads.append(Op(n, 1, "display", "a1", None, t_ms, t_ms + rng.randint(0, 5), "ok",
                            200, {"as_of_seq": rng.randint(1, 9)}))
        shows = _Shows(reads)
        for after_ms in range(t_ms + 2):
            for seq in range(1, 11):
                expected = next((op.complete_ms for op in reads if op.invoke_ms >= after_ms
                                 and op.response["as_of_seq"] >= seq), None)
                assert shows.first_showing(after_ms, seq) == expected


def test_every_run_carries_the_symptoms_in_its_statistics():
    b = drawn()
    b.repay("a1", 10_00)
    b.display("a1")
    stats = checkers.check(b.history, b.ledger, CheckConfig()).stats
    assert list(stats["symptoms"]) == list(SYMPTOMS)
    assert stats["symptoms"]["restore"]["count"] == 1


# -- the gate -------------------------------------------------------------------------------------

def report_with(**restore) -> dict:
    numbers = {"count": 200, "never_shown": 0, "p50": 300, "p90": 900, "p99": 1_500, "max": 2_000,
               **restore}
    return {"findings": [], "stats": {"symptoms": {"restore": numbers}}}


def test_a_symptom_bound_fails_naming_the_symptom_its_p99_and_the_bound():
    policy = Policy(restore_ms_p99_max=1_000)
    result = judge(report_with(), policy)
    assert not result.passed
    assert result.reasons == ["restore (repayment until the available is restored) p99 1,500 ms "
                              "exceeds restore_ms_p99_max = 1,000 ms"]
    assert judge(report_with(p99=1_000), policy).passed
    assert judge(report_with(), Policy(restore_ms_p99_max=2_000)).passed


def test_a_symptom_bound_holds_trivially_without_such_writes_and_fails_blind():
    policy = Policy(restore_ms_p99_max=1_000)
    assert judge(report_with(count=0, p99=None), policy).passed
    unknown = judge(report_with(never_shown=3, p99=None), policy)
    assert unknown.reasons == ["restore (repayment until the available is restored) p99 unknown: "
                               "3 of 200 repayments never shown before the run ended, "
                               "restore_ms_p99_max = 1,000 ms"]
    missing = judge({"findings": [], "stats": {}}, Policy(usable_ms_p99_max=1_000))
    assert missing.reasons == ["usable (cure until the account is usable again) p99 is missing "
                               "from the stats, the policy bounds it (usable_ms_p99_max)"]


def test_symptom_bounds_load_from_a_policy_file(tmp_path: Path):
    path = tmp_path / "gate-users.toml"
    path.write_text("restore_ms_p99_max = 2000\ndraw_shown_ms_p99_max = 2500.5\n")
    policy = load_policy(path)
    assert (policy.restore_ms_p99_max, policy.draw_shown_ms_p99_max) == (2000, 2500.5)
    assert policy.limit_shown_ms_p99_max is None
    path.write_text("usable_ms_p99_max = \"2s\"\n")
    with pytest.raises(UsageError, match="'usable_ms_p99_max' must be a non-negative number"):
        load_policy(path)


def test_the_strict_policy_bounds_every_symptom_and_the_default_none():
    strict = load_policy(FIXTURES / "gate-strict.toml")
    default = load_policy(FIXTURES / "gate-default.toml")
    for name in SYMPTOMS:
        assert isinstance(getattr(strict, f"{name}_ms_p99_max"), (int, float)), name
        assert getattr(default, f"{name}_ms_p99_max") is None, name


# -- reports --------------------------------------------------------------------------------------

def report_of(b: Story) -> dict:
    verdict = checkers.check(b.history, b.ledger, CheckConfig())
    return {"verdict": "pass", "seed": 1, "findings": [], "stats": verdict.stats}


def test_the_html_report_draws_the_percentiles_by_fault_kind():
    b = drawn()
    pause = b.fault("pause_sync")
    b.repay("a1", 10_00)
    b.heal(pause)
    b.wait(300)
    b.display("a1")
    page = html.render(report_of(b))
    section = page[page.index('<section id="symptoms">'):]
    section = section[:section.index("</section>")]
    assert '<svg class="chart"' in section and "time until a display showed each write" in section
    chart = section[section.index("<svg"):section.index("</svg>")]
    assert "restore: repayment until the available is restored" in chart
    assert ">pause_sync</text>" in chart and ">all</text>" in chart
    assert "p50 304 ms · p99 304 ms · n=1" in chart
    assert " never</text>" not in chart and "#c62828" not in chart


def test_the_html_report_marks_writes_never_shown():
    b = drawn()
    b.repay("a1", 10_00)
    page = html.render(report_of(b))
    chart = page[page.index('<section id="symptoms">'):]
    chart = chart[chart.index("<svg"):chart.index("</svg>")]
    assert "p50 never · p99 never · n=1, 1 never" in chart
    assert 'stroke="#c62828" stroke-dasharray' in chart


def test_the_console_summary_has_a_line_for_what_users_waited():
    b = drawn()
    b.repay("a1", 10_00)
    b.wait(20)
    b.display("a1")
    line = symptoms_line(report_of(b)["stats"]["symptoms"])
    assert line == "  shown to users (p99): restore 22 ms, draw_shown 2 ms; 0 write(s) never shown"
    assert symptoms_line(None) is None
    assert symptoms_line({name: {"count": 0} for name in SYMPTOMS}) is None


def test_a_report_without_symptoms_still_renders():
    assert 'id="symptoms"' not in html.render({"verdict": "pass", "findings": [], "stats": {}})
    bare = {"restore": {"count": 2, "never_shown": 0, "p50": "x", "by_fault": "nope"}}
    assert 'id="symptoms"' in html.render({"verdict": "pass", "findings": [],
                                           "stats": {"symptoms": bare}})
