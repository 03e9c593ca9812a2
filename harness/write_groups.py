"""Writes as the history saw them: every attempt sharing one request_id is one logical write, and
what the client learnt of it (acknowledged, rejected, or unknown)."""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from . import contract
from .history import WRITE_FS, History, Op
from .oracle import VALUE_FIELD

STATUSES = ("acknowledged", "rejected", "unknown")
_REQUEST_ID = operator.itemgetter("request_id")


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
        request = self.attempts[0].request
        return request.get(VALUE_FIELD[self.kind]) if request else None

    def last_ms(self) -> int:
        """The last moment any attempt was in flight."""
        return max(max(op.invoke_ms, op.complete_ms or 0) for op in self.attempts)


def write_groups(history: History) -> dict[str, WriteGroup]:
    """Write ops by request_id, in the order of each request's first attempt."""
    groups: dict[str, WriteGroup] = {}
    retried: list[WriteGroup] = []
    writes, status_of_one, known = _WRITE_FS, _STATUS_OF_ONE, groups.get
    # One pass builds each group as if its first attempt were its only one (most are); the
    # groups that got more attempts are settled after it.
    for op in history.ops:
        if op.f not in writes:
            continue
        request = op.request
        if type(request) is not dict:
            continue
        request_id = request.get("request_id")
        if type(request_id) is not str:
            continue
        group = known(request_id)
        if group is None:
            outcome = op.outcome
            groups[request_id] = WriteGroup(
                request_id, op.f, op.account_id or request.get("account_id"), [op],
                status_of_one.get(outcome, "unknown"),
                op.complete_ms if outcome == "ok" else None, op.invoke_ms)
        else:
            if len(group.attempts) == 1:
                retried.append(group)
            group.attempts.append(op)
    for group in retried:
        acknowledged = refused = unknown = False
        ack_ms: int | None = None
        for op in group.attempts:
            if op.outcome == "ok":
                acknowledged = True
                if op.complete_ms is not None and (ack_ms is None or op.complete_ms < ack_ms):
                    ack_ms = op.complete_ms
            elif op.outcome == "fail":
                refused = True
            else:
                unknown = True
            group.first_invoke_ms = min(group.first_invoke_ms, op.invoke_ms)
        group.status = ("acknowledged" if acknowledged else
                        "rejected" if refused and not unknown else "unknown")
        group.ack_ms = ack_ms
        assert group.status != "acknowledged" or group.ack_ms is not None
    return groups


_STATUS_OF_ONE = {"ok": "acknowledged", "fail": "rejected"}
_WRITE_FS = frozenset(WRITE_FS)  # one hash lookup per op, not five comparisons


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


class EntryOwners(NamedTuple):
    """`entry_owner` of each entry of a list, as two columns."""

    groups: list[WriteGroup | None]
    cures: list[bool] | None  # None: no entry is a cure

    def is_cure(self) -> Iterable[bool]:
        """Whether each entry is a cure, to zip with the entries (endless when none is)."""
        return self.cures if self.cures is not None else itertools.repeat(False)


def entry_owners(entries: list[dict], groups: dict[str, WriteGroup]) -> EntryOwners:
    """`entry_owner` of each entry's request_id."""
    request_ids = list(map(_REQUEST_ID, entries))
    try:
        # Most entries are their own write's: one lookup each, without the cure rule.
        found = list(map(groups.get, request_ids))
    except TypeError:  # an unhashable request_id (a malformed entry): no write made it
        found = [groups.get(r) if type(r) is str else None for r in request_ids]
    cures: list[bool] | None = None
    if not all(found):  # some entry is no write's own (a group is always true, None false)
        for n, group in enumerate(found):
            if group is None:
                owner, is_cure = entry_owner(request_ids[n], groups)
                if is_cure:
                    cures = cures or [False] * len(found)
                    found[n], cures[n] = owner, True
    return EntryOwners(found, cures)


def entry_acks_ms(entries: list[dict], groups: dict[str, WriteGroup],
                  owners: EntryOwners | None = None) -> list[int | None]:
    """For each entry (in seq order), a moment by which it was surely committed, or None.

    Only an acknowledgement that vouches for this very entry counts: one whose receipt names its
    seq, or one without a seq when the request made no other entry on that account. A duplicate
    or a rewrite by a later retry may have been committed long after the first acknowledgement.
    A cure was committed with its repay. `owners`: the entries' `entry_owners`, when already
    known. The entries may be of many accounts: each account's are judged on their own."""
    if owners is None:
        owners = entry_owners(entries, groups)
    made: dict[tuple, int] | None = None  # entries per account and write, counted when needed
    repay_ack_ms: dict[tuple, int | None] = {}  # by account and repay
    out: list[int | None] = []
    append = out.append
    for entry, group, is_cure in zip(entries, owners.groups, owners.is_cure()):
        if group is None:
            append(None)
            continue
        if is_cure:
            append(repay_ack_ms.get((entry.get("account_id"), group.request_id)))
            continue
        attempts = group.attempts
        if len(attempts) == 1:  # most writes: their one attempt, without the loop below
            op = attempts[0]
            ack_ms = op.complete_ms if op.outcome == "ok" else None
            if ack_ms is not None:
                response = op.response
                named = response.get("seq") if isinstance(response, dict) else None
                if named is None:  # no seq in the receipt: it vouches only for an only entry
                    if made is None:
                        made = _entries_made(entries, owners)
                    if made[(entry.get("account_id"), group.request_id)] != 1:
                        ack_ms = None
                elif named != entry["seq"]:
                    ack_ms = None
        else:
            ack_ms = None
            for op in attempts:
                if op.outcome != "ok" or op.complete_ms is None:
                    continue
                response = op.response
                named = response.get("seq") if isinstance(response, dict) else None
                if named is None:
                    if made is None:
                        made = _entries_made(entries, owners)
                    if made[(entry.get("account_id"), group.request_id)] != 1:
                        continue
                elif named != entry["seq"]:
                    continue
                if ack_ms is None or op.complete_ms < ack_ms:
                    ack_ms = op.complete_ms
        if group.kind == "repay":
            repay_ack_ms[(entry.get("account_id"), group.request_id)] = ack_ms
        append(ack_ms)
    assert len(out) == len(entries)
    return out


def _entries_made(entries: list[dict], owners: EntryOwners) -> dict[tuple, int]:
    made: dict[tuple, int] = {}
    for entry, group, is_cure in zip(entries, owners.groups, owners.is_cure()):
        if group is not None and not is_cure:
            key = (entry.get("account_id"), group.request_id)
            made[key] = made.get(key, 0) + 1
    return made
