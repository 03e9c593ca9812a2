"""Ledger storage: a small interface, an in-memory store and a SQLite store.

The core talks only to `LedgerStore`, so a PostgreSQL store is one more class here (same five
methods, one transaction per `commit`) and the core does not change.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator, Protocol

import orjson

from ..errors import UsageError

ENTRY_COLUMNS = ("seq", "entry_id", "request_id", "account_id", "type", "at",
                 "product", "credit_line", "amount", "status", "reason")


class LedgerStore(Protocol):
    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        """Append `entries` and remember the answer to `request_id`, atomically: either all of
        it is durable when this returns, or none of it is (and it raises)."""

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        """The remembered answer to an earlier request with this id."""

    def page(self, after_seq: int, limit: int) -> list[dict]:
        """Entries with seq > after_seq, ascending, at most `limit`."""

    def account_entries(self, account_id: str) -> list[dict]:
        """One account's entries, ascending seq."""

    def entries(self) -> Iterator[dict]:
        """Every entry, ascending seq (used once, to rebuild state at start)."""

    def close(self) -> None: ...


class MemoryLedger:
    """Plain Python lists and dicts: the fastest store, for simulation and benchmarks."""

    def __init__(self) -> None:
        self._entries: list[dict] = []
        self._by_account: dict[str, list[dict]] = {}
        self._answers: dict[str, tuple[int, dict]] = {}

    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        for entry in entries:
            assert not self._entries or entry["seq"] > self._entries[-1]["seq"]
            self._entries.append(entry)
            self._by_account.setdefault(entry["account_id"], []).append(entry)
        self._answers[request_id] = (status, body)

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        return self._answers.get(request_id)

    def page(self, after_seq: int, limit: int) -> list[dict]:
        lo, hi = 0, len(self._entries)
        while lo < hi:  # first entry with seq > after_seq
            mid = (lo + hi) // 2
            if self._entries[mid]["seq"] <= after_seq:
                lo = mid + 1
            else:
                hi = mid
        return [dict(e) for e in self._entries[lo:lo + limit]]

    def account_entries(self, account_id: str) -> list[dict]:
        return list(self._by_account.get(account_id, ()))

    def entries(self) -> Iterator[dict]:
        return iter(list(self._entries))

    def close(self) -> None:
        pass


class SQLiteLedger:
    """A SQLite file (or `:memory:`). WAL with synchronous=NORMAL: a commit is in the WAL before
    the write is acknowledged, so it survives a crash of the service (not of the machine)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL,
        account_id TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, product TEXT,
        credit_line INTEGER, amount INTEGER, status TEXT, reason TEXT);
    CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account_id, seq);
    CREATE TABLE IF NOT EXISTS answers (
        request_id TEXT PRIMARY KEY, status INTEGER NOT NULL, body BLOB NOT NULL);
    """

    def __init__(self, path: str) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.executescript(self._SCHEMA)
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the SQLite ledger at {path!r}: {exc}") from None
        self._insert = (f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})")

    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._insert, [tuple(e.get(c) for c in ENTRY_COLUMNS) for e in entries])
            # OR REPLACE: the retry_duplicates_draw bug answers one request id twice.
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                       (request_id, status, orjson.dumps(body)))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        row = self._db.execute("SELECT status, body FROM answers WHERE request_id = ?",
                               (request_id,)).fetchone()
        return (row[0], orjson.loads(row[1])) if row else None

    def page(self, after_seq: int, limit: int) -> list[dict]:
        rows = self._db.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit))
        return [_entry(row) for row in rows]

    def account_entries(self, account_id: str) -> list[dict]:
        rows = self._db.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries WHERE account_id = ? ORDER BY seq",
            (account_id,))
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
    raise UsageError(f"unknown ledger URL {url!r}: use memory://, sqlite:// or sqlite:///PATH")
