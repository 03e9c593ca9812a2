"""The projector: turns ledger events into the display (the read model the app shows).

The correct projector applies an event only when it is the next one for its account (its
`prev_seq` is the row's `as_of_seq`), ignores duplicates, holds early events until the gap
fills, and runs anti-entropy: an account whose display is behind the ledger for longer than the
pipeline can explain is rebuilt from the ledger. That is what lets it survive every fault kind
with an honest `as_of_seq`. The seeded bugs (bugs.py) replace its hooks: `deliver`, `change`,
`on_old_event`, `anti_entropy`, `reset` and `display`.

It learns what the ledger holds only from `note_commit` (and `note_recovered` at start), and
keeps its own schedule of repairs and snapshots: the core tells it the time and the faults.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, NamedTuple

from ..oracle import VALUE_FIELD, State, step
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
    def __init__(self, read_account: Callable[[str, int], list[dict]]) -> None:
        self.read_account = read_account
        # The ledger's last seq per account, as `note_commit` told it.
        self.tail: dict[str, int] = {}
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
        # Hooks a seeded bug may replace (bugs.py); these are the correct behaviours.
        self.change: Callable[[State | None, str, int | str], State] = step

    # -- the write side tells us what the ledger has ------------------------------------------
    def note_commit(self, account_id: str, seq: int, now_ms: int) -> None:
        assert seq > self.tail.get(account_id, 0), "the ledger's seq only grows"
        self.tail[account_id] = seq
        waiting = self.unapplied.get(account_id)
        if waiting is None:  # not setdefault: that would build a deque on every commit
            waiting = self.unapplied[account_id] = deque()
        if len(waiting) < UNAPPLIED_MAX:
            waiting.append((seq, now_ms))
        if account_id not in self.behind:
            self.behind[account_id] = (now_ms, seq)

    def note_recovered(self, account_id: str, last_seq: int) -> None:
        """An account the ledger held when the service started: its display must be rebuilt."""
        self.tail[account_id] = last_seq
        self.behind[account_id] = _DUE_NOW

    # -- time ------------------------------------------------------------------------------
    def tick(self, now_ms: int, late_ms: int, paused: bool) -> None:
        """The periodic jobs: anti-entropy (unless sync is paused: nothing reaches the read
        model then) and snapshots."""
        if now_ms >= self.next_anti_entropy_ms:
            self.next_anti_entropy_ms = now_ms + ANTI_ENTROPY_EVERY_MS
            if not paused:
                self.anti_entropy(now_ms, late_ms)
        if now_ms >= self.next_snapshot_ms:
            self.snapshot = dict(self.rows)  # rows are immutable tuples: a shallow copy is a copy
            self.next_snapshot_ms = now_ms + SNAPSHOT_EVERY_MS

    def next_wakeup_ms(self) -> int:
        return min(self.next_anti_entropy_ms, self.next_snapshot_ms)

    # -- events ----------------------------------------------------------------------------
    def deliver(self, event: Event, now_ms: int) -> None:
        seq, account_id, prev_seq, _, _ = event
        row = self.rows.get(account_id)
        as_of = None if row is None else row[1]
        if as_of is not None and seq <= as_of:
            self.on_old_event(account_id, row, event)
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

    def on_old_event(self, account_id: str, row: Row, event: Event) -> None:
        """A duplicate, or an event the row already reflects: applied at most once, so ignored."""

    def _advance(self, account_id: str, row: Row | None, event: Event) -> None:
        seq = event.seq
        assert row is None or row[1] is None or seq > row[1], "an event is applied at most once"
        state = self.change(None if row is None else row[0], event.kind, event.value)
        self.rows[account_id] = _new(Row, (state, seq))
        self.applied += 1
        self.settle(account_id, seq)

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

    def settle(self, account_id: str, as_of_seq: int) -> None:
        """The row now shows `as_of_seq`: the account is no longer behind, or is behind from
        a later first missing entry."""
        tail_seq = self.tail.get(account_id)
        assert tail_seq is None or as_of_seq <= tail_seq, "a display ahead of its ledger"
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

    # -- anti-entropy and maintenance --------------------------------------------------------
    def anti_entropy(self, now_ms: int, late_ms: int) -> int:
        """Rebuild every account that has been behind for more than `late_ms`."""
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
        assert all(a["seq"] < b["seq"] for a, b in zip(entries, entries[1:]))
        state = start.state if start else None
        change = self.change
        for entry in entries:
            kind = entry["type"]
            state = change(state, kind, entry[VALUE_FIELD[kind]])
        assert start is None or entries[0]["seq"] > start.as_of_seq
        self.rows[account_id] = Row(state, entries[-1]["seq"])
        self.repairs += 1

    def reset(self, mode: str, now_ms: int) -> None:
        """A botched maintenance: the read model is wiped or rolled back to the last snapshot."""
        assert mode in ("clear", "snapshot")
        self.pending.clear()
        self.rows = {} if mode == "clear" else dict(self.snapshot)
        # Every account must be checked against the ledger; due at the next anti-entropy pass.
        self.behind = {a: _DUE_NOW for a in self.tail}

    # -- reads -----------------------------------------------------------------------------
    def display(self, account_id: str) -> dict | None:
        """The display for an account, or None while it cannot be trusted (503)."""
        row = self.rows.get(account_id)
        if row is None:
            return None
        assert row.as_of_seq is None or row.as_of_seq <= self.tail[account_id], \
            "a display ahead of its ledger"
        view = row.state.view()
        view["account_id"] = account_id
        view["as_of_seq"] = row.as_of_seq
        return view

    def applied_seq(self, ledger_seq: int) -> int:
        """The largest seq such that every entry up to it is reflected in the display."""
        if not self.behind:
            return ledger_seq
        return min(seq for _, seq in self.behind.values()) - 1
