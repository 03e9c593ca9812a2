"""The event path from the ledger to the read model, and the faults that act on it.

Each committed entry becomes an `Event` carrying the seq of the account's previous entry, so the
projector can tell a gap from a duplicate. Delivery times come from the injected clock; every
random choice comes from the injected `random.Random`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from typing import NamedTuple

from .chaos import FaultSet

QUEUE_MAX = 200_000  # beyond this an event is dropped; anti-entropy repairs what it carried
# Events held for reordering are released after this even if the window never fills, so a
# reorder fault on a quiet service delays events a little instead of holding them forever.
REORDER_HOLD_MS = 50


class Event(NamedTuple):
    # The entry's type and value rather than the entry: delivery reads two fields instead of
    # looking them up in a dict, once per event.
    seq: int
    account_id: str
    prev_seq: int | None  # the account's entry before this one; None for `open`
    kind: str  # the entry's type
    value: int | str  # the entry's oracle.VALUE_FIELD: what `oracle.step` needs


class EventPipe:
    def __init__(self, faults: FaultSet, rng: random.Random, lag_ms: int) -> None:
        assert lag_ms >= 0
        self.faults = faults
        self.rng = rng
        self.lag_ms = lag_ms
        # (deliver_at_ms, tiebreak, event). Without a change of delay every event is due no
        # earlier than the one before it, so a FIFO holds them in order at O(1); only an event
        # due before the FIFO's last (a delay was lifted) goes to the heap. `due` merges the two.
        self._fifo: deque[tuple[int, int, Event]] = deque()
        self._heap: list[tuple[int, int, Event]] = []
        self._counter = 0
        self._held: list[Event] = []  # waiting for a reorder window to fill
        self._held_since_ms = 0
        self.published = self.dropped = self.duplicated = 0

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap) + len(self._held)

    def publish(self, event: Event, now_ms: int) -> None:
        assert event.prev_seq is None or event.prev_seq < event.seq, event
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

    def redeliver(self, event: Event, at_ms: int) -> None:
        """Deliver `event` (again) at `at_ms`, whatever the faults: an at-least-once bus's
        redelivery (a seeded bug uses it)."""
        if len(self._fifo) + len(self._heap) >= QUEUE_MAX:
            self.dropped += 1
            return
        self._counter += 1
        heapq.heappush(self._heap, (at_ms, self._counter, event))

    def due(self, now_ms: int) -> list[Event]:
        """Events whose delivery time has come, in delivery order; none while sync is paused."""
        if self._held and (self.faults.window <= 1 or now_ms - self._held_since_ms >= REORDER_HOLD_MS):
            self._release_held(now_ms)
        if self.faults.paused:
            return []
        fifo, heap = self._fifo, self._heap
        if not heap:  # the common case: one ordered queue
            out = []
            while fifo and fifo[0][0] <= now_ms:
                out.append(fifo.popleft()[2])
            return out
        out = []
        for _ in range(len(fifo) + len(heap)):
            # Earliest (deliver_at_ms, tiebreak) first, from whichever queue holds it.
            if fifo and (not heap or fifo[0] < heap[0]):
                if fifo[0][0] > now_ms:
                    break
                out.append(fifo.popleft()[2])
            elif heap and heap[0][0] <= now_ms:
                out.append(heapq.heappop(heap)[2])
            else:
                break
        return out

    def next_due_ms(self) -> int | None:
        candidates = []
        if not self.faults.paused:
            if self._fifo:
                candidates.append(self._fifo[0][0])
            if self._heap:
                candidates.append(self._heap[0][0])
        if self._held:
            candidates.append(self._held_since_ms + REORDER_HOLD_MS)
        return min(candidates, default=None)

    def _release_held(self, now_ms: int) -> None:
        held, self._held = self._held, []
        self.rng.shuffle(held)
        for event in held:
            self._enqueue(event, now_ms)

    def _enqueue(self, event: Event, now_ms: int) -> None:
        fifo = self._fifo
        if len(fifo) + len(self._heap) >= QUEUE_MAX:
            self.dropped += 1
            return
        self._counter += 1
        item = (now_ms + self.lag_ms + self.faults.delay_ms, self._counter, event)
        if not fifo or fifo[-1][0] <= item[0]:
            fifo.append(item)
        else:
            heapq.heappush(self._heap, item)
