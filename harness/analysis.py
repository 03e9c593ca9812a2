"""The analysis of one run: what every checker needs from (history, ledger), built once.

Checkers used to rebuild the write groups, the clean ledger, the per-account views and the fault
windows each for itself; now `analyse` builds them once and every checker reads them. Pure: no
I/O, no clock, inputs never mutated.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import operator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from . import oracle
from .entries import account_timeline, account_timelines, clean_ledger
from .findings import SLICE_OPS_MAX, Finding, make
from .history import FAULT_FS, FaultIndex, FaultWindow, History, Op
from .write_groups import EntryOwners, WriteGroup, entry_acks_ms, entry_owners, write_groups

_SEQ = operator.itemgetter("seq")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_FIRST_INVOKE_MS = operator.attrgetter("first_invoke_ms")


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
    its history slice can keep (the account's and the fault ops, in order; of those, when they
    are in order of invocation, the last `SLICE_OPS_MAX` invoked by the finding's first moment,
    found by bisection). The slice comes out the same, but costs a few ops instead of the whole
    run's, so a checker reporting thousands of findings stays fast."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._by_account: dict[str, list[Op]] | None = None
        self._fault_ops: list[Op] = []
        # By account: its view, and its ops' invocation times when they ascend (else None).
        self._views: dict[str, tuple[History, list[int] | None]] = {}

    def __call__(self, account_id: str | None) -> History:
        """The account's view: its ops and the fault ops."""
        return self._view(account_id)[0]

    def for_finding(self, account_id: str | None, until_ms: int | None) -> History:
        """The account's view cut to what the slice of a finding first seen at `until_ms`
        (None: at the end) keeps."""
        view, times = self._view(account_id)
        if times is None:  # ops out of order of invocation (an HTTP run's workers): all of them
            return view
        end = len(times) if until_ms is None else bisect.bisect_right(times, until_ms)
        return History(meta=view.meta, ops=view.ops[max(0, end - SLICE_OPS_MAX):end])

    def _view(self, account_id: str | None) -> tuple[History, list[int] | None]:
        if account_id is None:
            return self.history, None
        if self._by_account is None:
            self._by_account = {}
            for op in self.history.ops:
                if op.f in FAULT_FS:
                    self._fault_ops.append(op)
                elif op.account_id is not None:
                    self._by_account.setdefault(op.account_id, []).append(op)
        found = self._views.get(account_id)
        if found is None:
            ops = list(heapq.merge(self._by_account.get(account_id, []), self._fault_ops,
                                   key=lambda op: op.index))
            times = [op.invoke_ms for op in ops]
            ascending = all(a <= b for a, b in zip(times, times[1:]))
            found = self._views[account_id] = (History(meta=self.history.meta, ops=ops),
                                               times if ascending else None)
        return found


class AccountIndex:
    """One account's clean ledger entries with the moments that bound when each was committed,
    indexed for the questions checkers ask of them. Each index is built on first use: a process
    running only some checkers and statistics builds only what they ask."""

    def __init__(self, entries: list[dict], groups: dict[str, WriteGroup],
                 owners: EntryOwners | None = None, acks_ms: list[int | None] | None = None,
                 timelines: Callable[[], dict[str, list]] | None = None) -> None:
        self.entries = entries
        self.seqs = list(map(_SEQ, entries))
        self._groups = groups
        self._timelines = timelines  # every account's timeline, found in one pass, once
        # What `analyse` already found for these entries, else found on first use.
        if owners is not None:
            assert len(owners.groups) == len(entries)
            self._owners = owners
        if acks_ms is not None:
            assert len(acks_ms) == len(entries)
            self.acks_ms = acks_ms

    @cached_property
    def timeline(self) -> list[tuple[int, oracle.State]]:
        """(seq, state after it), from the account's open on (`entries.account_timeline`)."""
        if self._timelines is None or not self.entries:
            timeline = account_timeline(self.entries)
        else:
            timeline = self._timelines().get(self.entries[0]["account_id"], [])
        assert len(timeline) <= len(self.entries)
        return timeline

    @cached_property
    def _timeline_seqs(self) -> list[int]:
        return list(map(_FIRST, self.timeline))

    @cached_property
    def _owners(self) -> EntryOwners:
        return entry_owners(self.entries, self._groups)

    @cached_property
    def acks_ms(self) -> list[int | None]:
        """For each entry, a moment by which it was surely committed (`entry_acks_ms`)."""
        acks_ms = entry_acks_ms(self.entries, self._groups, self._owners)
        assert len(acks_ms) == len(self.entries)
        return acks_ms

    @cached_property
    def _acks(self) -> tuple[list[int], list[int]]:
        # ack_ms ascending; ack_max_seq[n] the largest seq acknowledged by ack_ms[n].
        pairs = zip(self.acks_ms, self.seqs)
        acks = sorted(pairs if None not in self.acks_ms
                      else [pair for pair in pairs if pair[0] is not None])
        return list(map(_FIRST, acks)), list(itertools.accumulate(map(_SECOND, acks), max))

    @cached_property
    def ack_ms(self) -> list[int]:
        """Every acknowledgement that vouches for an entry, ascending."""
        return self._acks[0]

    @cached_property
    def ack_max_seq(self) -> list[int]:
        """ack_max_seq[n]: the largest seq acknowledged by ack_ms[n]."""
        return self._acks[1]

    @cached_property
    def _sends(self) -> tuple[list[int], list[int]]:
        # sent_ms ascending first-send times; sent_min_seq[n] the smallest seq sent at or after.
        groups = self._owners.groups
        if not all(groups):  # (a write group is always true: `in` would call its __eq__)
            sends = sorted((group.first_invoke_ms, seq)
                           for seq, group in zip(self.seqs, groups) if group is not None)
        else:  # every entry's write is known (the usual ledger): the same, in C
            sends = sorted(zip(map(_FIRST_INVOKE_MS, groups), self.seqs))
        sent_min_seq = list(itertools.accumulate(map(_SECOND, reversed(sends)), min))
        sent_min_seq.reverse()
        return list(map(_FIRST, sends)), sent_min_seq

    @cached_property
    def sent_ms(self) -> list[int]:
        """When each entry's request was first sent, ascending."""
        return self._sends[0]

    @cached_property
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


class Analysis:
    """(history, ledger) digested once for every checker and statistic. Each part is built on
    first use, so a process that runs only some of them builds only what they read; `analyse`
    builds every part at once."""

    def __init__(self, history: History, ledger: list, config: CheckConfig | None = None) -> None:
        self.history = history
        self.ledger = ledger
        self.config = config or CheckConfig()
        self._memo: dict[str, Any] = {}

    @cached_property
    def groups(self) -> dict[str, WriteGroup]:
        return write_groups(self.history)

    @cached_property
    def _clean(self) -> tuple[list[dict], list[tuple[str, str, Any]]]:
        return clean_ledger(self.ledger)

    @property
    def entries(self) -> list[dict]:
        """The clean ledger, in seq order."""
        return self._clean[0]

    @property
    def problems(self) -> list[tuple[str, str, Any]]:
        """(code, words, entry) for each entry left out of the clean ledger."""
        return self._clean[1]

    @cached_property
    def accounts(self) -> dict[str, AccountIndex]:
        """By account, for accounts with clean entries."""
        groups, entries = self.groups, self.entries
        # Each entry's write and acknowledgement are found in one pass in ledger order, not
        # account by account: the ledger, its writes and their ops lie in memory in about that
        # order, and reading them so is twice as fast.
        owners = entry_owners(entries, groups)
        acks_ms = entry_acks_ms(entries, groups, owners)
        # Each account's columns: its entries, their writes, whether each is a cure, their acks.
        columns: dict[str, tuple[list, list, list, list]] = {}
        for entry, group, is_cure, ack_ms in zip(entries, owners.groups, owners.is_cure(),
                                                 acks_ms):
            found = columns.get(entry["account_id"])
            if found is None:
                found = columns[entry["account_id"]] = ([], [], [], [])
            found[0].append(entry)
            found[1].append(group)
            found[2].append(is_cure)
            found[3].append(ack_ms)
        # (A closure over the entries, not the analysis: no cycle keeps it alive.)
        timelines = functools.cache(lambda: account_timelines(entries))
        accounts = {account_id: AccountIndex(mine, groups, EntryOwners(
                        its_groups, cures if True in cures else None), its_acks_ms, timelines)
                    for account_id, (mine, its_groups, cures, its_acks_ms) in columns.items()}
        assert sum(len(a.entries) for a in accounts.values()) == len(entries)
        return accounts

    @cached_property
    def last_write_ms(self) -> dict[str, int]:
        """By account: the last moment a write to it was in flight."""
        out: dict[str, int] = {}
        for group in self.groups.values():
            attempts = group.attempts
            if len(attempts) == 1:  # most writes: `WriteGroup.last_ms` without a generator
                op = attempts[0]
                last_ms = max(op.invoke_ms, op.complete_ms or 0)
            else:
                last_ms = group.last_ms()
            account_id = str(group.account_id)
            if last_ms > out.get(account_id, 0):
                out[account_id] = last_ms
        return out

    @cached_property
    def windows(self) -> list[FaultWindow]:
        return self.history.fault_windows()

    @cached_property
    def faults(self) -> FaultIndex:
        return FaultIndex(self.windows)

    @cached_property
    def views(self) -> HistoryViews:
        return HistoryViews(self.history)

    @cached_property
    def touched(self) -> set[str]:
        """The accounts any op of this history named."""
        return {op.account_id for op in self.history.ops if op.account_id is not None}

    def build_common(self) -> "Analysis":
        """The parts nearly every checker and statistic reads, now: the write groups, the clean
        ledger, each account's acknowledgements, the fault windows."""
        for part in (self.groups, self._clean, self.accounts, self.faults):
            assert part is not None
        for account in self.accounts.values():
            assert account.acks_ms is not None
        return self

    def build(self) -> "Analysis":
        """Every part, now."""
        self.build_common()
        assert None not in (self.last_write_ms, self.views, self.touched)
        for account in self.accounts.values():
            assert account.timeline is not None and account.ack_ms is not None
        return self

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
        return make(self.views.for_finding(fields.get("account_id"), fields.get("first_seen_ms")),
                    **fields)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per analysis: for a result both a checker and a statistic use."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def analyse(history: History, ledger: list, config: CheckConfig | None = None) -> Analysis:
    """The analysis with every part built (any error in the input shows here, not later)."""
    return Analysis(history, ledger, config).build()
