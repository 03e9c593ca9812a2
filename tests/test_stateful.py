"""LimitMachine: it passes against the correct reference service, and against the reference
service with a seeded bug it finds a failing program within 200 examples and shrinks it to at
most 12 steps, for every bug the catalogue says shows without concurrency."""

from __future__ import annotations

import unittest

import pytest

from harness import convergence, prop
from harness.findings import Finding, FindingsError, describe_findings, raise_for_findings
from harness.prop import PropConfig
from harness.service.bugs import CATALOGUE
from harness.stateful import LimitMachine, machine_for
from harness.strategies import Operation
from harness.targets import open_target

EXAMPLES = 200
STEPS_MAX = 12
SOLO_BUGS = [name for name, bug in CATALOGUE.items() if bug.sequential]
# One bug per property family, so the unmarked run still covers each way the machine finds
# bugs: a rejection, a ledger rule, a display that invents numbers, an idempotent retry.
FAST_BUGS = ("exact_available_rejected", "no_cure", "limit_cut_hidden", "retry_duplicates_draw")


class _Amount:
    """Stands in for hypothesis's `data` when a test calls a rule by hand."""

    def __init__(self, value: int) -> None:
        self.value = value

    def draw(self, strategy, label=None) -> int:
        return self.value


def _search(bug: str) -> prop.PropResult:
    return prop.search(PropConfig(bugs=(bug,), examples=EXAMPLES, steps=30, seed=0))


def _assert_found_and_short(bug: str, result: prop.PropResult) -> None:
    assert result.failed, f"{bug}: no failing program in {EXAMPLES} examples"
    assert result.examples <= EXAMPLES
    assert 1 <= result.steps <= STEPS_MAX, f"{bug}: shrunk to {result.steps} steps:\n" + \
        "\n".join(result.program)
    assert result.program[0].startswith("state = LimitMachine()")
    assert result.program[-1] == "state.teardown()"
    assert any(f.severity in ("critical", "major") for f in result.findings)


# -- finding bugs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bug", FAST_BUGS)
def test_the_machine_finds_a_representative_bug_and_shrinks_it_to_a_short_program(bug):
    _assert_found_and_short(bug, _search(bug))


@pytest.mark.slow
@pytest.mark.parametrize("bug", [b for b in SOLO_BUGS if b not in FAST_BUGS])
def test_the_machine_finds_every_bug_that_shows_without_concurrency(bug):
    _assert_found_and_short(bug, _search(bug))


def test_the_machine_passes_against_the_correct_reference_service():
    result = prop.search(PropConfig(examples=25, steps=20, seed=0))
    assert not result.failed, result.message
    assert result.examples == 25


def test_the_same_seed_gives_the_same_shrunk_program():
    first = prop.search(PropConfig(bugs=("exact_available_rejected",), examples=50, seed=4))
    again = prop.search(PropConfig(bugs=("exact_available_rejected",), examples=50, seed=4))
    assert first.failed and first.program == again.program


# -- judging, by hand -----------------------------------------------------------------------------

def test_a_wrongful_rejection_fails_at_the_step_with_a_readable_diff():
    machine = machine_for(bugs=("exact_available_rejected",))()
    account = machine.open_account("li-na-h", "huabei", 50_000)
    with pytest.raises(FindingsError) as caught:
        machine.draw(account, _Amount(50_000))  # exactly the available: must be accepted
    message = str(caught.value)
    assert "[major] wrongful_rejection on account 'li-na-h' (checker: rejections)" in message
    assert "during the program" in message
    assert "the contract required it to be accepted" in message
    assert "diff (expected -> actual):" in message and "insufficient_limit" in message
    assert [f.kind for f in caught.value.findings] == ["wrongful_rejection"]
    machine.teardown()  # after a failure: only closes the target


def test_teardown_converges_then_judges_the_display_with_the_checkers():
    machine = machine_for(bugs=("limit_cut_hidden",))()
    account = machine.open_account("li-na-h", "huabei", 50_000)
    machine.change_limit(account, _Amount(10_000))  # a cut the buggy projector ignores
    with pytest.raises(FindingsError) as caught:
        machine.teardown()
    assert "after convergence" in str(caught.value)
    assert {"inconsistent_display", "display_divergence"} <= {f.kind for f in caught.value.findings}
    assert "root['credit_line']: 10000 -> 50000" in str(caught.value)
    history = machine.recorder.history
    conv_ms = history.phase_start_ms("convergence")
    reads = [op for op in history.ops if op.f == "display" and op.invoke_ms >= conv_ms]
    deadline_ms = conv_ms + machine.sla_ms + convergence.MARGIN_MS  # no delay was injected
    late = [op for op in reads if op.invoke_ms >= deadline_ms]
    assert len(late) == 2, "a display never seen converged is read twice after the deadline"
    assert len(reads) > len(late), "and watched, not slept through, before it"


def test_a_correct_program_passes_teardown_and_leaves_a_complete_history():
    machine = LimitMachine()
    account = machine.open_account("li-na-h", "huabei", 50_000)
    fault_id = machine.inject_fault({"kind": "delay_sync", "delay_ms": 1_500})
    machine.draw(account, _Amount(20_000))
    machine.act_out_persona_story(account, [Operation("status", "overdue"),
                                            Operation("repay", "outstanding")])
    machine.remove_fault(fault_id)
    machine.maintenance_wipes_display()
    machine.teardown()
    fs = [op.f for op in machine.recorder.history.ops]
    assert fs.count("fault_add") == 2 and "fault_remove" in fs and "ledger" in fs
    assert machine.verdict.findings == [] or all(f.severity == "minor"
                                                 for f in machine.verdict.findings)


def test_machine_for_gives_a_unittest_testcase_that_fails_on_a_bug():
    passing = machine_for(max_examples=5, stateful_step_count=8, database=None).TestCase
    result = unittest.TestResult()
    passing("runTest").run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    failing = machine_for(bugs=("overpay_accepted",), max_examples=100, stateful_step_count=10,
                          database=None).TestCase
    result = unittest.TestResult()
    failing("runTest").run(result)
    assert len(result.failures) == 1 and "ledger_rule_violation" in result.failures[0][1]


def test_machine_for_refuses_bugs_for_a_target_of_its_own_and_unknown_bugs():
    from harness.errors import UsageError

    with pytest.raises(UsageError):
        machine_for(lambda: open_target(None), bugs=("no_cure",))
    with pytest.raises(UsageError):
        machine_for(bugs=("no_such_bug",))


def test_only_critical_and_major_findings_fail():
    minor = Finding(kind="stale_display", severity="minor", account_id="a", first_seen_ms=5,
                    expected=None, actual=None, explanation="late within the grace",
                    checker="display")
    raise_for_findings([minor])  # no exception
    major = Finding(kind="stale_display", severity="major", account_id="a", first_seen_ms=5,
                    expected={"available": 1}, actual={"available": 2},
                    explanation="late", checker="display",
                    diff={"values_changed": {"root['available']": {"new_value": 2,
                                                                   "old_value": 1}}})
    with pytest.raises(FindingsError) as caught:
        raise_for_findings([minor, major], "in a test")
    assert caught.value.findings == [major]
    assert str(caught.value) == describe_findings([major], "in a test")
    assert "root['available']: 1 -> 2" in str(caught.value)


@pytest.mark.http
def test_the_machine_runs_against_a_real_service_over_http(service_url):
    machine = machine_for(lambda: open_target(service_url), sla_ms=200, max_examples=2,
                          stateful_step_count=6, database=None)
    assert machine.__name__ == "LimitMachineOverHttp"
    case = machine.TestCase("runTest")
    result = unittest.TestResult()
    case.run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    assert machine.stats.finished == 2
