"""The projector as a process of its own (`limit-harness serve --role projector`): events from
the bus, the ledger for what the bus lost, the read model in Redis.

No second set of projection rules: the worker builds a `LimitService` over the ledger and drives
its event pipe, projector and fault set exactly as the in-process service does (`advance`), with
gap repair, de-duplication, anti-entropy, snapshots and every seeded projector bug. What changes
is where things come from and go to:
- what the ledger holds, the in-process projector is told at each commit (`note_commit`); this
  one learns it from each bus event and from a poll of the ledger every LEDGER_POLL_MS, so an
  event the bus lost still makes its account late, and anti-entropy rebuilds it from the ledger;
- the rows the projector changed are rendered (`Projector.display`, the one rendering) and
  written to Redis after each step, with the watermark; a write refused because the display was
  wiped makes the worker rebuild it: a `clear` reset and a new epoch (redis_display.py);
- the chaos API's faults and maintenance resets arrive on the bus, in order with the events.
"""

from __future__ import annotations

import queue
import threading
import time

import orjson

from .bus import BusConsumer, Faults, Reset
from .core import LimitService, ServiceConfig
from .events import Event
from .redis_display import DisplayWriter
from .redis_link import log
from .storage import LedgerStore

LEDGER_POLL_MS = 100
LEDGER_PAGE = 5_000
LEDGER_PAGES_PER_POLL = 20  # a long backlog is read over several polls, not in one stall
CONTROL_POLL_MS = 200  # the faults' key: a fallback for a change the stream lost
IDLE_WRITE_MS = 50  # with nothing changed, the watermark is still written (and a wipe seen)
STEP_WAIT_MAX_MS = 20
# The bus is read on a thread of its own: Redis times a blocked read out only every 100 ms (its
# `hz`), far too coarse for the step's own timers, so the step waits on a queue instead.
READ_BLOCK_MS = 1000
READ_QUEUE_MAX = 16  # batches of up to bus.READ_COUNT events: the reader waits past this
RETRY_SLEEP_S = 0.2
ACKS_MAX = 100_000  # stream entries read and not yet acknowledged (acknowledged once written)
ERROR_LOG_EVERY_S = 1.0
SEEN_MAX = 100_000  # seqs seen past the contiguous mark; past this the next poll settles them


class TrackedRows(dict):
    """The projector's rows, noting the accounts changed since the last write to Redis."""

    __slots__ = ("changed",)

    def __init__(self, rows=()) -> None:
        super().__init__(rows)
        self.changed: set[str] = set(self)

    def __setitem__(self, account_id: str, row) -> None:
        self.changed.add(account_id)
        dict.__setitem__(self, account_id, row)


class Known:
    """How far the ledger is known without a hole: every seq up to `through` has been learned
    (from the bus or the ledger poll). The watermark says no more than this."""

    def __init__(self, through: int) -> None:
        self.through = through
        self._seen: set[int] = set()

    def seen(self, seq: int) -> None:
        if seq <= self.through:
            return
        if len(self._seen) < SEEN_MAX:
            self._seen.add(seq)
        self._close_up()

    def all_through(self, seq: int) -> None:
        """The ledger was read up to `seq`: nothing at or below it is unknown."""
        if seq > self.through:
            self.through = seq
            self._seen = {s for s in self._seen if s > seq}
            self._close_up()

    def _close_up(self) -> None:
        for _ in range(len(self._seen)):  # bounded: each turn takes one out
            if self.through + 1 not in self._seen:
                return
            self.through += 1
            self._seen.discard(self.through)


class ProjectorWorker:
    def __init__(self, store: LedgerStore, display: DisplayWriter, bus: BusConsumer, clock,
                 config: ServiceConfig = ServiceConfig(), bugs=()) -> None:
        # The bus's group exists (BusConsumer joined it) before the ledger is read here, so
        # every commit is in one or the other.
        self.store, self.display, self.bus, self.clock = store, display, bus, clock
        self.service = LimitService(store, clock, config, bugs)
        projector = self.service.projector
        projector.read_account = self._read_account  # a rebuild teaches what it read
        projector.rows = TrackedRows(projector.rows)
        self.polled = self.service.seq  # the ledger is read through here
        self.known = Known(self.service.seq)
        self.token = display.claim()
        self.written: set[str] = set()  # accounts with a row in Redis
        self.gone: set[str] = set()  # rows to delete there
        self._acks: list[bytes] = []
        self.read: queue.Queue = queue.Queue(READ_QUEUE_MAX)  # batches the reader thread read
        self._faults_version = 0
        now_ms = clock.now_ms()
        self._next_poll_ms = self._next_control_ms = self._next_write_ms = now_ms
        self.steps = self.wipes = 0

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; a failing step (Redis or the ledger gone) is logged, at
        most once a second, and tried again."""
        reader = threading.Thread(target=self._read_bus, args=(stop,), name="bus-reader",
                                  daemon=True)
        reader.start()
        logged = _Every(ERROR_LOG_EVERY_S)
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - lag, and try again: all a projector can do
                if logged.due():
                    log(f"the projector step failed, retrying: {_one_line(exc)}")
                stop.wait(RETRY_SLEEP_S)
        reader.join(READ_BLOCK_MS / 1000 + 1)

    def _read_bus(self, stop: threading.Event) -> None:
        logged = _Every(ERROR_LOG_EVERY_S)
        while not stop.is_set():
            try:
                batch = self.bus.read(READ_BLOCK_MS)
            except Exception as exc:  # noqa: BLE001 - the step repairs from the ledger meanwhile
                if logged.due():
                    log(f"reading the bus failed, retrying: {_one_line(exc)}")
                stop.wait(RETRY_SLEEP_S)
                continue
            while batch and not stop.is_set():
                try:
                    self.read.put(batch, timeout=RETRY_SLEEP_S)
                    break
                except queue.Full:
                    continue

    def step(self) -> None:
        service, clock = self.service, self.clock
        now_ms = clock.now_ms()
        wait_ms = min(STEP_WAIT_MAX_MS, service.next_wakeup_ms() - now_ms,
                      self._next_poll_ms - now_ms, self._next_control_ms - now_ms)
        batches = []
        try:
            batches.append(self.read.get(timeout=max(0, wait_ms) / 1000))
            for _ in range(READ_QUEUE_MAX):
                batches.append(self.read.get_nowait())
        except queue.Empty:
            pass
        now_ms = clock.now_ms()
        publish = service.pipe.publish
        if len(self._acks) >= ACKS_MAX:
            # The display has not been written for long (its Redis is down): leave these
            # pending on the stream rather than hold them all; the ledger repairs anyway.
            self._acks.clear()
        for batch in batches:
            for entry_id, entry in batch:
                self._acks.append(entry_id)
                kind = type(entry)
                if kind is Event:
                    self._learn(entry.seq, entry.account_id, now_ms)
                    publish(entry, now_ms)
                elif kind is Faults:
                    self._fault_set(entry)
                elif kind is Reset:
                    service.projector.reset(entry.mode, now_ms)
        if now_ms >= self._next_control_ms:
            self._next_control_ms = now_ms + CONTROL_POLL_MS
            self._fault_set(self.bus.faults())
        if now_ms >= self._next_poll_ms:
            self._next_poll_ms = now_ms + LEDGER_POLL_MS
            self._poll_ledger(now_ms)
        service.advance(now_ms)
        self._write(now_ms)
        self.steps += 1

    # -- what the ledger holds ---------------------------------------------------------------
    def _learn(self, seq: int, account_id: str, now_ms: int) -> None:
        projector = self.service.projector
        if seq > projector.tail.get(account_id, 0):
            projector.note_commit(account_id, seq, now_ms)
        self.known.seen(seq)

    def _poll_ledger(self, now_ms: int) -> None:
        for _ in range(LEDGER_PAGES_PER_POLL):
            page = self.store.page(self.polled, LEDGER_PAGE)
            for entry in page:
                self._learn(entry["seq"], entry["account_id"], now_ms)
            if page:
                self.polled = page[-1]["seq"]
                self.known.all_through(self.polled)
            if len(page) < LEDGER_PAGE:
                return

    def _read_account(self, account_id: str, after_seq: int) -> list[dict]:
        entries = self.store.account_entries(account_id, after_seq)
        now_ms = self.clock.now_ms()
        for entry in entries:  # the rebuild may read past what the bus has told us so far
            self._learn(entry["seq"], account_id, now_ms)
        return entries

    # -- the chaos API's faults ------------------------------------------------------------------
    def _fault_set(self, faults: Faults | None) -> None:
        """The chaos API's active faults, when newer than the ones in force (the stream carries
        each change in order with the events; the key, polled, mends a change the stream lost)."""
        if faults is None or faults.version <= self._faults_version:
            return
        self._faults_version = faults.version
        fault_set = self.service.faults
        fault_set.clear()
        for fault in faults.active:
            fault_set.add(fault)

    # -- the read model in Redis ---------------------------------------------------------------
    def _write(self, now_ms: int) -> None:
        projector = self.service.projector
        rows = projector.rows
        if type(rows) is not TrackedRows:  # a reset (or a seeded bug) put new rows in place
            rows = projector.rows = TrackedRows(rows)
            self.gone |= self.written - rows.keys()
        if not rows.changed and not self.gone and now_ms < self._next_write_ms:
            return
        changed, rows.changed = rows.changed, set()
        rendered: dict[str, bytes] = {}
        for account_id in changed:
            view = projector.display(account_id)
            if view is None:
                self.gone.add(account_id)
            else:
                rendered[account_id] = orjson.dumps(view)
                self.gone.discard(account_id)
        try:
            done = self.display.write(self.token, rendered, sorted(self.gone), self._watermark())
        except BaseException:
            rows.changed |= changed  # written again on the next try
            raise
        self._next_write_ms = now_ms + IDLE_WRITE_MS
        if not done:
            self._wiped(now_ms)
            return
        self.written |= rendered.keys()
        self.written -= self.gone
        self.gone.clear()
        self.bus.ack(self._acks)
        self._acks = []

    def _watermark(self) -> bytes:
        through = self.known.through
        applied = min(max(0, self.service.projector.applied_seq(through)), through)
        return orjson.dumps({"applied_seq": applied, "ledger_seq": through})

    def _wiped(self, now_ms: int) -> None:
        """The display was wiped under us: rebuild it from the ledger, as after a maintenance
        reset (the same hook, so a seeded reset bug shows here too)."""
        self.wipes += 1
        log("the display was wiped (its epoch is gone); rebuilding it from the ledger")
        self.token = self.display.claim()
        self.written.clear()
        self.gone.clear()
        self.service.projector.reset("clear", now_ms)


class _Every:
    """True at most once per `period_s`: one log line a second, not one a try."""

    def __init__(self, period_s: float) -> None:
        self.period_s, self._last_s = period_s, float("-inf")

    def due(self) -> bool:
        now_s = time.monotonic()
        if now_s - self._last_s < self.period_s:
            return False
        self._last_s = now_s
        return True


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
