"""Writes as the history saw them: every attempt sharing one request_id is one logical write, and
what the client learnt of it (acknowledged, rejected, or unknown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import contract
from .history import WRITE_FS, History, Op
from .oracle import VALUE_FIELD

STATUSES = ("acknowledged", "rejected", "unknown")


@dataclass(slots=True)
class WriteGroup:
    request_id: str
    kind: str
    account_id: str | None
    attempts: list[Op]
    # "acknowledged" (some attempt 201), "rejected" (every attempt a definite 4xx) or "unknown".
    status: str
    # Earliest acknowledgement: the latest moment by which its entry was surely committed.
    ack_ms: int | None
    first_invoke_ms: int

    @property
    def first(self) -> Op:
        return self.attempts[0]

    def value(self) -> Any:
        """What `oracle.judge` takes for this write (None for an open, which it never judges)."""
        if self.kind == "open":
            return None
        return (self.first.request or {}).get(VALUE_FIELD[self.kind])

    def last_ms(self) -> int:
        """The last moment any attempt was in flight."""
        return max(max(op.invoke_ms, op.complete_ms or 0) for op in self.attempts)


def write_groups(history: History) -> dict[str, WriteGroup]:
    """Write ops by request_id, in the order of each request's first attempt."""
    groups: dict[str, WriteGroup] = {}
    retried: list[WriteGroup] = []
    writes, status_of_one = WRITE_FS, _STATUS_OF_ONE
    # One pass builds each group as if its first attempt were its only one (most are); the
    # groups that got more attempts are settled after it.
    for op in history.ops:
        if op.f not in writes or type(op.request) is not dict:
            continue
        request_id = op.request.get("request_id")
        if type(request_id) is not str:
            continue
        group = groups.get(request_id)
        if group is None:
            outcome = op.outcome
            groups[request_id] = WriteGroup(
                request_id, op.f, op.account_id or op.request.get("account_id"), [op],
                status_of_one.get(outcome, "unknown"),
                op.complete_ms if outcome == "ok" else None, op.invoke_ms)
        else:
            if len(group.attempts) == 1:
                retried.append(group)
            group.attempts.append(op)
    for group in retried:
        ops = group.attempts
        outcomes = {op.outcome for op in ops}
        group.status = ("acknowledged" if "ok" in outcomes else
                        "rejected" if outcomes == {"fail"} else "unknown")
        group.ack_ms = min((op.complete_ms for op in ops
                            if op.outcome == "ok" and op.complete_ms is not None), default=None)
        group.first_invoke_ms = min(op.invoke_ms for op in ops)
        assert group.status != "acknowledged" or group.ack_ms is not None
    return groups


_STATUS_OF_ONE = {"ok": "acknowledged", "fail": "rejected"}


def entry_owner(request_id: Any, groups: dict[str, WriteGroup]) -> tuple[WriteGroup | None, bool]:
    """The write that made an entry with this request_id, and whether the entry is its cure."""
    if type(request_id) is not str:
        return None, False
    group = groups.get(request_id)
    if group is not None:
        return group, False
    base_id = contract.cured_request_id(request_id)
    base = groups.get(base_id) if base_id is not None else None
    if base is not None and base.kind == "repay":
        return base, True
    return None, False


def entry_acks_ms(entries: list[dict], groups: dict[str, WriteGroup],
                  owners: list[tuple[WriteGroup | None, bool]] | None = None) -> list[int | None]:
    """For each entry (in seq order), a moment by which it was surely committed, or None.

    Only an acknowledgement that vouches for this very entry counts: one whose receipt names its
    seq, or one without a seq when the request made no other entry. A duplicate or a rewrite by
    a later retry may have been committed long after the first acknowledgement. A cure was
    committed with its repay. `owners`: each entry's `entry_owner`, when already known."""
    if owners is None:
        owners = [entry_owner(entry["request_id"], groups) for entry in entries]
    made: dict[str, int] = {}
    for group, is_cure in owners:
        if group is not None and not is_cure:
            made[group.request_id] = made.get(group.request_id, 0) + 1
    repay_ack_ms: dict[str, int | None] = {}
    out: list[int | None] = []
    for entry, (group, is_cure) in zip(entries, owners):
        if group is None:
            out.append(None)
            continue
        if is_cure:
            out.append(repay_ack_ms.get(group.request_id))
            continue
        alone = made[group.request_id] == 1
        attempts = group.attempts
        if len(attempts) == 1:  # most writes: decided without a generator
            op = attempts[0]
            ack_ms = op.complete_ms if op.outcome == "ok" and \
                _vouches(op.response, entry["seq"], alone) else None
        else:
            ack_ms = min((op.complete_ms for op in attempts
                          if op.outcome == "ok" and op.complete_ms is not None
                          and _vouches(op.response, entry["seq"], alone)), default=None)
        repay_ack_ms[group.request_id] = ack_ms
        out.append(ack_ms)
    assert len(out) == len(entries)
    return out


def _vouches(response: Any, seq: int, alone: bool) -> bool:
    named = response.get("seq") if isinstance(response, dict) else None
    return named == seq if named is not None else alone
