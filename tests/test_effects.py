"""Proof that a fault took effect (harness/effects.py): each injection over histories built by
hand, one where the fault acted and one where it did nothing; and the gate key that fails a run
on faults no client saw act."""

from __future__ import annotations

from harness import gate
from harness.effects import fault_effects
from harness.history import History
from harness.runner import RunConfig, execute

ACCOUNT = "a1"
QUIET_UNTIL_MS = 900


class Run:
    """A history in time order: a quiet stretch (writes, each read current right after), then
    whatever a test adds."""

    def __init__(self) -> None:
        self.history = History(meta={"sla_ms": 1000})
        self.seq = 0
        self.history.phase("setup", 0)
        self.history.phase("safety", 0)
        for t_ms in range(0, QUIET_UNTIL_MS, 30):
            self.write(t_ms, t_ms + 2)
            self.read(t_ms + 10, self.seq)

    def write(self, t_ms: int, ack_ms: int | None, status: int | None = 201) -> int:
        op = self.history.invoke(1, "draw", ACCOUNT, {"amount": 1, "request_id": f"r{t_ms}"},
                                 t_ms)
        if status == 201:
            self.seq += 1
            self.history.complete(op, "ok", ack_ms, 201, {"entry_id": f"e{self.seq}",
                                                          "seq": self.seq})
        else:
            self.history.complete(op, "info", ack_ms, status, None, "ConnectionResetError")
        return self.seq

    def read(self, t_ms: int, as_of_seq: int, status: int = 200) -> None:
        op = self.history.invoke(1, "display", ACCOUNT, None, t_ms)
        if status != 200:
            self.history.complete(op, "fail", t_ms + 1, status, {"error": "display_unavailable"})
            return
        self.history.complete(op, "ok", t_ms + 1, 200, {
            "account_id": ACCOUNT, "credit_line": 100, "outstanding": 0, "available": 100,
            "status": "active", "usable": True, "as_of_seq": as_of_seq})

    def inject(self, kind: str, t_ms: int, done_ms: int, provider: str = "hooks",
               refused: bool = False, **params) -> str:
        fault_id = f"{provider}-{t_ms}"
        op = self.history.invoke(0, "fault_add", None, {"kind": kind, **params}, t_ms)
        if refused:
            self.history.complete(op, "fail", done_ms, 409, {
                "error": "fault_refused", "detail": "hook exited with 3", "provider": provider},
                "the hooks provider refused it: hook exited with 3")
        else:
            self.history.complete(op, "ok", done_ms, 201, {"fault_id": fault_id, "kind": kind,
                                                           **params, "provider": provider})
        return fault_id

    def remove(self, fault_id: str, t_ms: int) -> None:
        op = self.history.invoke(0, "fault_remove", None, {"fault_id": fault_id}, t_ms)
        self.history.complete(op, "ok", t_ms, 204, None)

    def effects(self) -> dict:
        return fault_effects(self.history)


def only(effects: dict) -> dict:
    assert len(effects["faults"]) == 1, effects["faults"]
    return effects["faults"][0]


def delayed(acted: bool, reads: int = 2) -> dict:
    """A delay_sync: a write made while it is on, read 198 ms later and after: behind if it
    acted."""
    run = Run()
    fault_id = run.inject("delay_sync", 1000, 1001, delay_ms=500)
    before = run.seq
    written = run.write(1100, 1102)
    for n in range(reads):
        run.read(1300 + 10 * n, written if not acted else before)
    run.remove(fault_id, 2000)
    return run.effects()


def test_a_delay_that_held_a_write_back_is_observed():
    effects = delayed(acted=True)
    fault = only(effects)
    assert fault["effect"] == "observed", fault
    assert fault["signs"] == {"lag": 2} and fault["provider"] == "hooks"
    assert "208 ms behind" in fault["why"]
    assert effects["observed"] == 1 and effects["not_observed"] == 0
    assert effects["ineffective"] == []


def test_a_delay_whose_reads_were_all_current_is_ineffective():
    effects = delayed(acted=False)
    fault = only(effects)
    assert fault["effect"] == "not_observed", fault
    assert fault["chances"] == {"lag": 2}
    assert "all current" in fault["why"]
    assert effects["not_observed"] == 1
    assert [f["label"] for f in effects["ineffective"]] == ["delay_sync(delay_ms=500)"]
    assert effects["by_provider"]["hooks"]["not_observed"] == 1


def test_a_single_late_read_is_too_little_to_tell_from_a_busy_machine():
    fault = only(delayed(acted=True, reads=1))
    assert fault["effect"] == "undetermined" and "a single sign" in fault["why"], fault


def test_a_delay_nobody_could_see_is_undetermined_not_ineffective():
    run = Run()
    fault_id = run.inject("delay_sync", 1000, 1001, delay_ms=500)
    run.read(1200, run.seq)  # no write was made while it was on: nothing to hold back
    run.remove(fault_id, 2000)
    fault = only(run.effects())
    assert fault["effect"] == "undetermined" and "no chance" in fault["why"], fault


def crashed(acted: bool) -> dict:
    run = Run()
    run.inject("crash_restart", 1000, 1150, provider="process")
    run.write(990, 1012, status=None if acted else 201)  # in flight when it was killed
    run.write(1020, 1022, status=None if acted else 201)  # sent while it was down
    run.read(1100, run.seq)
    return run.effects()


def test_a_crash_that_cut_requests_is_observed():
    fault = only(crashed(acted=True))
    assert fault["effect"] == "observed" and fault["signs"] == {"no_answer": 2}, fault
    assert fault["end_ms"] == 1150  # one shot: over once the restart is answered


def test_a_crash_that_every_request_sailed_through_is_ineffective():
    fault = only(crashed(acted=False))
    assert fault["effect"] == "not_observed", fault
    assert fault["chances"] == {"requests": 2}  # those sent while it was on


def test_a_wipe_seen_as_503s_is_observed_and_one_seen_as_nothing_is_not():
    for status, effect in ((503, "observed"), (200, "not_observed")):
        run = Run()
        run.inject("maintenance_reset", 1000, 1001, provider="chaos_api", mode="clear")
        run.read(1050, run.seq, status=status)
        run.read(1100, run.seq, status=status)
        assert only(run.effects())["effect"] == effect


def test_a_provider_seen_to_act_once_is_not_called_ineffective_for_a_quick_repair():
    run = Run()
    run.inject("maintenance_reset", 1000, 1001, provider="hooks", mode="clear")
    run.read(1050, run.seq, status=503)
    run.read(1100, run.seq, status=503)
    run.inject("maintenance_reset", 3000, 3001, provider="hooks", mode="clear")
    run.read(3050, run.seq)  # rebuilt before anyone looked
    run.read(3100, run.seq)
    first, second = run.effects()["faults"]
    assert first["effect"] == "observed"
    assert second["effect"] == "undetermined" and "other maintenance_reset" in second["why"]


def test_a_refused_injection_is_listed_as_refused_not_ineffective():
    run = Run()
    run.inject("maintenance_reset", 1000, 1003, refused=True, mode="clear")
    effects = run.effects()
    fault = only(effects)
    assert fault["effect"] == "refused" and "exited with 3" in fault["why"], fault
    assert effects["refused"] == 1 and effects["injected"] == 0 and effects["not_observed"] == 0


def test_a_sign_two_faults_could_explain_proves_neither():
    run = Run()
    delay = run.inject("delay_sync", 1000, 1001, delay_ms=500)
    pause = run.inject("pause_sync", 1005, 1006, provider="process")
    before = run.seq
    run.write(1100, 1102)
    run.read(1300, before)
    run.read(1310, before)
    run.remove(delay, 2000)
    run.remove(pause, 2000)
    effects = run.effects()
    assert [f["effect"] for f in effects["faults"]] == ["undetermined", "undetermined"]
    assert all(f["shared_signs"] == {"lag": 2} for f in effects["faults"])


def test_faults_acting_on_events_by_chance_are_never_called_ineffective():
    run = Run()
    fault_id = run.inject("duplicate_events", 1000, 1001, probability=1.0)
    run.write(1100, 1102)
    run.read(1200, run.seq)
    run.remove(fault_id, 2000)
    assert only(run.effects())["effect"] == "undetermined"


def test_slow_answers_under_network_latency_are_observed():
    for extra_ms, effect in ((400, "observed"), (0, "not_observed")):
        run = Run()
        fault_id = run.inject("network_latency", 1000, 1001, provider="network", latency_ms=300)
        for t_ms in (1010, 1500, 2000):
            op = run.history.invoke(1, "display", ACCOUNT, None, t_ms)
            run.history.complete(op, "ok", t_ms + 1 + extra_ms, 200, {
                "account_id": ACCOUNT, "credit_line": 100, "outstanding": 0, "available": 100,
                "status": "active", "usable": True, "as_of_seq": run.seq})
        written = run.write(2500, 2502 + extra_ms)
        run.read(2700 + extra_ms, written)  # a write during it, read current: no lag either
        run.remove(fault_id, 3000)
        fault = only(run.effects())
        assert fault["effect"] == effect, fault


def test_the_gate_fails_on_ineffective_faults_only_when_its_policy_bounds_them():
    report = {"findings": [], "stats": {"fault_effects": delayed(acted=False)}}
    assert gate.judge(report, gate.load_policy(None)).passed  # the default: reported only
    strict = gate.judge(report, gate.Policy(ineffective_faults_max=0))
    assert not strict.passed
    assert "1 injected fault(s) had no effect" in strict.reasons[0]
    assert "delay_sync(delay_ms=500) at t=1000 ms via hooks" in strict.reasons[0]
    assert gate.judge(report, gate.Policy(ineffective_faults_max=1)).passed
    acted = {"findings": [], "stats": {"fault_effects": delayed(acted=True)}}
    assert gate.judge(acted, gate.Policy(ineffective_faults_max=0)).passed


def test_a_correct_service_under_every_chaos_api_fault_has_no_ineffective_fault():
    """The embedded reference service (simulated, seed 7): every fault its chaos API carries out
    acts, and none is called ineffective; the report says which provider carried each out."""
    result = execute(RunConfig(seed=7, ops=6000, quiet=True))
    effects = result.report["stats"]["fault_effects"]
    assert effects["injected"] >= 10 and effects["observed"] >= 5, effects
    assert effects["not_observed"] == 0, effects["ineffective"]
    assert set(effects["by_provider"]) == {"chaos_api"}
