"""Ledger storage: a small interface, an in-memory store and a SQLite store.

The core talks only to `LedgerStore`, so a PostgreSQL store is one more class here (same five
methods, one transaction per `commit`) and the core does not change.
"""

from __future__ import annotations

import marshal
import sqlite3
from typing import Iterator, Protocol

import orjson

from ..contract import ENTRY_COLUMNS
from ..errors import UsageError



class LedgerStore(Protocol):
    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        """Append `entries` and remember the answer to `request_id`, atomically: either all of
        it is durable when this returns, or none of it is (and it raises)."""

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        """The remembered answer to an earlier request with this id."""

    def page(self, after_seq: int, limit: int) -> list[dict]:
        """Entries with seq > after_seq, ascending, at most `limit`."""

    def account_entries(self, account_id: str, after_seq: int = 0) -> list[dict]:
        """One account's entries with seq > after_seq, ascending."""

    def entries(self) -> Iterator[dict]:
        """Every entry, ascending seq (used once, to rebuild state at start)."""

    def close(self) -> None: ...


class Answers:
    """Answers remembered by request_id, in memory, each body kept as `marshal` bytes.

    Every write adds one and only a retry reads one back, so they are stored the cheap way: a
    dict of str -> int and one of str -> bytes hold nothing the garbage collector tracks, where
    (status, body) tuples of dicts made the collections walk all of them (0.50 s of a 2.10 s
    run of 200k writes; 0.20 s without), and the bytes take less than half the memory.
    marshal, not JSON: these bytes never leave the process, and of the codecs tried it was the
    cheapest to keep (orjson's output buffers cost several times more by the hundred thousand).
    """

    __slots__ = ("_status", "_body")

    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._body: dict[str, bytes] = {}

    def remember(self, request_id: str, status: int, body: dict) -> None:
        self._status[request_id] = status
        self._body[request_id] = marshal.dumps(body)

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        status = self._status.get(request_id)
        return None if status is None else (status, marshal.loads(self._body[request_id]))

    def __len__(self) -> int:
        return len(self._status)


class MemoryLedger:
    """Plain Python lists and dicts: the fastest store, for simulation and benchmarks."""

    def __init__(self) -> None:
        self._entries: list[dict] = []
        self._by_account: dict[str, list[dict]] = {}
        self._answers = Answers()

    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        # Check the whole batch before touching anything: all of it lands, or none of it.
        all_entries, by_account = self._entries, self._by_account
        last = all_entries[-1]["seq"] if all_entries else 0
        for entry in entries:
            if entry["seq"] <= last:
                raise ValueError(f"seq {entry['seq']} is not above {last}")
            last = entry["seq"]
        for entry in entries:
            all_entries.append(entry)
            account = by_account.get(entry["account_id"])
            if account is None:  # not setdefault: that builds a list on every commit
                account = by_account[entry["account_id"]] = []
            account.append(entry)
        self._answers.remember(request_id, status, body)

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        return self._answers.recall(request_id)

    def page(self, after_seq: int, limit: int) -> list[dict]:
        lo, hi = 0, len(self._entries)
        while lo < hi:  # first entry with seq > after_seq
            mid = (lo + hi) // 2
            if self._entries[mid]["seq"] <= after_seq:
                lo = mid + 1
            else:
                hi = mid
        return [dict(e) for e in self._entries[lo:lo + limit]]

    def account_entries(self, account_id: str, after_seq: int = 0) -> list[dict]:
        return [e for e in self._by_account.get(account_id, ()) if e["seq"] > after_seq]

    def entries(self) -> Iterator[dict]:
        return iter(list(self._entries))

    def close(self) -> None:
        pass


class SQLiteLedger:
    """A SQLite file (or `:memory:`). WAL with synchronous=NORMAL: a commit is in the WAL before
    the write is acknowledged, so it survives a crash of the service (not of the machine)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL, request_id TEXT NOT NULL,
        account_id TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, product TEXT,
        credit_line INTEGER, amount INTEGER, status TEXT, reason TEXT);
    CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account_id, seq);
    CREATE TABLE IF NOT EXISTS answers (
        request_id TEXT NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL);
    """
    # No index on answers.request_id nor on entries.entry_id: answers are served from memory and
    # read from disk once at start (an append-only log, the last answer wins), and entry ids are
    # derived from the seq primary key. Each index would cost a B-tree insert on every write.

    def __init__(self, path: str) -> None:
        try:
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.executescript(self._SCHEMA)
            self._db.commit()
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the SQLite ledger at {path!r}: {exc}") from None
        # Answers are read on every write (idempotency) and never change once written, so they
        # are served from memory; the table is the durable copy, read once at start.
        self._answers = Answers()
        for rid, status, body in self._db.execute(
                "SELECT request_id, status, body FROM answers ORDER BY rowid"):
            self._answers.remember(rid, status, orjson.loads(body))
        self._insert = (f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})")
        # What makes a commit durable, at the end of each: a hook, so the seeded bug
        # `ack_before_durable` (bugs.py) can leave it for later.
        self.end_transaction = self._db.commit

    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        db = self._db
        # The sqlite3 module opens the transaction at the first INSERT; one commit() ends it.
        try:
            if entries:
                db.executemany(self._insert, [tuple(e.get(c) for c in ENTRY_COLUMNS)
                                              for e in entries])
            db.execute("INSERT INTO answers VALUES (?, ?, ?)",
                       (request_id, status, orjson.dumps(body)))
            self.end_transaction()
        except BaseException:
            db.rollback()
            raise
        self._answers.remember(request_id, status, body)

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        return self._answers.recall(request_id)

    def page(self, after_seq: int, limit: int) -> list[dict]:
        rows = self._db.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit))
        return [_entry(row) for row in rows]

    def account_entries(self, account_id: str, after_seq: int = 0) -> list[dict]:
        rows = self._db.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE account_id = ? AND seq > ? "
            f"ORDER BY seq", (account_id, after_seq))
        return [_entry(row) for row in rows]

    def entries(self) -> Iterator[dict]:
        rows = self._db.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries ORDER BY seq")
        return (_entry(row) for row in rows)

    def close(self) -> None:
        self._db.close()


def _entry(row: tuple) -> dict:
    return {c: v for c, v in zip(ENTRY_COLUMNS, row) if v is not None}


def open_ledger(url: str) -> LedgerStore:
    """`memory://`, `sqlite://` (in memory), `sqlite:///relative/or/absolute/path`."""
    if url == "memory://":
        return MemoryLedger()
    if url in ("sqlite://", "sqlite:///:memory:"):
        return SQLiteLedger(":memory:")
    if url.startswith("sqlite:///"):
        return SQLiteLedger(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresLedger  # lazily: psycopg is optional
        return PostgresLedger(url)
    raise UsageError(f"unknown ledger URL {url!r}: use memory://, sqlite://, sqlite:///PATH "
                     f"or postgresql://...")
