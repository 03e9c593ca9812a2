"""Group commit: commits queued on the event loop's thread, made durable by one writer thread in
batches (one transaction and one disk flush for every commit that arrived meanwhile), and
answers held until what they may show is durable.

Why: a PostgreSQL commit is durable when COMMIT returns (the WAL is flushed to disk), and a
flush costs 0.4 to 4 ms on these machines. One at a time, the service could answer no more writes
a second than the disk flushes; concurrent requests share a flush instead, and none is answered
before its batch is on disk.

The rule at the edge (app.py): no answer leaves before every commit queued before it was
computed is durable. A write waits for its own commit; a read waits for the commits whose effects
it may show (the in-memory state, the read model), so nothing that is not durable is ever shown.

A batch that fails leaves the service's memory ahead of its ledger, which nothing can mend in
place: `on_failure` is told, and must stop the service (fail-stop); a restart rebuilds it from
the ledger. Every request still waiting gets the error.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Callable

QUEUE_MAX = 100_000  # commits waiting for the writer; each holds a request, so far past any load
CLOSE_WAIT_S = 10.0
GATHER_STEP_S = 0.0005
GATHER_STEPS_MAX = 4  # a batch waits 2 ms at most for more commits to join it


class LedgerUnavailable(RuntimeError):
    """An earlier batch failed: the ledger is behind this process's memory."""


class GroupCommit:
    """`write(batch)` makes a list of queued items durable in one transaction (on a connection
    of its own: it runs on the writer thread), or raises."""

    def __init__(self, write: Callable[[list], None],
                 on_failure: Callable[[BaseException], None]) -> None:
        self._write = write
        self._on_failure = on_failure
        self._cond = threading.Condition()
        self._queue: list = []
        self._queued = 0  # tickets handed out: the nth queued item is ticket n
        self._durable = 0  # every ticket up to this one is on disk (written by the writer thread)
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()  # loop thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: BaseException | None = None
        self._closing = False
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name="ledger-group-commit",
                                        daemon=True)
        self._thread.start()

    # -- the event loop's side -----------------------------------------------------------------
    def queue(self, item) -> None:
        with self._cond:
            if self._failed is not None:
                raise LedgerUnavailable(f"the ledger write failed earlier ({self._failed}); "
                                        f"the service must restart")
            if len(self._queue) >= QUEUE_MAX:
                raise LedgerUnavailable(f"{QUEUE_MAX} commits are waiting for the ledger")
            self._queue.append(item)
            self._queued += 1
            self._cond.notify()

    def pending(self) -> asyncio.Future | None:
        """None when everything queued so far is durable; else a future that is done when it
        is. Call on the event loop's thread."""
        ticket = self._queued
        if self._loop is None:
            # Set before `_durable` is read: the writer reads it after writing `_durable`, so
            # one of the two sees the other and no wake-up is lost.
            self._loop = asyncio.get_running_loop()
        if self._failed is not None:
            raise LedgerUnavailable(f"the ledger write failed ({self._failed})")
        if ticket <= self._durable:
            return None
        future = self._loop.create_future()
        self._waiters.append((ticket, future))  # tickets only grow: the deque stays in order
        return future

    def _release(self, durable: int) -> None:
        waiters = self._waiters
        for _ in range(len(waiters)):
            if waiters[0][0] > durable:
                break
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _fail_waiters(self, exc: BaseException) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(LedgerUnavailable(f"the ledger write failed ({exc})"))
        self._waiters.clear()

    def close(self) -> None:
        """Make what is queued durable, then stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(CLOSE_WAIT_S)

    # -- the writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                self._gather()
                batch, self._queue = self._queue, []
                last = self._queued
            try:
                self._write(batch)
            except BaseException as exc:  # noqa: BLE001 - memory is now ahead of the ledger
                with self._cond:
                    self._failed = exc
                self._tell_loop(self._fail_waiters, exc)
                self._on_failure(exc)
                return
            self.batches += 1
            self._durable = last
            self._tell_loop(self._release, last)

    def _gather(self) -> None:
        """Wait a little for more while more keep coming (under the lock): the writes answered
        by the last batch are on their way back, and one flush for them and the ones queued
        beats two. A lone client waits GATHER_STEP_S at most."""
        for _ in range(GATHER_STEPS_MAX):
            count = len(self._queue)
            if count >= QUEUE_MAX or self._closing:
                return
            self._cond.wait(GATHER_STEP_S)
            if len(self._queue) == count:
                return

    def _tell_loop(self, callback, arg) -> None:
        loop = self._loop
        if loop is None:
            return  # nobody waits yet: `pending` reads `_durable` itself
        try:
            loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:
            pass  # the loop is closed: the server is gone, and nobody waits any more
