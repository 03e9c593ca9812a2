"""The event bus between the API and the projector process: a Redis stream read by a consumer
group.

Each committed entry becomes one stream entry carrying the same `Event` the in-process pipe
carries (seq, account, the account's previous seq, type, value), so the projector applies it by
the very same rules. The API publishes after the commit, in batches from its background task;
the projector reads with XREADGROUP and acknowledges once what it read is in the display, so a
projector killed mid-way is given its unacknowledged events again. The bus is not the source of
truth: an event lost on the way (the API killed between its commit and its publish, Redis down,
the stream trimmed or flushed) is found by the projector's poll of the ledger and repaired there.

The chaos API's faults and maintenance resets travel on the same stream, in order with the
events: a fault acknowledged before a write is in force when that write's event reaches the
projector, as in the one-process service. The active faults are also kept under a key, with a
version (the API's clock at the change), for a projector that starts, or missed a change.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, NamedTuple

import orjson

from .chaos import FaultSet
from .events import Event
from .redis_link import RedisLink, log

STREAM = "events"
GROUP = "projector"
CONSUMER = "projector-1"  # one projector; a restarted one takes over its own pending entries
FAULTS = "faults"
STREAM_MAXLEN = 100_000  # approximate trim: the ledger poll repairs what a trim took
BUFFER_MAX = 100_000  # entries waiting on the API side while Redis does not answer
PUBLISH_BATCH_MAX = 5_000
SEND_EVERY_S = 0.002  # the sender's longest sleep; the API's background task wakes it sooner
SEND_ROUNDS_MAX = 100  # batches sent per wake-up, at most
SENDER_STOP_S = 2.0
READ_COUNT = 1_000
RESET_MODES = ("clear", "snapshot")


class Faults(NamedTuple):
    """The chaos API's active faults as of `version` (newer versions win)."""
    version: int
    active: list[dict]


class Reset(NamedTuple):
    """A maintenance reset the chaos API was asked for."""
    mode: str


Entry = Event | Faults | Reset


def encode(entry: Entry) -> dict[str, bytes]:
    if type(entry) is Faults:
        return {"f": orjson.dumps({"version": entry.version, "active": entry.active})}
    if type(entry) is Reset:
        return {"r": entry.mode.encode()}
    return {"e": orjson.dumps(tuple(entry))}


def decode(fields: dict | None) -> Entry | None:
    """The entry in a stream entry's fields, or None when it is none of ours (or trimmed)."""
    fields = fields or {}
    try:
        if b"e" in fields:
            seq, account_id, prev_seq, kind, value = orjson.loads(fields[b"e"])
            if type(seq) is not int or not isinstance(account_id, str) or \
                    not isinstance(kind, str) or not (prev_seq is None or type(prev_seq) is int) \
                    or type(value) not in (int, str):
                return None
            return Event(seq, account_id, prev_seq, kind, value)
        if b"f" in fields:
            return faults_of(fields[b"f"])
        if b"r" in fields:
            mode = fields[b"r"].decode()
            return Reset(mode) if mode in RESET_MODES else None
    except (orjson.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError):
        return None
    return None


def faults_of(raw: bytes | None) -> Faults | None:
    if raw is None:
        return None
    try:
        body = orjson.loads(raw)
        version, active = body["version"], body["active"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if type(version) is not int or not isinstance(active, list) or \
            not all(isinstance(fault, dict) for fault in active):
        return None
    return Faults(version, active)


class BusPublisher:
    """The API's end, in the place of the in-process event pipe: `publish` (on the event loop,
    from `_commit`) only appends to a buffer; a sender thread of its own sends the buffer, so
    the loop never waits on Redis for an event. `due` (the API's background task calls it every
    few ms, as it would deliver due events) says a change of the chaos API's faults and wakes
    the sender.

    An event leaves only once its entry is durable (`durable_seq`, None: every committed entry
    is): the projector outlives the API, and an entry lost with a killed API, its seq then
    reused by the next write, must never have reached the display."""

    def __init__(self, link: RedisLink, faults: FaultSet,
                 durable_seq: Callable[[], int | None] = lambda: None) -> None:
        self.link = link
        self.faults = faults
        self.durable_seq = durable_seq
        # Appended to by the loop only, taken from by the sender only: a deque needs no lock.
        self.buffer: deque[Entry] = deque()
        self.published = self.dropped = 0
        self._stream = link.key(STREAM)
        self._faults_key = link.key(FAULTS)
        self._faults_queued: dict | None = None  # None: say the faults at the first chance
        self._version = 0
        self._unsent: list[Entry] = []  # taken from the buffer, not yet sent (sender only)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="bus-publisher",
                                        daemon=True)
        self._sender.start()

    def __len__(self) -> int:
        return len(self.buffer) + len(self._unsent)

    def publish(self, event: Event, now_ms: int) -> None:
        if self.faults.active != self._faults_queued:  # a fault came or went since the last
            self._queue_faults()
        self._append(event)

    def reset(self, mode: str) -> None:
        """A maintenance reset, in order with the events."""
        assert mode in RESET_MODES, mode
        self._append(Reset(mode))

    def due(self, now_ms: int) -> list:
        if self.faults.active != self._faults_queued:
            self._queue_faults()
        if self.buffer:
            self._wake.set()
        return []  # nothing to deliver here: the projector process delivers

    def next_due_ms(self) -> int | None:
        return None  # the sender sends; the loop has nothing to wake up for

    def close(self) -> None:
        """Send what is buffered (bounded by the link's timeout), then stop the sender."""
        self._stop.set()
        self._wake.set()
        self._sender.join(SENDER_STOP_S)

    def _queue_faults(self) -> None:
        self._faults_queued = {fault_id: dict(f) for fault_id, f in self.faults.active.items()}
        # The API's clock in ns, always above the last: a restarted API's changes win too.
        self._version = max(self._version + 1, time.time_ns())
        self._append(Faults(self._version, list(self._faults_queued.values())))

    def _append(self, entry: Entry) -> None:
        if len(self.buffer) >= BUFFER_MAX:
            self.dropped += 1  # Redis is away: the ledger poll repairs what an event carried
            return
        self.buffer.append(entry)

    # -- the sender thread ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            self._wake.wait(SEND_EVERY_S)
            self._wake.clear()
            stopping = self._stop.is_set()
            for _ in range(SEND_ROUNDS_MAX):
                if not self._take() or not self.link.call(self._send, False):
                    break
            if stopping:
                return

    def _take(self) -> bool:
        """Move what may leave now from the buffer to `_unsent`; whether there is any."""
        durable = self.durable_seq()
        buffer, unsent = self.buffer, self._unsent
        while buffer and len(unsent) < PUBLISH_BATCH_MAX:
            entry = buffer[0]
            if durable is not None and type(entry) is Event and entry.seq > durable:
                break  # it, and what follows it, wait for its commit
            unsent.append(buffer.popleft())
        return bool(unsent)

    def _send(self, client) -> bool:
        pipe = client.pipeline(transaction=False)
        for entry in self._unsent:
            fields = encode(entry)
            pipe.xadd(self._stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
            if "f" in fields:
                pipe.set(self._faults_key, fields["f"])
        pipe.execute()
        self.published += len(self._unsent)
        self._unsent = []  # sent: only now, so a failed send is sent again
        return True


class BusConsumer:
    """The projector's end. Redis errors propagate: the projector retries, lagging."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._stream = link.key(STREAM)
        self._faults_key = link.key(FAULTS)
        self._own_pending = True  # first, what this consumer read before a restart
        self.join("$")

    def join(self, start: str) -> None:
        """The group, created where absent: at `$` when the projector starts (it reads the
        ledger next, which holds everything before), at `0` when the stream was flushed."""
        import redis

        try:
            self.link.client.xgroup_create(self._stream, GROUP, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int) -> list[tuple[bytes, Entry | None]]:
        """(entry id, what it carries or None) for entries not yet read, waiting at most
        `block_ms` for one (0: not at all)."""
        import redis

        start = "0" if self._own_pending else ">"
        try:
            reply = self.link.client.xreadgroup(
                GROUP, CONSUMER, {self._stream: start}, count=READ_COUNT,
                block=None if start == "0" or block_ms <= 0 else block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log("the bus stream or its group is gone (flushed?); joining again: the ledger "
                "poll repairs what was lost")
            self.join("0")
            return []
        entries = reply[0][1] if reply else []
        if start == "0" and not entries:
            self._own_pending = False
        # A pending entry the stream has trimmed since comes back without its fields.
        return [(entry_id, decode(fields)) for entry_id, fields in entries]

    def ack(self, entry_ids: list[bytes]) -> None:
        if entry_ids:
            self.link.client.xack(self._stream, GROUP, *entry_ids)

    def faults(self) -> Faults | None:
        """The active faults as the API last said them, for a projector that starts or missed
        a change on the stream."""
        return faults_of(self.link.client.get(self._faults_key))
