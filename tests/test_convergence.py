"""The convergence phase watches instead of sleeping: it ends once every display shows the
oracle's final state and keeps showing it, and still catches a display that flaps after
converging or a late duplicate that corrupts a converged display (over HTTP, with seeded bugs)."""

from __future__ import annotations

import time

import pytest

from harness import convergence
from harness.analysis import CheckConfig
from harness import checkers
from harness.client import Recorder, ledger_head_seq
from harness.history import new_history
from harness.targets import HttpTarget

pytestmark = pytest.mark.http
SLA_MS = 1000


def _story(url: str, tag: str) -> Recorder:
    target = HttpTarget(url)
    recorder = Recorder(target, new_history(target.name, False, SLA_MS),
                        ledger_after_seq=ledger_head_seq(target))
    for n in range(3):
        account = f"{tag}-a{n}"
        recorder.write(1, "open", account, {"account_id": account, "product": "huabei",
                                            "credit_line": 100_000, "request_id": f"{tag}-o{n}"})
        recorder.write(1, "draw", account, {"amount": 30_000, "request_id": f"{tag}-d{n}"})
        recorder.write(1, "repay", account, {"amount": 10_000, "request_id": f"{tag}-r{n}"})
    recorder.add_fault(0, {"kind": "delay_sync", "delay_ms": 50})
    return recorder


def _judged(recorder: Recorder) -> tuple[bool, set[str], float]:
    recorder.phase("convergence")
    started = time.monotonic()
    early = convergence.converge(recorder, SLA_MS)
    took_s = time.monotonic() - started
    recorder.phase("check")
    ledger = convergence.fetch_ledger(recorder)
    verdict = checkers.check(recorder.history, ledger, CheckConfig(sla_ms=SLA_MS))
    recorder.target.close()
    return early, {f.kind for f in verdict.findings if f.severity != "minor"}, took_s


def test_a_correct_service_is_seen_converged_long_before_the_service_level(start_service):
    served = start_service("--sync-lag-ms", "5")
    early, kinds, took_s = _judged(_story(served.url, "ok"))
    assert early and kinds == set()
    assert took_s < SLA_MS / 1000, f"convergence took {took_s:.2f} s"


def test_a_late_duplicate_that_corrupts_a_converged_display_is_caught(start_service):
    served = start_service("--bug", "late_duplicate", "--sync-lag-ms", "5")
    early, kinds, _ = _judged(_story(served.url, "dup"))
    assert "inconsistent_display" in kinds


def test_a_display_that_flaps_after_converging_is_caught(start_service):
    served = start_service("--bug", "display_flaps", "--sync-lag-ms", "5")
    recorder = _story(served.url, "flap")
    time.sleep(2.2)  # the service's snapshot (every 2 s) now holds these accounts' first state
    recorder.write(1, "draw", "flap-a0", {"amount": 1_000, "request_id": "flap-late"})
    early, kinds, _ = _judged(recorder)
    assert not early, "a flapping display never counts as converged"
    assert kinds & {"stale_display", "display_divergence"}


def test_a_service_that_never_converges_is_waited_out_and_judged(start_service):
    served = start_service("--bug", "no_gap_repair", "--sync-lag-ms", "5")
    recorder = _story(served.url, "stuck")
    recorder.add_fault(0, {"kind": "drop_events", "probability": 1.0})
    recorder.write(1, "draw", "stuck-a1", {"amount": 5_000, "request_id": "stuck-lost"})
    early, kinds, took_s = _judged(recorder)
    assert not early and "display_divergence" in kinds
    assert took_s >= SLA_MS / 1000
