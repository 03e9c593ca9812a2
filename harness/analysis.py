"""The analysis of one run: what every checker needs from (history, ledger), built once.

Checkers used to rebuild the write groups, the clean ledger, the per-account views and the fault
windows each for itself; now `analyse` builds them once and every checker reads them. Pure: no
I/O, no clock, inputs never mutated.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from . import oracle
from .entries import account_timeline, clean_ledger, entries_by_account
from .findings import Finding, make
from .history import FAULT_FS, FaultIndex, FaultWindow, History, Op
from .write_groups import WriteGroup, entry_acks_ms, entry_owner, write_groups


@dataclass(frozen=True)
class CheckConfig:
    # After the last write to an account its display must equal the oracle within this.
    sla_ms: int = 1000
    # A stale display whose lag exceeds its allowance by at most this is `minor`, not `major`.
    stale_grace_ms: int = 0

    def __post_init__(self) -> None:
        assert self.sla_ms > 0 and self.stale_grace_ms >= 0, self


class HistoryViews:
    """What to hand `findings.make` for a finding on an account: a history holding only the ops
    its history slice can keep (the account's and the fault ops, in order). The slice comes out
    the same, but costs the account's ops instead of the whole run's, so a checker reporting
    thousands of findings stays linear."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._by_account: dict[str, list[Op]] | None = None
        self._fault_ops: list[Op] = []
        self._views: dict[str, History] = {}

    def __call__(self, account_id: str | None) -> History:
        if account_id is None:
            return self.history
        if self._by_account is None:
            self._by_account = {}
            for op in self.history.ops:
                if op.f in FAULT_FS:
                    self._fault_ops.append(op)
                elif op.account_id is not None:
                    self._by_account.setdefault(op.account_id, []).append(op)
        view = self._views.get(account_id)
        if view is None:
            ops = heapq.merge(self._by_account.get(account_id, []), self._fault_ops,
                              key=lambda op: op.index)
            view = History(meta=self.history.meta, ops=list(ops))
            self._views[account_id] = view
        return view


class AccountIndex:
    """One account's clean ledger entries with the moments that bound when each was committed,
    indexed for the questions checkers ask of them."""

    def __init__(self, entries: list[dict], groups: dict[str, WriteGroup]) -> None:
        self.entries = entries
        self.seqs = [e["seq"] for e in entries]
        self.timeline = account_timeline(entries)
        self._timeline_seqs = [seq for seq, _ in self.timeline]
        self._owners = [entry_owner(e["request_id"], groups) for e in entries]
        self.acks_ms = entry_acks_ms(entries, groups, self._owners)
        acks = sorted((ack_ms, seq) for seq, ack_ms in zip(self.seqs, self.acks_ms)
                      if ack_ms is not None)
        # ack_ms ascending; ack_max_seq[n] the largest seq acknowledged by ack_ms[n].
        self.ack_ms = [t for t, _ in acks]
        self.ack_max_seq = list(itertools.accumulate((seq for _, seq in acks), max))
        # The last moment a write to this account was in flight (set by `analyse`).
        self.last_write_ms = 0
        assert len(self.seqs) == len(self.acks_ms) == len(self.entries)
        assert len(self.timeline) <= len(self.entries)

    @cached_property
    def _sends(self) -> tuple[list[int], list[int]]:
        # sent_ms ascending first-send times; sent_min_seq[n] the smallest seq sent at or after.
        sends = sorted((group.first_invoke_ms, seq)
                       for seq, (group, _) in zip(self.seqs, self._owners) if group is not None)
        sent_min_seq = list(itertools.accumulate((seq for _, seq in reversed(sends)), min))
        sent_min_seq.reverse()
        return [t for t, _ in sends], sent_min_seq

    @property
    def sent_ms(self) -> list[int]:
        """When each entry's request was first sent, ascending."""
        return self._sends[0]

    @property
    def sent_min_seq(self) -> list[int]:
        """sent_min_seq[n]: the smallest seq among entries first sent at or after sent_ms[n]."""
        return self._sends[1]

    def state_at(self, seq: int) -> oracle.State | None:
        """`oracle.state_at` over this account's timeline, by bisection in C."""
        n = bisect.bisect_right(self._timeline_seqs, seq)
        return self.timeline[n - 1][1] if n else None

    def state_known_at(self, t_ms: int) -> oracle.State | None:
        """The state after every entry acknowledged before `t_ms`."""
        n = bisect.bisect_left(self.ack_ms, t_ms)
        return self.state_at(self.ack_max_seq[n - 1]) if n else None

    @cached_property
    def committed_by_ms(self) -> list[float]:
        """Earliest acknowledgement among entries n.. : by then entry n was surely committed."""
        out: list[float] = [math.inf] * len(self.entries)
        soonest: float = math.inf
        for n in range(len(self.entries) - 1, -1, -1):
            if self.acks_ms[n] is not None:
                soonest = min(soonest, self.acks_ms[n])
            out[n] = soonest
        return out

    @cached_property
    def view_seq(self) -> dict[tuple, int]:
        """The latest seq of each display view (keyed by its values in DISPLAY_FIELDS order)."""
        return {tuple(state.view()[f] for f in oracle.DISPLAY_FIELDS): seq
                for seq, state in self.timeline}


@dataclass
class Analysis:
    """(history, ledger) digested once for every checker and statistic."""

    history: History
    ledger: list
    config: CheckConfig
    groups: dict[str, WriteGroup]
    entries: list[dict]                       # the clean ledger, in seq order
    problems: list[tuple[str, str, Any]]      # (code, words, entry) for each entry left out
    accounts: dict[str, AccountIndex]         # by account, for accounts with clean entries
    windows: list[FaultWindow]
    faults: FaultIndex
    views: HistoryViews
    touched: set[str]                         # accounts any op of this history named
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def account(self, account_id: str) -> AccountIndex:
        """The account's index; an empty one for an account with no clean entry."""
        found = self.accounts.get(account_id)
        return found if found is not None else AccountIndex([], self.groups)

    def finding(self, **fields: Any) -> Finding:
        """`findings.make` over the finding's account view of the history."""
        assert fields.get("account_id") is None or fields["account_id"] in self.touched \
            or fields["account_id"] in self.accounts or any(
                isinstance(e, dict) and e.get("account_id") == fields["account_id"]
                for _, _, e in self.problems), f"unknown account {fields.get('account_id')!r}"
        return make(self.views(fields.get("account_id")), **fields)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per analysis: for a result both a checker and a statistic use."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def analyse(history: History, ledger: list, config: CheckConfig | None = None) -> Analysis:
    config = config or CheckConfig()
    groups = write_groups(history)
    entries, problems = clean_ledger(ledger)
    accounts = {account_id: AccountIndex(account_entries, groups)
                for account_id, account_entries in entries_by_account(entries).items()}
    for group in groups.values():
        account = accounts.get(str(group.account_id))
        if account is not None:
            account.last_write_ms = max(account.last_write_ms, group.last_ms())
    windows = history.fault_windows()
    touched = {op.account_id for op in history.ops if op.account_id is not None}
    assert sum(len(a.entries) for a in accounts.values()) == len(entries)
    return Analysis(history, ledger, config, groups, entries, problems, accounts, windows,
                    FaultIndex(windows), HistoryViews(history), touched)
