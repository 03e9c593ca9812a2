"""The projector: turns ledger events into the display (the read model the app shows).

The correct projector applies an event only when it is the next one for its account (its
`prev_seq` is the row's `as_of_seq`), ignores duplicates, holds early events until the gap
fills, and runs anti-entropy: an account whose display is behind the ledger for longer than the
pipeline can explain is rebuilt from the ledger. That is what lets it survive every fault kind
with an honest `as_of_seq`. The seeded bugs are small deviations of exactly this code.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, NamedTuple

from .. import oracle
from ..oracle import State, step
from .events import Event

PENDING_MAX = 1000  # early events held per account; past this we drop them and rebuild instead
# Commit times remembered per account for entries not yet shown; past this the oldest ones
# still date the lateness, which only makes a repair come sooner.
UNAPPLIED_MAX = 10_000
ANTI_ENTROPY_EVERY_MS = 100
REPAIR_GRACE_MS = 200  # how long past its expected arrival an event may be late before repair
SNAPSHOT_EVERY_MS = 2000
REPAIR_NOW_MS = -(10**12)  # a "since" that makes an account due at the next anti-entropy pass
ZERO = State(0, 0, "active")
_DUE_NOW = (REPAIR_NOW_MS, 0)
_new = tuple.__new__  # a Row without the NamedTuple's Python-level __new__: one per event


class Row(NamedTuple):
    state: State
    as_of_seq: int | None


class Projector:
    def __init__(self, tail: dict[str, int], read_account: Callable[[str, int], list[dict]],
                 bugs: frozenset[str] = frozenset()) -> None:
        # `tail` is the ledger's last seq per account, owned by the core; read-only here.
        self.tail = tail
        self.read_account = read_account
        self.bugs = bugs
        self.rows: dict[str, Row] = {}
        self.pending: dict[str, dict[int, Event]] = {}
        # Accounts whose display is behind the ledger: since when, and the first seq missing.
        self.behind: dict[str, tuple[int, int]] = {}
        # (seq, commit_ms) of each account's entries not yet shown, oldest first: lateness is
        # measured from the commit of the first missing entry, never from the last event seen.
        self.unapplied: dict[str, deque[tuple[int, int]]] = {}
        self.snapshot: dict[str, Row] = {}
        self.next_snapshot_ms = SNAPSHOT_EVERY_MS
        self.next_anti_entropy_ms = ANTI_ENTROPY_EVERY_MS
        self.applied = self.repairs = 0

    # -- the write side tells us what the ledger has ------------------------------------------
    def note_commit(self, account_id: str, seq: int, now_ms: int) -> None:
        waiting = self.unapplied.get(account_id)
        if waiting is None:  # not setdefault: that would build a deque on every commit
            waiting = self.unapplied[account_id] = deque()
        if len(waiting) < UNAPPLIED_MAX:
            waiting.append((seq, now_ms))
        if account_id not in self.behind:
            self.behind[account_id] = (now_ms, seq)

    # -- events ----------------------------------------------------------------------------
    def deliver(self, event: Event, now_ms: int) -> None:
        bugs = self.bugs
        if bugs and "reorder_blind" in bugs:
            return self._deliver_blind(event)
        seq, account_id, prev_seq, _, _ = event
        row = self.rows.get(account_id)
        as_of = None if row is None else row[1]
        if as_of is not None and seq <= as_of:
            if "apply_duplicates" in bugs:
                self.rows[account_id] = Row(self._step(row.state, event), as_of)
            return
        if prev_seq == as_of and (row is not None or prev_seq is None):
            self._advance(account_id, row, event)
            if self.pending:
                self._drain(account_id)
            return
        held = self.pending.setdefault(account_id, {})
        if len(held) >= PENDING_MAX:
            held.clear()  # the rebuild will read the ledger anyway
        held[prev_seq] = event
        if account_id not in self.behind:
            self.behind[account_id] = (now_ms, seq)

    def _deliver_blind(self, event: Event) -> None:
        # The bug: trust arrival order. Anything newer than the watermark is applied on top and
        # moves the watermark, so a late older event is skipped although the watermark covers it.
        row = self.rows.get(event.account_id)
        if row is None:
            if event.kind == "open":
                self.rows[event.account_id] = Row(self._step(None, event), event.seq)
            return
        if row.as_of_seq is None or event.seq > row.as_of_seq:
            self.rows[event.account_id] = Row(self._step(row.state, event), event.seq)
            self.applied += 1
            self._settle(event.account_id, event.seq)

    def _advance(self, account_id: str, row: Row | None, event: Event) -> None:
        seq = event.seq
        state = None if row is None else row[0]
        if self.bugs:
            state = self._change(state, event.kind, event.value)
        else:
            state = step(state, event.kind, event.value)
        self.rows[account_id] = _new(Row, (state, seq))
        self.applied += 1
        self._settle(account_id, seq)

    def _drain(self, account_id: str) -> None:
        held = self.pending.get(account_id)
        for _ in range(PENDING_MAX):
            if not held:
                break
            row = self.rows[account_id]
            event = held.pop(row.as_of_seq, None)
            if event is None:
                break
            self._advance(account_id, row, event)
        if held is not None and not held:
            del self.pending[account_id]

    def _settle(self, account_id: str, as_of_seq: int) -> None:
        """The row now shows `as_of_seq`: the account is no longer behind, or is behind from
        a later first missing entry."""
        tail_seq = self.tail.get(account_id)
        waiting = self.unapplied.get(account_id)
        if tail_seq is not None and as_of_seq >= tail_seq:
            self.behind.pop(account_id, None)
            if waiting is not None:  # dropped, not cleared: an idle account keeps no deque
                del self.unapplied[account_id]
            return
        if not waiting:
            return
        for _ in range(len(waiting)):  # bounded: each turn drops one
            if waiting[0][0] > as_of_seq:
                break
            waiting.popleft()
        if waiting:
            behind = self.behind
            if behind.get(account_id, _DUE_NOW)[0] != REPAIR_NOW_MS:
                # Late means: the first entry still missing was committed long enough ago.
                # After a reset the remembered commits no longer say what is missing, so its
                # mark stays.
                seq, commit_ms = waiting[0]
                behind[account_id] = (commit_ms, seq)

    def _step(self, state: State | None, event: Event) -> State:
        return self._change(state, event.kind, event.value)

    def _apply(self, state: State | None, entry: dict) -> State:
        kind = entry["type"]
        return self._change(state, kind, entry[oracle.VALUE_FIELD[kind]])

    def _change(self, state: State | None, kind: str, value) -> State:
        if ("limit_cut_hidden" in self.bugs and state is not None and kind == "limit"
                and value < state.credit_line):
            return state
        return step(state, kind, value)

    # -- anti-entropy and maintenance --------------------------------------------------------
    def anti_entropy(self, now_ms: int, late_ms: int) -> int:
        """Rebuild every account that has been behind for more than `late_ms`."""
        if "no_gap_repair" in self.bugs:
            return 0
        stale = [a for a, (since_ms, _) in self.behind.items() if now_ms - since_ms >= late_ms]
        for account_id in stale:
            self.rebuild(account_id)
        return len(stale)

    def rebuild(self, account_id: str) -> None:
        """Bring one account up to the ledger: from its row when the row is honest (only the
        missing tail is read), from the first entry when there is no trustworthy row."""
        row = self.rows.get(account_id)
        start = row if row is not None and row.as_of_seq is not None else None
        entries = self.read_account(account_id, start.as_of_seq if start else 0)
        self.pending.pop(account_id, None)
        self.behind.pop(account_id, None)
        self.unapplied.pop(account_id, None)
        if not entries:
            return
        state = start.state if start else None
        for entry in entries:
            state = self._apply(state, entry)
        self.rows[account_id] = Row(state, entries[-1]["seq"])
        self.repairs += 1

    def maybe_snapshot(self, now_ms: int) -> None:
        if now_ms >= self.next_snapshot_ms:
            self.snapshot = dict(self.rows)  # rows are immutable tuples: a shallow copy is a copy
            self.next_snapshot_ms = now_ms + SNAPSHOT_EVERY_MS

    def reset(self, mode: str, now_ms: int) -> None:
        """A botched maintenance: the read model is wiped or rolled back to the last snapshot."""
        assert mode in ("clear", "snapshot")
        accounts = list(self.tail)
        current = self.rows
        self.pending.clear()
        if mode == "clear" and "reset_shows_zero" in self.bugs:
            # The bug: an empty row renders as a zero limit, and nothing marks it for rebuild.
            self.rows = {a: Row(ZERO, None) for a in accounts}
            self.behind.clear()
            return
        if mode == "clear":
            self.rows = {}
        elif "snapshot_keeps_watermark" in self.bugs:
            # The bug: old numbers under today's watermark, so the repair job sees nothing to do.
            self.rows = {a: Row(self.snapshot[a].state, current[a].as_of_seq)
                         for a in self.snapshot if a in current}
            self.behind = {a: (now_ms, 0) for a in accounts if a not in self.rows}
            return
        else:
            self.rows = dict(self.snapshot)
        # Every account must be checked against the ledger; due at the next anti-entropy pass.
        self.behind = {a: (REPAIR_NOW_MS, 0) for a in accounts}

    # -- reads -----------------------------------------------------------------------------
    def display(self, account_id: str) -> dict | None:
        """The display for an account, or None while it cannot be trusted (503)."""
        row = self.rows.get(account_id)
        if row is None:
            return None
        view = row.state.view()
        if "negative_available" in self.bugs and row.state.status == "active":
            view["available"] = row.state.credit_line - row.state.outstanding
            view["usable"] = view["available"] > 0
        view["account_id"] = account_id
        view["as_of_seq"] = row.as_of_seq
        return view

    def applied_seq(self, ledger_seq: int) -> int:
        """The largest seq such that every entry up to it is reflected in the display."""
        if not self.behind:
            return ledger_seq
        return min(seq for _, seq in self.behind.values()) - 1
