"""The strategies of harness.strategies: every value they produce is one the contract accepts,
the edges they claim to favour are actually produced, and the same hypothesis seed gives the
same values (faker included)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness import contract, oracle, strategies
from harness.targets import EmbeddedTarget
from harness.workload import PERSONAS

# Generation only: these tests collect what a strategy produces, there is nothing to shrink.
COLLECT = settings(max_examples=300, database=None, deadline=None, phases=[Phase.generate],
                   suppress_health_check=[HealthCheck.too_slow])


def collect(strategy, n: int = 300, at_seed: int = 0) -> list:
    """What `strategy` produces in `n` examples from a fixed hypothesis seed."""
    seen: list = []

    @seed(at_seed)
    @settings(COLLECT, max_examples=n)
    @given(strategy)
    def run(value):
        seen.append(value)

    run()
    return seen


# -- ids and names --------------------------------------------------------------------------------

@pytest.mark.parametrize("max_size", [64, 20, 1])
def test_account_ids_are_ids_the_contract_accepts(max_size):
    ids = collect(strategies.account_ids(max_size=max_size), 200)
    assert ids and all(contract.is_id(i) and len(i) <= max_size for i in ids)


def test_account_ids_sometimes_use_the_allowed_punctuation_and_the_full_length():
    ids = collect(strategies.account_ids(), 300)
    assert any(ch in i for i in ids for ch in ".:_")
    assert any(len(i) == 64 for i in ids)


def test_names_come_from_faker_and_are_deterministic_under_the_seed():
    first = collect(strategies.names(), 60, at_seed=7)
    again = collect(strategies.names(), 60, at_seed=7)
    other = collect(strategies.names(), 60, at_seed=8)
    assert first == again
    assert first != other
    assert all(isinstance(n, str) and n.strip() for n in first)
    assert len(set(first)) > 5  # not one name over and over


def test_account_ids_are_deterministic_under_the_seed():
    assert collect(strategies.account_ids(), 80, at_seed=3) == \
        collect(strategies.account_ids(), 80, at_seed=3)


# -- money ----------------------------------------------------------------------------------------

def test_amounts_are_positive_fen_within_the_contracts_bound():
    values = collect(strategies.amounts(), 200) + \
        collect(strategies.amounts(available=contract.FEN_MAX, outstanding=contract.FEN_MAX), 100)
    assert all(type(v) is int and 1 <= v <= contract.FEN_MAX for v in values)


def test_amounts_produce_every_edge_and_ordinary_values():
    # In lists, as a program draws them: a lone @given never repeats a choice it has made,
    # which would hide how often each edge comes up.
    lists = collect(st.lists(strategies.amounts(available=50_000, outstanding=1_234),
                             min_size=10, max_size=10), 60)
    values = [v for values in lists for v in values]
    edges = {1, 50_000, 50_001, 1_234, 1_235}
    assert edges <= set(values), f"missing edges: {edges - set(values)}"
    ordinary = [v for v in values if v not in edges]
    assert len(set(ordinary)) > 50
    # About half the draws are edges: what makes off-by-one bugs show within a few examples.
    assert sum(v in edges for v in values) > len(values) / 3


def test_amounts_with_a_negative_balance_still_produce_valid_amounts():
    # A broken service can leave a negative balance in the machine's model.
    values = collect(strategies.amounts(available=0, outstanding=-500), 100)
    assert all(1 <= v <= contract.FEN_MAX for v in values)
    assert 1 in values


def test_credit_lines_produce_cuts_to_and_below_the_balance_and_steps_around_the_line():
    values = collect(strategies.credit_lines(current=800_000, outstanding=300_000), 300)
    assert all(type(v) is int and 0 <= v <= contract.FEN_MAX for v in values)
    assert {0, 1, 300_000, 299_999, 799_999, 800_001} <= set(values)


# -- personas and stories -------------------------------------------------------------------------

def test_personas_are_the_workloads():
    assert set(collect(strategies.personas(), 100)) == set(PERSONAS)


@pytest.mark.parametrize("persona", PERSONAS)
def test_operations_tell_the_personas_story_in_order(persona):
    story = [op for op in strategies.PERSONA_STORIES[persona] if op.f not in ("draw", "repay")]
    for ops in collect(strategies.operations(persona), 40):
        assert all(isinstance(op, strategies.Operation) for op in ops)
        # The story's non-money steps (statuses, limit cuts, reads, retries) appear in order.
        rest = iter(ops)
        assert all(any(op == step for op in rest) for step in story), (persona, ops)


STATES = st.builds(oracle.State, st.integers(0, contract.FEN_MAX), st.integers(-10, contract.FEN_MAX),
                   st.sampled_from(contract.STATUSES))


@settings(max_examples=200, database=None, deadline=None)
@given(ops=strategies.operations(), state=STATES)
def test_operations_resolve_to_requests_the_contract_accepts(ops, state):
    parse = {"draw": contract.parse_amount, "repay": contract.parse_amount,
             "limit": contract.parse_limit, "status": contract.parse_status}
    for n, op in enumerate(ops):
        body = op.request(state, f"r{n}")
        if op.f in parse:
            parse[op.f](body)  # raises contract.BadRequest if the harness would send a 400
        else:
            assert body is None and op.f in ("display", "retry", "wait")


def test_persona_stories_are_the_stories_as_told():
    told = collect(strategies.persona_stories(), 100)
    assert {tuple(s) for s in told} == set(strategies.PERSONA_STORIES.values())


def test_operation_reads_like_python_in_a_failing_program():
    assert repr(strategies.Operation("draw", "available")) == "Operation('draw', 'available')"
    assert repr(strategies.Operation("display")) == "Operation('display')"


# -- faults ---------------------------------------------------------------------------------------

def test_faults_cover_all_six_kinds_with_parameters_the_contract_accepts():
    faults = collect(strategies.faults(), 300)
    assert {f["kind"] for f in faults} == set(contract.FAULT_KINDS)
    for fault in faults:
        contract.parse_fault(fault)  # raises on a missing, mistyped or out-of-range parameter


def test_faults_are_accepted_by_the_reference_service():
    target = EmbeddedTarget()
    try:
        for fault in collect(strategies.faults(max_delay_ms=5_000), 120):
            reply = target.request("POST", "/v1/chaos/faults", fault)
            assert reply.status == 201, (fault, reply)
            target.request("DELETE", "/v1/chaos/faults")
    finally:
        target.close()


def test_faults_favour_the_strongest_probability_and_stay_within_a_delay_bound():
    faults = collect(strategies.faults(("drop_events", "delay_sync"), max_delay_ms=700), 300)
    assert {f["kind"] for f in faults} == {"drop_events", "delay_sync"}
    assert any(f.get("probability") == 1.0 for f in faults)
    assert all(f["delay_ms"] <= 700 for f in faults if f["kind"] == "delay_sync")


def test_faults_refuse_unknown_or_no_kinds():
    with pytest.raises(ValueError):
        strategies.faults(("meteor_strike",))
    with pytest.raises(ValueError):
        strategies.faults(())


def test_fault_schedules_are_ordered_and_only_remove_what_they_injected():
    schedules = collect(strategies.fault_schedules(horizon_ms=5_000), 200)
    assert any(any("remove" in action for _, action in s) for s in schedules)
    for schedule in schedules:
        times = [at for at, _ in schedule]
        assert times == sorted(times) and all(0 <= t <= 5_000 for t in times)
        injected = 0
        removed: set[int] = set()
        injections = strategies.schedule_faults(schedule)
        for _, action in schedule:
            if "kind" in action:
                contract.parse_fault(action)
                injected += 1
                continue
            n = action["remove"]
            assert n < injected, "a removal names an injection made before it"
            assert n not in removed, "each injection is removed at most once"
            assert injections[n]["kind"] != "maintenance_reset", "a reset is one shot"
            removed.add(n)
