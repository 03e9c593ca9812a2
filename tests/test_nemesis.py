"""The nemesis's covering schedule: within a run of the default length (and a short one) every
kind, every parameter class, each kind alone and overlapping another, on a seeded, replayable
schedule that fits the run; a run too short to cover says so."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from harness import nemesis as nm
from harness.console import run_summary
from harness.driver import Drive, recently_written, safety_ms
from harness.history import FaultWindow
from harness.reports import html
from harness.runner import DEFAULT_ACCOUNTS, DEFAULT_DURATION_S, DEFAULT_OPS, RunConfig, execute
from harness.workload import load_config

ALL = nm.load_profile("all")
SIMULATED_DEFAULT_MS = safety_ms(Drive(seed=0, accounts=DEFAULT_ACCOUNTS, ops=DEFAULT_OPS,
                                       duration_s=None, workers=1, run_tag="t"),
                                 load_config(None, None))
HTTP_DEFAULT_MS = int(DEFAULT_DURATION_S * 1000)
SHORT_MS = 2_000


def play(nemesis: nm.Nemesis, start_ms: int, end_ms: int, refuse: str | None = None) -> list:
    """Carry out every move due before `end_ms` as a target that acknowledges each fault (but
    kinds named `refuse`); the windows a history would record."""
    on: dict[str, FaultWindow] = {}
    windows: list[FaultWindow] = []
    for n in range(100_000):  # bounded: a run never has this many moves
        if not nemesis.profile.kinds or nemesis.next_ms >= end_ms:
            break
        now_ms = max(start_ms, int(nemesis.next_ms))
        move, what = nemesis.next_move(now_ms)
        if move == "probe":
            continue
        if move == "add":
            fault_id = None if what["kind"] == refuse else f"f-{n}"
            nemesis.added(what, fault_id)
            if fault_id is None:
                continue
            params = {k: v for k, v in what.items() if k != "kind"}
            window = FaultWindow(fault_id, what["kind"], params, now_ms,
                                 None if nm.is_lasting(what["kind"]) else now_ms)
            windows.append(window)
            if window.end_ms is None:
                on[fault_id] = window
        else:
            for fault_id in list(on) if what is None else [what]:
                on.pop(fault_id).end_ms = now_ms
    for window in on.values():  # the convergence phase removes every fault
        window.end_ms = end_ms
    return windows


def coverage_of(profile: nm.FaultProfile, length_ms: int, seed: int = 1) -> dict:
    nemesis = nm.Nemesis(profile, random.Random(seed), 0, length_ms)
    return nm.covered(nm.windows_of(play(nemesis, 0, length_ms), length_ms))


def everything(profile: nm.FaultProfile) -> tuple[set[str], set[str]]:
    return {v.label for v in profile.variants()}, set(profile.kinds)


# -- covering -------------------------------------------------------------------------------------

@pytest.mark.parametrize("length_ms", [SIMULATED_DEFAULT_MS, HTTP_DEFAULT_MS, SHORT_MS])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_kind_class_alone_and_overlapping_within_the_run(length_ms, seed):
    labels, kinds = everything(ALL)
    assert "maintenance_reset(clear)" in labels and "maintenance_reset(snapshot)" in labels
    assert {"delay_sync(short)", "delay_sync(long)", "drop_events(low)", "drop_events(total)",
            "duplicate_events(low)", "duplicate_events(total)", "reorder_events(small)",
            "reorder_events(large)"} <= labels
    done = coverage_of(ALL, length_ms, seed)
    assert set(done["variants"]) == labels
    assert set(done["alone"]) == kinds
    assert set(done["overlapping"]) == kinds


def test_every_kind_in_the_table_is_covered_with_its_default_values():
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    labels, kinds = everything(table)
    done = coverage_of(table, HTTP_DEFAULT_MS)
    assert set(done["variants"]) == labels and set(done["alone"]) == kinds
    assert set(done["overlapping"]) == kinds


def test_the_plan_claims_what_it_covers_and_fits_half_the_run():
    for length_ms in (SIMULATED_DEFAULT_MS, HTTP_DEFAULT_MS, SHORT_MS):
        plan = nm.build_plan(ALL, random.Random(5), length_ms)
        assert plan.covers and not plan.notes, plan.notes
        labels, kinds = everything(ALL)
        assert set(plan.claims["variants"]) == labels
        # The cycle alone covers every combination, whatever the dice add after it.
        assert set(plan.claims["alone"]) == kinds and set(plan.claims["overlapping"]) == kinds
        assert plan.cycle_ms <= 0.5 * length_ms or plan.unit_ms <= nm.UNIT_MS_SHORT


def test_a_shorter_run_cycles_faster():
    cycles = [nm.build_plan(ALL, random.Random(5), ms).cycle_ms
              for ms in (SIMULATED_DEFAULT_MS, HTTP_DEFAULT_MS, SHORT_MS)]
    assert cycles[0] > cycles[1] > cycles[2]


def test_a_long_run_repeats_the_cycle():
    nemesis = nm.Nemesis(ALL, random.Random(3), 0, 60_000)
    windows = play(nemesis, 0, 60_000)
    cycle_ms = nemesis.plan.cycle_ms
    second = [w for w in windows if w.start_ms > 60_000 - cycle_ms * 1.2]
    assert {nm.variant_of(w.kind, w.params).label for w in windows} == everything(ALL)[0]
    assert second, "a second cycle began"


def test_calm_stretches_leave_every_fault_off_for_three_service_levels_past_the_longest_delay():
    # A delay excuses staleness for its own length past its end: a calm as long as the longest
    # one and three service levels more is judged for at least two.
    nemesis = nm.Nemesis(ALL, random.Random(9), 0, HTTP_DEFAULT_MS, sla_ms=1000)
    windows = play(nemesis, 0, HTTP_DEFAULT_MS)
    end_of_cycle = nemesis.plan.cycle_ms + nemesis.plan.at_ms(1)
    calm_ms = 3000 + max(ALL.delay_ms)
    assert nemesis.plan.quiet_ms == calm_ms == 5000
    assert all(w.end_ms <= end_of_cycle or w.start_ms >= end_of_cycle + calm_ms - 1
               for w in windows)


def _schedule(profile: nm.FaultProfile, seed: int, length_ms: int) -> list[tuple[int, str, object]]:
    """(ms, move, fault or id) of every move before `length_ms`, each fault acknowledged."""
    nemesis = nm.Nemesis(profile, random.Random(seed), 0, length_ms, sla_ms=1000)
    out: list[tuple[int, str, object]] = []
    while nemesis.next_ms < length_ms and len(out) < 10_000:
        now_ms = int(nemesis.next_ms)
        move, what = nemesis.next_move(now_ms)
        if move == "add":
            nemesis.added(what, f"f-{len(out)}")
            what = (f"f-{len(out)}", what)
        out.append((now_ms, move, what))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_the_display_is_probed_after_each_reset_and_through_each_calm(seed):
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    moves = _schedule(table, seed, HTTP_DEFAULT_MS)
    probes = [ms for ms, move, _ in moves if move == "probe"]
    resets = [ms for ms, move, what in moves
              if move == "add" and what[1]["kind"] in ("maintenance_reset", "crash_restart")]
    assert resets and all(any(r <= p <= r + nm.PROBE_AFTER_RESET_MS for p in probes)
                          for r in resets)
    plan = nm.build_plan(table, random.Random(seed), HTTP_DEFAULT_MS)
    calm = [p for p in probes if plan.cycle_ms < p < plan.cycle_ms + plan.quiet_ms]
    assert len(calm) >= plan.quiet_ms // 250 - 2, "a look every quarter of a service level"
    assert not any(ms in calm for ms, move, _ in moves if move != "probe"), "the calm is calm"


def test_no_probe_while_a_fault_may_silence_the_target():
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    silent: set[str] = set()
    for ms, move, what in _schedule(table, 4, 3 * HTTP_DEFAULT_MS):
        if move == "add" and nm.isolates(what[1]["kind"]):
            silent.add(what[0])
        elif move == "remove":
            silent.discard(what)
        assert not (move == "probe" and silent), ms


def test_a_restart_removes_every_fault_and_puts_back_what_the_schedule_has_on():
    # A restarted service has lost its chaos API's faults (and may give their ids again): left
    # alone, the history would count them on until the end, excusing every stale read after.
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    moves = _schedule(table, 3, HTTP_DEFAULT_MS)
    on: dict[str, dict] = {}
    restarts = 0
    for n, (ms, move, what) in enumerate(moves):
        if move == "add" and what[1]["kind"] == "crash_restart" and on:
            restarts += 1
            before = sorted(map(str, on.values()))
            assert moves[n + 1][1:] == ("remove", None), "every fault off first"
            again = moves[n + 2:n + 2 + len(before)]
            assert all(m[0] == ms and m[1] == "add" for m in again), "then at once"
            assert sorted(str(m[2][1]) for m in again) == before, "the same faults again"
        if move == "add" and nm.is_lasting(what[1]["kind"]):
            on[what[0]] = what[1]
        elif move == "remove":
            on = {} if what is None else {k: v for k, v in on.items() if k != what}
    assert restarts, "the plan puts a crash under a chain's faults"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_cycle_wipes_first_and_restores_a_snapshot_last(seed):
    # A restore tests a service only once its snapshot holds a built display; one taken before
    # a wipe or a restart may hold nothing.
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    plan = nm.build_plan(table, random.Random(seed), HTTP_DEFAULT_MS)
    adds = [m for m in plan.moves if m.action == "add"]
    wipes = [m.tick for m in adds if m.variant.kind == "crash_restart"
             or m.variant == nm.Variant("maintenance_reset", "clear")]
    restores = [m.tick for m in adds if m.variant == nm.Variant("maintenance_reset", "snapshot")]
    assert wipes and restores and max(wipes) < min(restores)


def test_one_at_a_time_never_overlaps_two_lasting_faults_and_says_so():
    one = dataclasses.replace(ALL, concurrent_max=1)
    windows = play(nm.Nemesis(one, random.Random(1), 0, HTTP_DEFAULT_MS), 0, HTTP_DEFAULT_MS)
    lasting = sorted((w for w in windows if nm.is_lasting(w.kind)), key=lambda w: w.start_ms)
    # A restart's remove-all and the same fault again may share a millisecond.
    assert all(a.end_ms <= b.start_ms for a, b in zip(lasting, lasting[1:]))
    plan = nm.build_plan(one, random.Random(1), HTTP_DEFAULT_MS)
    assert any("concurrent_max = 1" in note for note in plan.notes)


def test_a_refused_fault_is_not_removed_and_is_missing_from_what_was_covered():
    nemesis = nm.Nemesis(ALL, random.Random(2), 0, HTTP_DEFAULT_MS)
    windows = play(nemesis, 0, HTTP_DEFAULT_MS, refuse="pause_sync")
    done = nm.covered(nm.windows_of(windows, HTTP_DEFAULT_MS))
    assert "pause_sync" not in done["variants"] and "drop_events(total)" in done["variants"]


def test_no_other_move_while_a_fault_may_silence_the_target():
    # A stopped process answers nothing, its chaos API included: a move then would hang.
    table = nm.FaultProfile("table", tuple(nm.FAULTS))
    nemesis = nm.Nemesis(table, random.Random(4), 0, HTTP_DEFAULT_MS)
    moves, silencing = [], 0
    while nemesis.next_ms < 3 * HTTP_DEFAULT_MS:
        now_ms = int(nemesis.next_ms)
        move, what = nemesis.next_move(now_ms)
        if move == "add":
            nemesis.added(what, f"f-{len(moves)}")
        moves.append((move, what if move == "remove" else f"f-{len(moves)}",
                      what["kind"] if move == "add" else None))
    for (move, fault_id, kind), after in zip(moves, moves[1:]):
        if move == "add" and nm.isolates(kind):
            silencing += 1
            assert after[:2] == ("remove", fault_id), (kind, after)
    assert silencing > 6, "planned and rolled by the dice, more than once each"


def test_a_late_move_delays_the_rest_of_its_cycle():
    on_time, late = (nm.Nemesis(ALL, random.Random(6), 0, HTTP_DEFAULT_MS) for _ in range(2))
    times = []
    for nemesis, delay_ms in ((on_time, 0), (late, 1500)):
        seen = []
        for n in range(12):
            now_ms = int(nemesis.next_ms) + (delay_ms if n == 3 else 0)
            move, what = nemesis.next_move(now_ms)
            if move == "add":
                nemesis.added(what, f"f-{n}")
            seen.append(now_ms)
        times.append(seen)
    assert times[1][:3] == times[0][:3]
    assert [b - a for a, b in zip(times[0][3:], times[1][3:])] == [1500] * 9


# -- too short --------------------------------------------------------------------------------------

def test_a_run_too_short_to_cover_says_so():
    plan = nm.build_plan(ALL, random.Random(1), 500)
    assert not plan.covers
    assert any("too short" in note and "500 ms" in note for note in plan.notes)
    assert nm.build_plan(ALL, random.Random(1), 1_500).covers


def test_a_too_short_run_reports_what_it_missed_and_fails_the_default_gate():
    result = execute(RunConfig(seed=3, ops=120, accounts=24, quiet=True))
    coverage = result.report["stats"]["fault_coverage"]
    assert coverage["planned"]["covers"] is False
    assert any("too short" in note for note in coverage["planned"]["notes"])
    assert coverage["missing"], "a 150 ms run cannot meet every class"
    reason = next(r for r in result.report["gate"]["reasons"] if "never injected" in r)
    assert coverage["missing"][0] in reason and "too short" in reason
    page = html.render(result.report, result.history)
    section = page[page.index('<section id="fault-coverage">'):]
    assert "Planned, not exercised" in section and "too short" in section
    assert all(f"<li>{m} (never injected)</li>" in section for m in coverage["missing"])
    assert "NOT exercised: " + coverage["missing"][0] in run_summary(result.report, Path("r"))


def test_a_default_length_run_exercises_all_it_planned():
    result = execute(RunConfig(seed=8, ops=DEFAULT_OPS // 4, accounts=DEFAULT_ACCOUNTS // 4,
                               quiet=True))
    coverage = result.report["stats"]["fault_coverage"]
    assert coverage["planned"]["covers"] and not coverage["missing"]
    assert not coverage["missing_combinations"]
    assert all(v["ops"] for v in coverage["variants"].values()), "each met the workload"
    assert result.report["verdict"] == "pass", result.report["gate"]["reasons"]
    section = html.render(result.report)
    assert "Every planned kind, class and combination was exercised." in section
    assert all(f"<th>{label}</th>" in section for label in coverage["variants"])
    assert "fault coverage: every planned kind" in run_summary(result.report, Path("r"))


# -- seeded and replayable --------------------------------------------------------------------------

def _moves(seed: int, length_ms: int = HTTP_DEFAULT_MS) -> list:
    nemesis = nm.Nemesis(ALL, random.Random(seed), 0, length_ms)
    out = []
    while nemesis.next_ms < length_ms:
        now_ms = int(nemesis.next_ms)
        move = nemesis.next_move(now_ms)
        nemesis.added(move[1], f"f-{len(out)}") if move[0] == "add" else None
        out.append((now_ms, move))
    return out


def test_the_same_seed_makes_the_same_schedule_and_another_seed_another():
    assert _moves(4) == _moves(4)
    assert _moves(4) != _moves(5)


def test_a_simulated_run_with_the_covering_nemesis_replays_bit_for_bit():
    first, second = (execute(RunConfig(seed=7, ops=1500, quiet=True)) for _ in range(2))
    assert first.history.dumps() == second.history.dumps()
    assert first.history.meta["nemesis"]["kinds"]


def test_every_fault_is_removed_before_the_convergence_phase():
    result = execute(RunConfig(seed=6, ops=1500, quiet=True))
    converging_ms = result.history.phase_start_ms("convergence")
    windows = result.history.fault_windows()
    assert windows and all(w.end_ms is not None for w in windows)
    assert not [op for op in result.history.ops
                if op.f == "fault_add" and op.invoke_ms >= converging_ms]


# -- profiles -----------------------------------------------------------------------------------

def test_a_profile_names_values_by_the_tables_keys_and_refuses_bad_ones(tmp_path):
    good = tmp_path / "p.toml"
    good.write_text('kinds = ["delay_sync", "maintenance_reset"]\ndelay_ms = [2000]\n'
                    'reset_modes = ["snapshot"]\n')
    profile = nm.load_profile(str(good))
    assert {v.label for v in profile.variants()} == {"delay_sync(long)",
                                                      "maintenance_reset(snapshot)"}
    assert profile.delay_ms == (2000,) and profile.window == (2, 4, 8)
    for text, words in (('kinds = ["delay_sync"]\nwindow = [0]\n', "window"),
                        ('kinds = ["delay_sync"]\nreset_modes = ["wipe"]\n', "wipe"),
                        ('kinds = ["delay_sync"]\nloudness = [3]\n', "unknown key"),
                        ('kinds = ["delay_sync"]\nprobability = []\n', "empty")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(nm.UsageError, match=words):
            nm.load_profile(str(bad))


def test_a_run_probes_the_accounts_written_last_after_each_reset():
    result = execute(RunConfig(seed=6, ops=3000, quiet=True))
    ops = result.history.ops
    safety_ms_ = result.history.phase_start_ms("safety")
    converging_ms = result.history.phase_start_ms("convergence")
    resets = [op for op in ops if op.f == "fault_add" and op.outcome == "ok"
              and op.request["kind"] == "maintenance_reset"]
    assert resets
    for reset in resets:
        after = [op for op in ops[reset.index + 1:] if op.process == 0][:3]
        assert [op.f for op in after] == ["display"] * 3, "a look right after the reset"
        assert after[0].invoke_ms - reset.complete_ms <= nm.PROBE_AFTER_RESET_MS + 1
        written = recently_written(ops[:after[0].index], 3)
        assert [op.account_id for op in after] == written
    probes = [op for op in ops if op.process == 0 and op.f == "display"
              and safety_ms_ <= op.invoke_ms < converging_ms]
    assert len(probes) > len(resets) * 3, "and through the calm stretches"


def test_recently_written_is_the_latest_writes_accounts_latest_first():
    from harness.history import History
    history = History()
    for account_id, f in (("a", "draw"), ("b", "repay"), ("a", "draw"), ("c", "display"),
                          ("d", "limit")):
        history.invoke(1, f, account_id, {}, 0)
    assert recently_written(history.ops, 10) == ["d", "a", "b"]
    assert recently_written(history.ops, 2) == ["d", "a"]
