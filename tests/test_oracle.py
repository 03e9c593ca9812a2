"""The oracle's two ways in: `apply` (a ledger entry, for checkers and rebuilds) and `step`
(type and value, for events in flight) must be one rule, and both refuse what is not an entry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import contract, oracle
from harness.oracle import State

states = st.builds(State, st.integers(0, contract.FEN_MAX), st.integers(0, contract.FEN_MAX),
                   st.sampled_from(contract.STATUSES))
entries = st.one_of(
    st.builds(lambda v: {"type": "open", "credit_line": v, "product": "huabei"},
              st.integers(0, contract.FEN_MAX)),
    st.builds(lambda k, v: {"type": k, "amount": v}, st.sampled_from(["draw", "repay"]),
              st.integers(1, contract.FEN_MAX)),
    st.builds(lambda v: {"type": "limit", "credit_line": v, "reason": "r"},
              st.integers(0, contract.FEN_MAX)),
    st.builds(lambda v: {"type": "status", "status": v, "reason": "r"},
              st.sampled_from(contract.STATUSES)),
)


@given(states, entries)
def test_step_on_an_entrys_value_is_apply_on_the_entry(state, entry):
    kind = entry["type"]
    assert oracle.step(state, kind, entry[oracle.VALUE_FIELD[kind]]) == oracle.apply(state, entry)


@given(states, entries)
def test_apply_changes_exactly_the_field_its_entry_names(state, entry):
    after = oracle.apply(state, entry)
    kind = entry["type"]
    assert type(after) is State
    if kind == "open":
        assert after == State(entry["credit_line"], 0, "active")
    elif kind == "draw":
        assert after == state._replace(outstanding=state.outstanding + entry["amount"])
    elif kind == "repay":
        assert after == state._replace(outstanding=state.outstanding - entry["amount"])
    elif kind == "limit":
        assert after == state._replace(credit_line=entry["credit_line"])
    else:
        assert after == state._replace(status=entry["status"])


@pytest.mark.parametrize("call", [
    lambda: oracle.apply(State(1, 0, "active"), {"type": "refund", "amount": 1}),
    lambda: oracle.step(State(1, 0, "active"), "refund", 1),
    lambda: oracle.entry_value({"type": "open", "credit_line": 1}),
    lambda: oracle.entry_value({"type": "refund", "amount": 1}),
])
def test_an_unknown_or_unjudged_entry_type_is_a_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_entry_value_is_what_judge_takes():
    assert oracle.entry_value({"type": "draw", "amount": 7}) == 7
    assert oracle.entry_value({"type": "limit", "credit_line": 9, "reason": "r"}) == 9
    assert oracle.entry_value({"type": "status", "status": "closed", "reason": "r"}) == "closed"
