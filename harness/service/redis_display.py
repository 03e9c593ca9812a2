"""The read model in Redis: one key per account holding its display as the projector rendered
it, a watermark (`applied_seq`, `ledger_seq`) for `GET /v1/sync`, and an epoch that tells the
projector its writes still land in the display it built.

The projector process writes (`DisplayWriter`); the API reads (`DisplayReader`). A maintenance
wipe (`FLUSHDB` of the display's database, or anything that deletes the epoch) is seen by the
projector at its next write: every write is one Lua script that first checks the epoch, so no
write lands in a wiped display unnoticed, and the projector rebuilds from the ledger under a new
epoch. Meanwhile the API answers what is there, as the contract asks of a display being rebuilt:
an account whose key is gone is 503 `display_unavailable`, one already rewritten shows its
honest `as_of_seq`, and the watermark is gone (or says 0) until the rebuild has caught up.
"""

from __future__ import annotations

import uuid

import orjson

from .redis_link import RedisLink

ROW = "display:"
EPOCH = "display-epoch"
SYNC = "sync"
KEYS_PER_WRITE = 1000  # rows per script call: a rebuild of many accounts is cut in pieces
NEVER_MS = 2**62

# KEYS: the epoch, the watermark, the rows to set, then the rows to delete.
# ARGV: the epoch expected, the watermark (empty: leave it), how many rows to set, their values.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('SET', KEYS[2 + i], ARGV[3 + i]) end
for i = 3 + n, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""


class DisplayWriter:
    """The projector's end. Redis errors propagate: the projector retries, lagging."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._script = link.client.register_script(_WRITE)
        self._epoch, self._sync = link.key(EPOCH), link.key(SYNC)

    def claim(self) -> str:
        """A new epoch: the display is this projector's to (re)build from now on."""
        token = uuid.uuid4().hex
        self.link.client.set(self._epoch, token)
        return token

    def write(self, token: str, rows: dict[str, bytes], gone: list[str], sync: bytes) -> bool:
        """Set `rows`, delete `gone` and set the watermark, unless the epoch is no longer
        `token` (the display was wiped): then False, and nothing more is written."""
        ops = [(account_id, value) for account_id, value in rows.items()]
        ops += [(account_id, None) for account_id in gone]
        chunks = [ops[i:i + KEYS_PER_WRITE] for i in range(0, len(ops), KEYS_PER_WRITE)] or [[]]
        for number, chunk in enumerate(chunks):
            sets = [(a, v) for a, v in chunk if v is not None]
            deletes = [a for a, v in chunk if v is None]
            keys = [self._epoch, self._sync, *(self.row_key(a) for a, _ in sets),
                    *(self.row_key(a) for a in deletes)]
            # The watermark goes with the last piece: it speaks for every row before it.
            last = number == len(chunks) - 1
            args = [token, sync if last else b"", len(sets), *(v for _, v in sets)]
            if not self._script(keys=keys, args=args):
                return False
        return True

    def row_key(self, account_id: str) -> str:
        return self.link.prefix + ROW + account_id


class DisplayReader:
    """The API's end, in the place of the in-process projector (core.py asks a projector for
    `display`, `applied_seq` and `reset`, and tells it `note_commit`): reads answer from Redis;
    what the core tells a projector, the projector process learns from the bus and the ledger;
    a reset goes to it on the bus (`bus.reset`). Redis down: every display is 503 and nothing
    is applied."""

    def __init__(self, link: RedisLink, bus) -> None:
        self.link = link
        self.bus = bus
        self._sync = link.key(SYNC)
        self._row = link.prefix + ROW

    def display(self, account_id: str) -> dict | None:
        key = self._row + account_id
        raw = self.link.call(lambda client: client.get(key), None)
        return None if raw is None else orjson.loads(raw)

    def applied_seq(self, ledger_seq: int) -> int:
        raw = self.link.call(lambda client: client.get(self._sync), None)
        if raw is None:
            return 0
        return min(int(orjson.loads(raw)["applied_seq"]), ledger_seq)

    def reset(self, mode: str, now_ms: int) -> None:
        self.bus.reset(mode)

    # What the core tells an in-process projector: nothing for this one to do.
    def note_commit(self, account_id: str, seq: int, now_ms: int) -> None:
        pass

    def note_recovered(self, account_id: str, last_seq: int) -> None:
        pass

    def deliver(self, event, now_ms: int) -> None:
        raise AssertionError("the API delivers no events: the projector process does")

    def tick(self, now_ms: int, late_ms: int, paused: bool) -> None:
        pass

    def next_wakeup_ms(self) -> int:
        return NEVER_MS
