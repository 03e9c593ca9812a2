import json
import os

from harness import checkers
from harness.analysis import AccountIndex, CheckConfig, HistoryViews, analyse
from harness.entries import clean_ledger
from harness.history import FaultIndex, FaultWindow
from harness.statistics import percentile, thinned
from harness.write_groups import entry_acks_ms, write_groups
from checker_histories import Story

CONFIG = CheckConfig(sla_ms=1000)


def test_a_correct_run_with_faults_has_no_findings_and_json_ready_stats():
    b = Story()
    b.phase("setup")
    b.open("a1", 100_00)
    b.open("a2", 50_00)
    b.phase("safety")
    delay = b.fault("delay_sync", delay_ms=2_000)
    draw = b.draw("a1", 30_00)
    b.display("a1", as_of=b.seq_of("a1", 0), invoke_ms=draw.complete_ms + 2_500)
    b.heal(delay)
    b.draw("a2", 60_00)
    b.unavailable("a2")
    b.repay("a1", 10_00)
    b.display("a1")
    b.phase("convergence")
    b.wait(3_100)
    b.display("a1")
    b.display("a2")
    b.phase("check")
    verdict = checkers.check(b.history, b.ledger, CONFIG)
    assert verdict.findings == []
    stats = verdict.stats
    json.dumps(stats, allow_nan=False)
    assert stats["ops"]["draw"] == {"ok": 1, "fail": 1}
    assert stats["accounts"] == 2 and stats["ledger_entries"] == 4
    # The two reads after convergence are judged for divergence, not lag.
    assert stats["lag_ms"]["count"] == 2 and stats["lag_ms"]["max"] == 2_500
    assert stats["lag_ms"]["by_fault"]["delay_sync"]["count"] == 1
    assert stats["availability"]["unavailable"] == 1
    assert stats["coverage"]["draw"] == {"delay_sync": 1, "none": 1}
    assert stats["findings_by_kind"] == {}
    assert stats["findings_by_severity"] == {"critical": 0, "major": 0, "minor": 0}
    assert [r["lag_ms"] for r in stats["lag_samples"]] == [2_500, 0]


def test_findings_of_every_checker_come_worst_first_then_earliest():
    b = Story()
    b.open("a1", 100_00)
    b.draw("a1", 10_00, outcome="fail", error="bad_request")          # major, early
    b.draw("a1", 20_00, entries=0)                                     # critical, later
    b.limit("a1", 50_00, entries=2)                                    # major, later
    b.wait(5_000)
    b.display("a1", as_of=b.seq_of("a1", 0), invoke_ms=b.now_ms + 1)  # stale: critical
    verdict = checkers.check(b.history, b.ledger, CONFIG)
    order = [(f.severity, f.kind) for f in verdict.findings]
    assert order == [("critical", "lost_write"), ("critical", "stale_display"),
                     ("major", "contract_violation"), ("major", "duplicate_write")]
    assert verdict.stats["findings_by_severity"] == {"critical": 2, "major": 2, "minor": 0}
    assert verdict.stats["findings_by_kind"]["lost_write"] == 1


def test_lag_samples_are_thinned_evenly_to_the_cap():
    records = [{"lag_ms": n} for n in range(50_000)]
    kept = thinned(records, cap=20_000)
    assert len(kept) == 20_000
    assert kept[0]["lag_ms"] == 0 and kept[-1]["lag_ms"] > 49_990
    assert thinned(records[:10]) == records[:10]


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([7], 0.9) == 7 and percentile([], 0.5) is None


def test_the_fault_index_agrees_with_the_windows_themselves():
    windows = [FaultWindow("a", "pause_sync", {}, 10, 20),
               FaultWindow("b", "delay_sync", {"delay_ms": 5}, 15, None),
               FaultWindow("c", "maintenance_reset", {"mode": "clear"}, 20, 20),
               FaultWindow("d", "drop_events", {"probability": 1.0}, 30, 40)]
    index = FaultIndex(windows)
    for t_ms in range(0, 50):
        expected = [w.fault_id for w in windows if w.active_at(t_ms)]
        assert sorted(w.fault_id for w in index.active_at(t_ms)) == expected, t_ms


def test_a_fault_injection_without_an_answer_counts_as_on_until_everything_is_cleared():
    b = Story()
    b.record("fault_add", request={"kind": "pause_sync"}, outcome="info", error="timeout")
    b.record("fault_add", request={"kind": "delay_sync", "delay_ms": 5}, outcome="info",
             http_status=400, response={"error": "bad_request", "detail": "no"},
             error="status 400")
    b.wait(100)
    b.heal()
    [window] = b.history.fault_windows()
    assert window.kind == "pause_sync" and window.start_ms == 1 and window.end_ms == b.now_ms


def test_only_a_receipt_vouches_for_a_duplicated_entry():
    b = Story()
    b.open("a1", 100_00)
    op = b.draw("a1", 10_00, entries=2)
    acks = entry_acks_ms(b.ledger, write_groups(b.history))
    assert acks == [b.history.ops[0].complete_ms, op.complete_ms, None]


def test_clean_ledger_keeps_well_formed_entries_in_seq_order():
    b = Story()
    b.open("a1", 100_00)
    b.draw("a1", 10_00)
    entries = [*b.ledger, {**b.ledger[1], "seq": 1, "entry_id": "x"}, "junk"]
    good, problems = clean_ledger(entries)
    assert good == b.ledger
    assert [code for code, _, _ in problems] == ["seq_order", "not_object"]


def test_an_acknowledgement_naming_another_seq_does_not_vouch_for_an_entry():
    b = Story()
    b.open("a1", 100_00)
    b.draw("a1", 10_00, reply={"entry_id": "e7", "seq": 7})
    b.status("a1", "overdue")
    repay = b.repay("a1", 10_00)
    acks = entry_acks_ms(b.ledger, write_groups(b.history))
    assert acks[1] is None
    assert acks[3:] == [repay.complete_ms, repay.complete_ms]      # the repay and its cure


def test_acknowledgements_found_in_one_pass_are_judged_account_by_account():
    b = Story()
    b.open("a1", 100_00)
    b.open("a2", 100_00)
    draw = b.draw("a1", 10_00, reply={"entry_id": "e3"})  # a receipt that names no seq
    b.commit("a2", "draw", draw.request["request_id"], amount=10_00)  # the write, also on a2
    overdue = b.status("a1", "overdue")
    repay = b.repay("a1", 10_00)
    a = analyse(b.history, b.ledger, CONFIG)
    groups = write_groups(b.history)
    for account in a.accounts.values():
        assert account.acks_ms == AccountIndex(account.entries, groups).acks_ms
    # Its only entry on each account, so the receipt vouches for each (on its account's own).
    assert a.accounts["a1"].acks_ms[1:] == [draw.complete_ms, overdue.complete_ms,
                                            repay.complete_ms, repay.complete_ms]
    assert a.accounts["a2"].acks_ms[1] == draw.complete_ms
    assert entry_acks_ms(b.ledger, groups)[2:4] == [draw.complete_ms, draw.complete_ms]


def test_an_account_view_gives_findings_the_same_history_slice_as_the_whole_run():
    from harness.findings import SLICE_OPS_MAX, history_slice
    b = Story()
    b.open("a1", 100_00)
    b.open("a2", 100_00)
    fault = b.fault("pause_sync")
    for n in range(40):
        b.draw("a1" if n % 3 else "a2", 1_00)
    b.heal(fault)
    views = HistoryViews(b.history)
    for until_ms in (0, 3, 10, 20, 10**9, None):
        for account_id in ("a1", "a2", "a3"):
            whole = history_slice(b.history, account_id, until_ms)
            assert history_slice(views(account_id), account_id, until_ms) == whole
            # Cut to what the slice keeps: the same slice again, from a few ops.
            cut = views.for_finding(account_id, until_ms)
            assert history_slice(cut, account_id, until_ms) == whole
            assert len(cut.ops) <= SLICE_OPS_MAX
    assert len(history_slice(b.history, "a1", None)) == SLICE_OPS_MAX, \
        "enough ops for the cut to matter"


# -- two processes --------------------------------------------------------------------------------

def _big_buggy_run():
    from harness.runner import RunConfig, execute
    return execute(RunConfig(quiet=True, ops=3_000, seed=5, bugs=("no_gap_repair",)))


def _child_starts_with(*names):
    def first(tasks):
        return [t for t in tasks if t.name in names]
    return first


def test_a_checker_and_the_lag_statistics_run_in_the_child_give_what_one_process_gives(
        monkeypatch):
    result = _big_buggy_run()
    one = checkers.check(result.history, result.ledger)
    monkeypatch.setattr(checkers, "SPLIT_OPS_MIN", 0)
    # The child runs display (and the lag statistics with it): its findings and statistics come
    # back through the pipe, and merge in the order one process gives.
    monkeypatch.setattr(checkers, "_child_first", _child_starts_with(
        "display", "statistics:symptoms"))
    two = checkers.check(result.history, result.ledger)
    assert any(f.checker == "display" for f in one.findings), "display must have something to say"
    assert [f.to_dict() for f in two.findings] == [f.to_dict() for f in one.findings]
    assert json.dumps(two.stats) == json.dumps(one.stats)


def test_without_statistics_the_checkers_split_between_processes_as_they_claim_them(monkeypatch):
    result = _big_buggy_run()
    one = checkers.check(result.history, result.ledger, with_stats=False)
    monkeypatch.setattr(checkers, "SPLIT_OPS_MIN", 0)
    two = checkers.check(result.history, result.ledger, with_stats=False)
    assert one.findings and one.stats == {} and two.stats == {}
    assert [f.to_dict() for f in two.findings] == [f.to_dict() for f in one.findings]


def test_a_checker_the_dead_child_ran_is_a_checker_error(monkeypatch):
    result = _big_buggy_run()
    parent = os.getpid()

    def dies_in_the_child(analysis):
        if os.getpid() != parent:
            os._exit(3)
        return []

    monkeypatch.setattr(checkers, "SPLIT_OPS_MIN", 0)
    monkeypatch.setattr(checkers, "_child_first", _child_starts_with(
        "ledger", "statistics:symptoms"))
    monkeypatch.setitem(checkers.REGISTRY, "ledger", checkers.Checker("ledger", "dies",
                                                                      dies_in_the_child))
    verdict = checkers.check(result.history, result.ledger)
    errors = {f.checker for f in verdict.findings if f.kind == "checker_error"}
    assert errors == {"ledger"}
    assert any(f.kind == "display_divergence" for f in verdict.findings), \
        "the checkers this process claimed still judged"
    assert verdict.stats["symptoms"] and verdict.stats["lag_ms"], \
        "the statistics the child never handed over, this process computed"
