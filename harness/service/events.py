"""The event path from the ledger to the read model, and the faults that act on it.

Each committed entry becomes an `Event` carrying the seq of the account's previous entry, so the
projector can tell a gap from a duplicate. Delivery times come from the injected clock; every
random choice comes from the injected `random.Random`.
"""

from __future__ import annotations

import heapq
import random
from typing import NamedTuple

from .chaos import FaultSet

QUEUE_MAX = 200_000  # beyond this an event is dropped; anti-entropy repairs what it carried
# Events held for reordering are released after this even if the window never fills, so a
# reorder fault on a quiet service delays events a little instead of holding them forever.
REORDER_HOLD_MS = 50


class Event(NamedTuple):
    seq: int
    account_id: str
    prev_seq: int | None  # the account's entry before this one; None for `open`
    entry: dict


class EventPipe:
    def __init__(self, faults: FaultSet, rng: random.Random, lag_ms: int) -> None:
        assert lag_ms >= 0
        self.faults = faults
        self.rng = rng
        self.lag_ms = lag_ms
        self._queue: list[tuple[int, int, Event]] = []  # (deliver_at_ms, tiebreak, event)
        self._counter = 0
        self._held: list[Event] = []  # waiting for a reorder window to fill
        self._held_since_ms = 0
        self.published = self.dropped = self.duplicated = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._held)

    def publish(self, event: Event, now_ms: int) -> None:
        self.published += 1
        faults = self.faults
        if not faults.active:  # the common case, kept short: no dice, no reorder buffer
            self._enqueue(event, now_ms)
            return
        if faults.drop_p and self.rng.random() < faults.drop_p:
            self.dropped += 1
            return
        copies = 1
        if faults.duplicate_p and self.rng.random() < faults.duplicate_p:
            self.duplicated += 1
            copies = 2
        for _ in range(copies):
            if faults.window > 1:
                if not self._held:
                    self._held_since_ms = now_ms
                self._held.append(event)
                if len(self._held) >= faults.window:
                    self._release_held(now_ms)
            else:
                self._enqueue(event, now_ms)

    def due(self, now_ms: int) -> list[Event]:
        """Events whose delivery time has come, in delivery order; none while sync is paused."""
        if self._held and (self.faults.window <= 1 or now_ms - self._held_since_ms >= REORDER_HOLD_MS):
            self._release_held(now_ms)
        if self.faults.paused:
            return []
        out = []
        queue = self._queue
        while queue and queue[0][0] <= now_ms:
            out.append(heapq.heappop(queue)[2])
        return out

    def next_due_ms(self) -> int | None:
        candidates = []
        if self._queue and not self.faults.paused:
            candidates.append(self._queue[0][0])
        if self._held:
            candidates.append(self._held_since_ms + REORDER_HOLD_MS)
        return min(candidates, default=None)

    def _release_held(self, now_ms: int) -> None:
        held, self._held = self._held, []
        self.rng.shuffle(held)
        for event in held:
            self._enqueue(event, now_ms)

    def _enqueue(self, event: Event, now_ms: int) -> None:
        if len(self._queue) >= QUEUE_MAX:
            self.dropped += 1
            return
        self._counter += 1
        deliver_at_ms = now_ms + self.lag_ms + self.faults.delay_ms
        heapq.heappush(self._queue, (deliver_at_ms, self._counter, event))
