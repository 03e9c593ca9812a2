"""The oracle: an account's state as a pure function of its ledger entries (CONTRACT.md).

The reference service commits by these rules and the checkers judge by them, so a rule lives in
exactly one place. Everything here is pure: no clock, no I/O, no mutation of its inputs.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

DISPLAY_FIELDS = ("credit_line", "outstanding", "available", "status", "usable")


class State(NamedTuple):
    credit_line: int
    outstanding: int
    status: str

    @property
    def available(self) -> int:
        if self.status != "active":
            return 0
        return max(0, self.credit_line - self.outstanding)

    @property
    def usable(self) -> bool:
        return self.available > 0

    def view(self) -> dict:
        """The fields a display shows for this state."""
        available = self.available
        return {
            "credit_line": self.credit_line,
            "outstanding": self.outstanding,
            "available": available,
            "status": self.status,
            "usable": available > 0,
        }


# tuple.__new__ skips the Python-level __new__ a NamedTuple call runs: half the cost, and
# `apply` builds one State per entry for the service and for every checker.
_new = tuple.__new__


def opened(credit_line: int) -> State:
    assert type(credit_line) is int and credit_line >= 0, credit_line
    return _new(State, (credit_line, 0, "active"))


def apply(state: State | None, entry: dict) -> State:
    """The state after one entry. Never judges legality (see `judge`): a ledger that broke a rule
    still has a well-defined state, which the checkers need to keep replaying past the break."""
    kind = entry["type"]
    field = VALUE_FIELD.get(kind)
    if field is None:
        raise ValueError(f"unknown entry type {kind!r}")
    return step(state, kind, entry[field])


# The one field of each entry type that carries what the entry changes.
VALUE_FIELD = {"open": "credit_line", "draw": "amount", "repay": "amount",
               "limit": "credit_line", "status": "status"}


def step(state: State | None, kind: str, value: int | str) -> State:
    """`apply` for an entry given as its type and its VALUE_FIELD: what the service's events
    carry instead of the entry, so delivery looks nothing up in a dict."""
    if kind == "open":
        return opened(value)
    assert state is not None, "an entry before the account's open entry"
    # Direct construction, not _replace: this is the hot path of simulation and of every checker.
    credit_line, outstanding, status = state
    if kind == "draw":
        return _new(State, (credit_line, outstanding + value, status))
    if kind == "repay":
        return _new(State, (credit_line, outstanding - value, status))
    if kind == "limit":
        return _new(State, (value, outstanding, status))
    if kind == "status":
        return _new(State, (credit_line, outstanding, value))
    raise ValueError(f"unknown entry type {kind!r}")


def judge(state: State, kind: str, value: int | str) -> str | None:
    """None when the write is allowed on `state`, else the contract's error code.

    `value` is the amount (draw, repay), the new credit line (limit) or the new status (status).
    """
    assert state is not None, "only an open account is judged"
    if kind == "draw":
        if state.status != "active":
            return "account_not_active"
        if not 0 < value <= state.available:
            return "insufficient_limit"
        return None
    if kind == "repay":
        if state.status == "closed":
            return "account_not_active"
        if not 0 < value <= state.outstanding:
            return "overpayment"
        assert state.outstanding - value >= 0  # an accepted repay never leaves a negative balance
        return None
    if kind == "limit":
        return "account_not_active" if state.status == "closed" else None
    if kind == "status":
        if value == "closed" and state.outstanding != 0:
            return "outstanding_balance"
        return None
    raise ValueError(f"unknown write kind {kind!r}")


def cures(state: State, kind: str, value: int | str) -> bool:
    """The cure rule: a repay that clears an overdue account's balance reactivates it (the
    service appends a `status: active, reason: cured` entry in the same transaction)."""
    return kind == "repay" and state.status == "overdue" and 0 < state.outstanding == value


def after_write(state: State | None, kind: str, value: int | str) -> State:
    """The state after an accepted write and, when the cure rule applies, its cure entry."""
    after = step(state, kind, value)
    if state is not None and cures(state, kind, value):
        after = _new(State, (after.credit_line, after.outstanding, "active"))
    # An accepted write never takes a balance below zero (one already below zero came from a
    # service that broke the rules, and a belief folded from its answers may carry it).
    floor = 0 if state is None else min(0, state.outstanding)
    assert after.outstanding >= floor or judge(state, kind, value) is not None, (state, kind)
    return after


def entry_value(entry: dict) -> int | str:
    """The value `judge` takes for this entry."""
    kind = entry["type"]
    if kind == "open":
        raise ValueError("entry type 'open' has no judged value")
    field = VALUE_FIELD.get(kind)
    if field is None:
        raise ValueError(f"entry type {kind!r} has no judged value")
    return entry[field]


def replay(entries: Iterable[dict]) -> list[tuple[int, State]]:
    """(seq, state after that entry) for one account's entries, in the order given (seq order)."""
    out: list[tuple[int, State]] = []
    state: State | None = None
    fields, change = VALUE_FIELD, step  # `apply`, inlined: this runs once per ledger entry
    for entry in entries:
        kind = entry["type"]
        if kind not in fields:
            raise ValueError(f"unknown entry type {kind!r}")
        state = change(state, kind, entry[fields[kind]])
        out.append((entry["seq"], state))
    assert all(a[0] < b[0] for a, b in zip(out, out[1:])), "entries out of seq order"
    return out


def state_at(timeline: list[tuple[int, State]], seq: int) -> State | None:
    """The state reflecting exactly the entries with seq <= `seq`; None before the open entry."""
    lo, hi = 0, len(timeline)
    while lo < hi:
        mid = (lo + hi) // 2
        if timeline[mid][0] <= seq:
            lo = mid + 1
        else:
            hi = mid
    assert lo == len(timeline) or timeline[lo][0] > seq
    return timeline[lo - 1][1] if lo else None

